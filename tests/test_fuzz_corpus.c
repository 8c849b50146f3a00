/*
 * test_fuzz_corpus.c - replays the committed fuzz corpora through the
 * libFuzzer targets, so that make test, asan, tsan and valgrind run every
 * seed and every regression input that make fuzz found.
 *
 * The targets' sources are included here with their entry points renamed;
 * their oracle failures become cmocka failures.  Inputs are read from
 * tests/fuzz/corpus/NAME/ (the suite runs from the top of the tree), each
 * into a buffer of exactly its size, as libFuzzer gives them.
 */
#define _GNU_SOURCE
#include "support.h"

#define FUZZ_FAIL(what)                                                      \
    fail_msg("fuzz oracle failed: %s (%s:%d)", what, __FILE__, __LINE__)

#define LLVMFuzzerTestOneInput fuzz_addr_one
#include "fuzz/fuzz_addr.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_reader_one
#include "fuzz/fuzz_reader.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_datagram_one
#include "fuzz/fuzz_datagram.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_proxy_one
#include "fuzz/fuzz_proxy.c"
#undef LLVMFuzzerTestOneInput

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#define CORPUS_DIR "tests/fuzz/corpus/"

/* Runs every file of CORPUS_DIR/name through one(); returns the count. */
static int replay(const char *name, int (*one)(const uint8_t *, size_t))
{
    char dir[256], path[512];
    struct dirent *e;
    int n = 0;

    snprintf(dir, sizeof(dir), CORPUS_DIR "%s", name);
    DIR *d = opendir(dir);
    if (d == NULL)
        fail_msg("no corpus at %s (run the suite from the top of the tree)",
                 dir);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        assert_int_equal(fseek(f, 0, SEEK_END), 0);
        long size = ftell(f);
        assert_true(size >= 0);
        rewind(f);
        uint8_t *data = malloc(size > 0 ? (size_t)size : 1);
        assert_non_null(data);
        assert_int_equal(fread(data, 1, (size_t)size, f), (size_t)size);
        fclose(f);
        one(data, (size_t)size);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

static void test_address_corpus_replays_clean(void **state)
{
    (void)state;
    int fds = count_open_fds();
    int n = replay("addr", fuzz_addr_one);
    print_message("    %d address inputs\n", n);
    assert_true(n > 0);
    assert_int_equal(count_open_fds(), fds);
}

static void test_reader_corpus_replays_clean(void **state)
{
    (void)state;
    int fds = count_open_fds();
    int n = replay("reader", fuzz_reader_one);
    fuzz_reader_cleanup();
    print_message("    %d reader inputs\n", n);
    assert_true(n > 0);
    assert_int_equal(count_open_fds(), fds);
}

static void test_datagram_corpus_replays_clean(void **state)
{
    (void)state;
    int fds = count_open_fds();
    int n = replay("datagram", fuzz_datagram_one);
    fuzz_datagram_cleanup();
    print_message("    %d datagram inputs\n", n);
    assert_true(n > 0);
    assert_int_equal(count_open_fds(), fds);
}

static void test_proxy_corpus_replays_clean(void **state)
{
    (void)state;
    int fds = count_open_fds();
    int n = replay("proxy", fuzz_proxy_one);
    print_message("    %d PROXY protocol inputs\n", n);
    assert_true(n > 0);
    assert_int_equal(count_open_fds(), fds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_address_corpus_replays_clean),
        cmocka_unit_test(test_reader_corpus_replays_clean),
        cmocka_unit_test(test_datagram_corpus_replays_clean),
        cmocka_unit_test(test_proxy_corpus_replays_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
