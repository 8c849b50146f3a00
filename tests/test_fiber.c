/*
 * test_fiber.c - the fiber context switch and stacks: switching back and
 * forth, many fibers, deep call chains, callee-saved registers and the FP
 * control state preserved across a switch, and a stack overflow that dies
 * on the guard page.
 *
 * The same file is built three ways: against the library (the hand-written
 * switch of this machine), with the portable fallback forced
 * (test_fiber_portable), and cross-built for aarch64 and run under
 * qemu-user (tests/test_fiber_aarch64.sh, with tests/cross/cmocka.h).
 * Assertions run in the thread's own context only: a failing cmocka
 * assertion longjmps to the runner, which must not happen from a fiber.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../src/internal.h"

#include <errno.h>
#include <fenv.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static sks__fiber main_f;
static struct sks__stack_cache cache;

static void start_cache(size_t size, unsigned max_free)
{
    sks__stack_cache_init(&cache, size, max_free);
    sks__fiber_thread(&main_f);
}

static void end_cache(void)
{
    assert_int_equal(cache.live, 0);
    sks__stack_cache_fini(&cache);
}

/* ------------------------------------------------------------------------ */
/* Back and forth                                                            */

static int trace[16];
static int ntrace;

static void ping(void *arg)
{
    sks__fiber *self = arg;

    for (int i = 0; i < 3; i++) {
        trace[ntrace++] = 100 + i;
        sks__fiber_switch(self, &main_f);
    }
    trace[ntrace++] = 199;
}

