/*
 * tests/cross/cmocka.h - the few cmocka calls test_fiber.c makes, for
 * binaries cross-built for another architecture (make test-aarch64), where
 * no libcmocka for that architecture is installed.  It prints cmocka's
 * summary lines, so tests/run_tests.sh counts the results the same way.
 * A failed assertion ends the test at once (longjmp, as cmocka does).
 */
#ifndef SKS_CROSS_CMOCKA_H
#define SKS_CROSS_CMOCKA_H

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>

struct CMUnitTest {
    const char *name;
    void (*test_func)(void **state);
};

#define cmocka_unit_test(f) { #f, f }

static jmp_buf cross_test_end;
static int cross_test_skipped;

#define cross_check(cond, text)                                              \
    do {                                                                     \
        if (!(cond)) {                                                       \
            printf("%s:%d: error: %s\n", __FILE__, __LINE__, text);          \
            longjmp(cross_test_end, 1);                                      \
        }                                                                    \
    } while (0)

#define assert_true(c) cross_check((c), #c " is false")
#define assert_false(c) cross_check(!(c), #c " is true")
#define assert_int_equal(a, b)                                               \
    cross_check((intmax_t)(a) == (intmax_t)(b), #a " != " #b)
#define assert_int_not_equal(a, b)                                           \
    cross_check((intmax_t)(a) != (intmax_t)(b), #a " == " #b)
#define assert_ptr_equal(a, b)                                               \
    cross_check((const void *)(a) == (const void *)(b), #a " != " #b)
#define assert_non_null(p) cross_check((p) != NULL, #p " is NULL")
#define skip()                                                               \
    do {                                                                     \
        cross_test_skipped = 1;                                              \
        longjmp(cross_test_end, 1);                                          \
    } while (0)

static int cross_run(const char *group, const struct CMUnitTest *t, size_t n)
{
    /* volatile: they change between setjmp and longjmp. */
    volatile size_t passed = 0, failed = 0, skipped = 0;

    printf("[==========] %s: Running %zu test(s).\n", group, n);
    for (size_t i = 0; i < n; i++) {
        printf("[ RUN      ] %s\n", t[i].name);
        fflush(stdout);
        cross_test_skipped = 0;
        if (setjmp(cross_test_end) == 0) {
            t[i].test_func(NULL);
            printf("[       OK ] %s\n", t[i].name);
            passed++;
        } else if (cross_test_skipped) {
            printf("[  SKIPPED ] %s\n", t[i].name);
            skipped++;
        } else {
            printf("[  FAILED  ] %s\n", t[i].name);
            failed++;
        }
    }
    printf("[==========] %s: %zu test(s) run.\n", group, n);
    printf("[  PASSED  ] %zu test(s).\n", passed);
    if (skipped)
        printf("[  SKIPPED ] %zu test(s).\n", skipped);
    if (failed)
        printf("[  FAILED  ] %zu test(s).\n", failed);
    return failed ? 1 : 0;
}

#define cmocka_run_group_tests(tests, setup, teardown)                       \
    ((void)(setup), (void)(teardown),                                        \
     cross_run(#tests, tests, sizeof(tests) / sizeof((tests)[0])))

#endif