static void test_switch_back_and_forth_then_return_to_resumer(void **state)
{
    (void)state;
    sks__fiber f;
    start_cache(0, 4);
    ntrace = 0;
    assert_int_equal(sks__fiber_make(&f, &cache, ping, &f), 0);
    for (int i = 0; i < 4; i++) {
        assert_false(f.done);
        trace[ntrace++] = i;
        sks__fiber_switch(&main_f, &f);
    }
    /* The fiber's fn returned: it switched back here on its own. */
    assert_true(f.done);
    int want[] = { 0, 100, 1, 101, 2, 102, 3, 199 };
    assert_int_equal(ntrace, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(trace[i], want[i]);
    sks__fiber_release(&f, &cache);
    end_cache();
}

/* ------------------------------------------------------------------------ */
/* Many fibers, round robin                                                  */

#define NFIBERS 1000
#define ROUNDS 10

struct worker {
    sks__fiber f;
    int id, rounds;
    unsigned long sum;   /* of values kept in locals across switches */
};

static int order_ok;
static int last_id;

static void work(void *arg)
{
    struct worker *w = arg;
    unsigned long local = (unsigned long)w->id * 7919u;

    for (int r = 0; r < ROUNDS; r++) {
        /* Round robin: each fiber runs right after the one before it. */
        if (last_id != (w->id + NFIBERS - 1) % NFIBERS)
            order_ok = 0;
        last_id = w->id;
        local += (unsigned long)r;
        w->rounds++;
        sks__fiber_switch(&w->f, &main_f);
    }
    w->sum = local;
}

static void test_many_fibers_round_robin_reuse_cached_stacks(void **state)
{
    (void)state;
    static struct worker w[NFIBERS];
    start_cache(64 * 1024, 64);
    for (int i = 0; i < NFIBERS; i++) {
        w[i] = (struct worker){ .id = i };
        assert_int_equal(sks__fiber_make(&w[i].f, &cache, work, &w[i]), 0);
    }
    assert_int_equal(cache.live, NFIBERS);
    order_ok = 1;
    last_id = NFIBERS - 1;
    int running = NFIBERS;
    while (running > 0) {
        for (int i = 0; i < NFIBERS; i++) {
            if (w[i].f.stack == NULL)
                continue;
            sks__fiber_switch(&main_f, &w[i].f);
            if (w[i].f.done) {
                sks__fiber_release(&w[i].f, &cache);
                running--;
            }
        }
    }
    assert_true(order_ok);
    for (int i = 0; i < NFIBERS; i++) {
        assert_int_equal(w[i].rounds, ROUNDS);
        assert_int_equal(w[i].sum,
                         (unsigned long)i * 7919u + ROUNDS * (ROUNDS - 1) / 2);
    }
    /* At most max_free stacks stay mapped; a new fiber takes one of them. */
    assert_int_equal(cache.nfree, 64);
    struct sks__stack *cached = cache.free;
    assert_int_equal(sks__fiber_make(&w[0].f, &cache, work, &w[0]), 0);
    assert_ptr_equal(w[0].f.stack, cached);
    sks__fiber_release(&w[0].f, &cache);
    end_cache();
}

/* ------------------------------------------------------------------------ */
/* Deep call chains                                                          */

#define DEPTH 3000

static sks__fiber deep_f;
static int deep_bad;

/* Each level keeps a frame of its own and switches out every 100 levels;
 * on the way back up every frame must still hold what it wrote. */
static unsigned deep(unsigned n)
{
    volatile unsigned char frame[64];

    for (unsigned i = 0; i < sizeof frame; i++)
        frame[i] = (unsigned char)(n + i);
    unsigned below = 0;
    if (n < DEPTH) {
        if (n % 100 == 0)
            sks__fiber_switch(&deep_f, &main_f);
        below = deep(n + 1);
    }
    for (unsigned i = 0; i < sizeof frame; i++)
        if (frame[i] != (unsigned char)(n + i))
            deep_bad++;
    return below + frame[0];
}

static unsigned deep_result;

static void deep_body(void *arg)
{
    (void)arg;
    deep_result = deep(0);
}

static void test_deep_call_chain_survives_switches(void **state)
{
    (void)state;
    start_cache(1024 * 1024, 1);
    deep_bad = 0;
    assert_int_equal(sks__fiber_make(&deep_f, &cache, deep_body, NULL), 0);
    int switches = 0;
    while (!deep_f.done) {
        sks__fiber_switch(&main_f, &deep_f);
        switches++;
    }
    assert_int_equal(switches, DEPTH / 100 + 1);
    assert_int_equal(deep_bad, 0);
    unsigned want = 0;
    for (unsigned n = 0; n <= DEPTH; n++)
        want += (unsigned char)n;
    assert_int_equal(deep_result, want);
    sks__fiber_release(&deep_f, &cache);
    end_cache();
}

/* ------------------------------------------------------------------------ */
/* Callee-saved registers                                                    */

/*
 * call_with_values(fn, base) loads every callee-saved register with a
 * value derived from base, calls fn, and returns a bit for each register
 * that no longer holds its value: a switch that forgot a register shows
 * up here, whatever the compiler's register allocation.
 */
#if defined(__x86_64__)
#define HAVE_REGISTER_CHECK 1
static unsigned long call_with_values(void (*fn)(void), unsigned long base)
{
    unsigned long bad;

    __asm__ volatile(
        "subq $128, %%rsp\n\t"          /* step over the red zone */
        "movq %%rsp, %%rax\n\t"
        "andq $-16, %%rsp\n\t"
        "pushq %%rax\n\t"
        "pushq %%rsi\n\t"               /* base, for the check */
        "pushq %%rbx\n\tpushq %%rbp\n\tpushq %%r12\n\t"
        "pushq %%r13\n\tpushq %%r14\n\tpushq %%r15\n\t"
        "leaq 1(%%rsi), %%rbx\n\tleaq 2(%%rsi), %%rbp\n\t"
        "leaq 3(%%rsi), %%r12\n\tleaq 4(%%rsi), %%r13\n\t"
        "leaq 5(%%rsi), %%r14\n\tleaq 6(%%rsi), %%r15\n\t"
        "callq *%%rdi\n\t"
        "movq 48(%%rsp), %%rsi\n\t"
        "xorl %%eax, %%eax\n\t"
#define CHECK(reg, k, bit)                                                   \
        "leaq " #k "(%%rsi), %%rcx\n\tcmpq %%rcx, %%" #reg "\n\t"            \
        "setne %%dl\n\tmovzbl %%dl, %%edx\n\tshlq $" #bit ", %%rdx\n\t"      \
        "orq %%rdx, %%rax\n\t"
        CHECK(rbx, 1, 0) CHECK(rbp, 2, 1) CHECK(r12, 3, 2)
        CHECK(r13, 4, 3) CHECK(r14, 5, 4) CHECK(r15, 6, 5)
#undef CHECK
        "popq %%r15\n\tpopq %%r14\n\tpopq %%r13\n\t"
        "popq %%r12\n\tpopq %%rbp\n\tpopq %%rbx\n\t"
        "popq %%rcx\n\t"
        "popq %%rcx\n\t"
        "movq %%rcx, %%rsp\n\t"
        "addq $128, %%rsp\n\t"
        : "=a"(bad), "+D"(fn), "+S"(base)
        :
        : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory", "cc",
          "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
          "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14",
          "xmm15");
    return bad;
}
#elif defined(__aarch64__)
#define HAVE_REGISTER_CHECK 1
static unsigned long call_with_values(void (*fn)(void), unsigned long base)
{
    unsigned long bad;

    __asm__ volatile(
        "mov x16, %[fn]\n\t"
        "mov x17, %[base]\n\t"
        "sub sp, sp, #176\n\t"
        "stp x19, x20, [sp, #0]\n\tstp x21, x22, [sp, #16]\n\t"
        "stp x23, x24, [sp, #32]\n\tstp x25, x26, [sp, #48]\n\t"
        "stp x27, x28, [sp, #64]\n\tstp x29, x30, [sp, #80]\n\t"
        "stp d8, d9, [sp, #96]\n\tstp d10, d11, [sp, #112]\n\t"
        "stp d12, d13, [sp, #128]\n\tstp d14, d15, [sp, #144]\n\t"
        "str x17, [sp, #160]\n\t"
#define SET(reg, k) "add " #reg ", x17, #" #k "\n\t"
#define SETD(reg, k) "add x9, x17, #" #k "\n\tfmov " #reg ", x9\n\t"
        SET(x19, 1) SET(x20, 2) SET(x21, 3) SET(x22, 4) SET(x23, 5)
        SET(x24, 6) SET(x25, 7) SET(x26, 8) SET(x27, 9) SET(x28, 10)
        SET(x29, 11)
        SETD(d8, 12) SETD(d9, 13) SETD(d10, 14) SETD(d11, 15)
        SETD(d12, 16) SETD(d13, 17) SETD(d14, 18) SETD(d15, 19)
        "blr x16\n\t"
        "ldr x17, [sp, #160]\n\t"
        "mov x10, #0\n\t"
#define CHECK(reg, k)                                                        \
        "add x9, x17, #" #k "\n\tcmp " #reg ", x9\n\tcset x11, ne\n\t"       \
        "orr x10, x10, x11, lsl #" #k "\n\t"
#define CHECKD(reg, k)                                                       \
        "fmov x12, " #reg "\n\tadd x9, x17, #" #k "\n\tcmp x12, x9\n\t"      \
        "cset x11, ne\n\torr x10, x10, x11, lsl #" #k "\n\t"
        CHECK(x19, 1) CHECK(x20, 2) CHECK(x21, 3) CHECK(x22, 4)
        CHECK(x23, 5) CHECK(x24, 6) CHECK(x25, 7) CHECK(x26, 8)
        CHECK(x27, 9) CHECK(x28, 10) CHECK(x29, 11)
        CHECKD(d8, 12) CHECKD(d9, 13) CHECKD(d10, 14) CHECKD(d11, 15)
        CHECKD(d12, 16) CHECKD(d13, 17) CHECKD(d14, 18) CHECKD(d15, 19)
#undef SET
#undef SETD
#undef CHECK
#undef CHECKD
        "ldp x19, x20, [sp, #0]\n\tldp x21, x22, [sp, #16]\n\t"
        "ldp x23, x24, [sp, #32]\n\tldp x25, x26, [sp, #48]\n\t"
        "ldp x27, x28, [sp, #64]\n\tldp x29, x30, [sp, #80]\n\t"
        "ldp d8, d9, [sp, #96]\n\tldp d10, d11, [sp, #112]\n\t"
        "ldp d12, d13, [sp, #128]\n\tldp d14, d15, [sp, #144]\n\t"
        "add sp, sp, #176\n\t"
        "mov %[bad], x10\n\t"
        : [bad] "=r"(bad)
        : [fn] "r"(fn), [base] "r"(base)
        : "x0", "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9",
          "x10", "x11", "x12", "x13", "x14", "x15", "x16", "x17", "x30",
          "v0", "v1", "v2", "v3", "v4", "v5", "v6", "v7", "v16", "v17",
          "v18", "v19", "v20", "v21", "v22", "v23", "v24", "v25", "v26",
          "v27", "v28", "v29", "v30", "v31", "memory", "cc");
    return bad;
}
#endif

#ifdef HAVE_REGISTER_CHECK
static sks__fiber reg_f;
static unsigned long reg_bad_in_fiber;

static void to_fiber(void)
{
    sks__fiber_switch(&main_f, &reg_f);
}

static void to_main(void)
{
    sks__fiber_switch(&reg_f, &main_f);
}

/* The fiber holds other values in the same registers while it is away. */
static void reg_body(void *arg)
{
    (void)arg;
    reg_bad_in_fiber = call_with_values(to_main, 0x5a5a5a5a000000ul);
}
#endif

static void test_callee_saved_registers_survive_switch(void **state)
{
    (void)state;
#ifdef HAVE_REGISTER_CHECK
    start_cache(0, 1);
    reg_bad_in_fiber = ~0ul;
    assert_int_equal(sks__fiber_make(&reg_f, &cache, reg_body, NULL), 0);
    /* In, and back while the fiber is in its own call_with_values. */
    unsigned long bad = call_with_values(to_fiber, 0x1234000000ul);
    assert_int_equal(bad, 0);
    assert_false(reg_f.done);
    /* In again: the fiber checks its registers and ends. */
    bad = call_with_values(to_fiber, 0x4321000000ul);
    assert_int_equal(bad, 0);
    assert_true(reg_f.done);
    assert_int_equal(reg_bad_in_fiber, 0);
    sks__fiber_release(&reg_f, &cache);
    end_cache();
#else
    skip();
#endif
}

/* Many values live across the switch in whatever registers the compiler
 * chose, integer and floating point, on every architecture. */
static sks__fiber pr_f;
static volatile unsigned long pr_seed = 3;
static unsigned long pr_fiber_sum;
static double pr_fiber_fsum;

static unsigned long pressure(sks__fiber *self, sks__fiber *other,
                              unsigned long s, double *fsum)
{
    unsigned long a = s * 3, b = s * 5, c = s * 7, d = s * 11, e = s * 13,
                  f = s * 17, g = s * 19, h = s * 23, i = s * 29, j = s * 31,
                  k = s * 37, l = s * 41;
    double fa = (double)s * 1.5, fb = (double)s * 2.25, fc = (double)s / 3,
           fd = (double)s / 7, fe = (double)s * 0.1, ff = (double)s * 0.7,
           fg = (double)s / 11, fh = (double)s * 3.3;

    sks__fiber_switch(self, other);
    *fsum = fa + fb * 2 + fc * 3 + fd * 4 + fe * 5 + ff * 6 + fg * 7 + fh * 8;
    return a + b * 2 + c * 3 + d * 4 + e * 5 + f * 6 + g * 7 + h * 8 +
           i * 9 + j * 10 + k * 11 + l * 12;
}

static void pressure_body(void *arg)
{
    (void)arg;
    pr_fiber_sum = pressure(&pr_f, &main_f, pr_seed * 1000, &pr_fiber_fsum);
}

static unsigned long pressure_expected(unsigned long s, double *fsum)
{
    /* Same arithmetic, without a switch. */
    double fa = (double)s * 1.5, fb = (double)s * 2.25, fc = (double)s / 3,
           fd = (double)s / 7, fe = (double)s * 0.1, ff = (double)s * 0.7,
           fg = (double)s / 11, fh = (double)s * 3.3;
    *fsum = fa + fb * 2 + fc * 3 + fd * 4 + fe * 5 + ff * 6 + fg * 7 + fh * 8;
    unsigned long m[] = { 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41 };
    unsigned long sum = 0;
    for (unsigned long n = 0; n < 12; n++)
        sum += s * m[n] * (n + 1);
    return sum;
}

static void test_values_in_registers_survive_switch(void **state)
{
    (void)state;
    start_cache(0, 1);
    assert_int_equal(sks__fiber_make(&pr_f, &cache, pressure_body, NULL), 0);
    double fsum, want_f, want_fiber_f;
    unsigned long sum = pressure(&main_f, &pr_f, pr_seed, &fsum);
    /* pressure() switched in, the fiber switched back from its own
     * pressure(); resume it so it completes. */
    while (!pr_f.done)
        sks__fiber_switch(&main_f, &pr_f);
    assert_int_equal(sum, pressure_expected(pr_seed, &want_f));
    assert_true(fsum == want_f);
    assert_int_equal(pr_fiber_sum,
                     pressure_expected(pr_seed * 1000, &want_fiber_f));
    assert_true(pr_fiber_fsum == want_fiber_f);
    sks__fiber_release(&pr_f, &cache);
    end_cache();
}

/* ------------------------------------------------------------------------ */
/* FP control state                                                          */

static sks__fiber fp_f;
static int fp_fiber_mode;
static double fp_fiber_third;
static volatile double one = 1.0, three = 3.0;

static void fp_body(void *arg)
{
    (void)arg;
    fesetround(FE_UPWARD);
    sks__fiber_switch(&fp_f, &main_f);
    fp_fiber_mode = fegetround();
    fp_fiber_third = one / three;
}

static void test_rounding_mode_stays_in_its_fiber(void **state)
{
    (void)state;
    start_cache(0, 1);
    assert_int_equal(fesetround(FE_TONEAREST), 0);
    double nearest = one / three;
    assert_int_equal(sks__fiber_make(&fp_f, &cache, fp_body, NULL), 0);
    sks__fiber_switch(&main_f, &fp_f);
    /* The fiber rounds upward; this context still to nearest, in the x87
     * control word (fegetround) and in MXCSR or FPCR (the division). */
    assert_int_equal(fegetround(), FE_TONEAREST);
    assert_true(one / three == nearest);
    sks__fiber_switch(&main_f, &fp_f);
    assert_true(fp_f.done);
    assert_int_equal(fp_fiber_mode, FE_UPWARD);
    /* Valgrind computes SSE arithmetic rounding to nearest whatever
     * MXCSR says (its manual, "Limitations"). */
    if (!RUNNING_ON_VALGRIND)
        assert_true(fp_fiber_third > nearest);
    assert_int_equal(fegetround(), FE_TONEAREST);
    sks__fiber_release(&fp_f, &cache);
    end_cache();
}

/* ------------------------------------------------------------------------ */
/* Stacks                                                                    */

/* The permissions column of /proc/self/maps for the mapping holding p. */
static int maps_perms(const void *p, char perms[5], char flags[128])
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int found = 0;
    uintptr_t a = (uintptr_t)p;

    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        char pr[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, pr) == 3) {
            if (found)
                break;
            if (a >= lo && a < hi) {
                memcpy(perms, pr, 5);
                found = 1;
                flags[0] = 0;
            }
        } else if (found && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, 128, "%.120s", line + 8);
        }
    }
    fclose(f);
    return found;
}

static int shows_nohugepage(void)
{
    size_t len = 4 * (size_t)sysconf(_SC_PAGESIZE);
    char perms[5], flags[128];
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    int shown = madvise(p, len, MADV_NOHUGEPAGE) == 0 &&
                maps_perms(p, perms, flags) && strstr(flags, " nh") != NULL;
    munmap(p, len);
    return shown;
}

static void test_stack_is_guarded_sized_and_not_huge(void **state)
{
    (void)state;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    sks__stack_cache_init(&cache, 100000, 1);
    assert_int_equal(cache.size % page, 0);
    assert_true(cache.size >= 100000 && cache.size < 100000 + page);
    sks__stack_cache_init(&cache, 1, 1);
    assert_int_equal(cache.size, SKS__FIBER_STACK_MIN);
    sks__stack_cache_init(&cache, 0, 1);
    assert_int_equal(cache.size, SKS__FIBER_STACK_DEFAULT);

    struct sks__stack *s;
    assert_int_equal(sks__stack_get(&cache, &s), 0);
    assert_int_equal((uintptr_t)s->lo % page, 0);
    assert_int_equal((uintptr_t)s->hi % 16, 0);
    assert_true(s->hi < (char *)s);
    assert_true((size_t)(s->hi - s->lo) > cache.size - 2048);
    s->lo[0] = 1;                         /* both ends are writable */
    s->hi[-1] = 1;
    char perms[5], flags[128];
    if (maps_perms(s->lo - 1, perms, flags)) {
        assert_int_equal(strcmp(perms, "---p"), 0);
        assert_true(maps_perms(s->lo, perms, flags));
        assert_int_equal(strncmp(perms, "rw", 2), 0);
        /* "nh": MADV_NOHUGEPAGE took, where this system shows the flag
         * at all (no THP, or qemu-user, which ignores the advice). */
        if (shows_nohugepage())
            assert_non_null(strstr(flags, " nh"));
    }
    sks__stack_put(&cache, s);
    sks__stack_cache_fini(&cache);
}

static int mapped(const void *p)
{
    unsigned char v;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *pg = (void *)((uintptr_t)p & ~(uintptr_t)(page - 1));
    return mincore(pg, page, &v) == 0 || errno != ENOMEM;
}

static void test_cache_keeps_at_most_max_free(void **state)
{
    (void)state;
    struct sks__stack *s[4];
    sks__stack_cache_init(&cache, 0, 2);
    for (int i = 0; i < 4; i++)
        assert_int_equal(sks__stack_get(&cache, &s[i]), 0);
    assert_int_equal(cache.live, 4);
    for (int i = 0; i < 4; i++)
        sks__stack_put(&cache, s[i]);
    assert_int_equal(cache.live, 0);
    assert_int_equal(cache.nfree, 2);
    assert_true(mapped(s[0]->lo) && mapped(s[1]->lo));
    assert_false(mapped(s[2]) || mapped(s[3]));
    /* Last in, first out: the warmest stack comes back first. */
    struct sks__stack *again;
    assert_int_equal(sks__stack_get(&cache, &again), 0);
    assert_ptr_equal(again, s[1]);
    sks__stack_put(&cache, again);
    char *lo0 = s[0]->lo;
    sks__stack_cache_fini(&cache);
    assert_int_equal(cache.nfree, 0);
    assert_false(mapped(lo0));
}

/* ------------------------------------------------------------------------ */
/* Tools                                                                     */

/*
 * A longjmp inside a fiber: under AddressSanitizer, the noreturn call
 * unpoisons the stack from SP to the top of the current stack, which ASan
 * knows only if every switch told it (start/finish_switch_fiber).  Without
 * that it takes the thread's own stack's top, finds gigabytes between, and
 * warns "ignoring requested __asan_handle_no_return".  Run in a child with
 * its stderr captured, so the warning can be looked for.
 */
static jmp_buf lj_env;
static sks__fiber lj_f;
static volatile int lj_depth_reached;

static void jump_from(int n)
{
    volatile char frame[128];

    frame[0] = (char)n;
    lj_depth_reached = n;
    if (n == 0)
        longjmp(lj_env, 1);
    if (n > 0)
        jump_from(n - 1);
    frame[1] = frame[0];
}

static void longjmp_body(void *arg)
{
    int *ok = arg;

    if (setjmp(lj_env) == 0)
        jump_from(20);
    *ok = lj_depth_reached == 0;
}

static void test_longjmp_inside_fiber_leaves_sanitizers_quiet(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int ok = 0;
        dup2(p[1], 2);
        close(p[0]);
        close(p[1]);
        start_cache(0, 1);
        if (sks__fiber_make(&lj_f, &cache, longjmp_body, &ok) != 0)
            _exit(2);
        sks__fiber_switch(&main_f, &lj_f);
        _exit(lj_f.done && ok ? 0 : 3);
    }
    close(p[1]);
    char out[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof out - 1 &&
           (n = read(p[0], out + len, sizeof out - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = 0;
    close(p[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (len > 0)
        printf("child's stderr: %s\n", out);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(len, 0);
}

/* ------------------------------------------------------------------------ */
/* Overflow                                                                  */

static int report_fd;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    void *addr = si->si_addr;
    ssize_t n = write(report_fd, &addr, sizeof addr);
    (void)n;
    signal(sig, SIG_DFL);
    raise(sig);
}

static volatile unsigned long no_limit = ~0ul;

static unsigned long recurse(unsigned long n)
{
    volatile char frame[512];

    frame[0] = (char)n;
    if (n == no_limit)
        return 0;
    return recurse(n + 1) + (unsigned long)frame[0];
}

static void overflow_body(void *arg)
{
    (void)arg;
    no_limit = recurse(0);
}

static void overflow_child(int fd)
{
    static char alt[64 * 1024];
    stack_t ss = { .ss_sp = alt, .ss_size = sizeof alt };
    struct sigaction sa = { .sa_sigaction = on_segv,
                            .sa_flags = SA_SIGINFO | SA_ONSTACK };
    sks__fiber f;

    struct rlimit no_core = { 0, 0 };

    setrlimit(RLIMIT_CORE, &no_core);
    report_fd = fd;
    sigaltstack(&ss, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    start_cache(64 * 1024, 1);
    if (sks__fiber_make(&f, &cache, overflow_body, NULL) != 0)
        _exit(2);
    void *guard = f.stack->lo - sysconf(_SC_PAGESIZE);
    if (write(fd, &guard, sizeof guard) != sizeof guard)
        _exit(3);
    sks__fiber_switch(&main_f, &f);
    _exit(4);                             /* the overflow went unnoticed */
}

static void test_stack_overflow_dies_on_guard_page(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        overflow_child(p[1]);
    }
    close(p[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    char *guard = NULL, *fault = NULL;
    assert_int_equal(read(p[0], &guard, sizeof guard), sizeof guard);
    ssize_t n = read(p[0], &fault, sizeof fault);
    close(p[0]);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSEGV);
    assert_int_equal(n, sizeof fault);
    long page = sysconf(_SC_PAGESIZE);
    printf("overflow: SIGSEGV at %p, guard page %p\n", (void *)fault,
           (void *)guard);
    assert_true(fault >= guard && fault < guard + page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_switch_back_and_forth_then_return_to_resumer),
        cmocka_unit_test(test_many_fibers_round_robin_reuse_cached_stacks),
        cmocka_unit_test(test_deep_call_chain_survives_switches),
        cmocka_unit_test(test_callee_saved_registers_survive_switch),
        cmocka_unit_test(test_values_in_registers_survive_switch),
        cmocka_unit_test(test_rounding_mode_stays_in_its_fiber),
        cmocka_unit_test(test_stack_is_guarded_sized_and_not_huge),
        cmocka_unit_test(test_cache_keeps_at_most_max_free),
        cmocka_unit_test(test_longjmp_inside_fiber_leaves_sanitizers_quiet),
        cmocka_unit_test(test_stack_overflow_dies_on_guard_page),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
