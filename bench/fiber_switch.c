/*
 * bench/fiber_switch.c - what a fiber context switch costs: ns per switch
 * between two fibers, ns to start a fiber on a cached stack and see it
 * end, and, as the reference the issue rules out, ns per swapcontext.
 * Each figure is the best of 5 runs.  Prints one RESULT line per figure:
 *
 *   RESULT switch impl=NAME ns=N
 *
 *   fiber_switch [SWITCHES]      (default 10,000,000)
 */
#define _GNU_SOURCE
#include "../src/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#ifdef SKS_FIBER_PORTABLE
#define IMPL "portable"
#elif defined(__x86_64__)
#define IMPL "x86-64"
#elif defined(__aarch64__)
#define IMPL "aarch64"
#else
#define IMPL "portable"
#endif

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static sks__fiber main_f, other_f;
static long rounds;

static void pong(void *arg)
{
    (void)arg;
    for (;;)
        sks__fiber_switch(&other_f, &main_f);
}

static void empty(void *arg)
{
    (void)arg;
}

static ucontext_t uc_main, uc_other;

static void uc_pong(void)
{
    for (;;)
        swapcontext(&uc_other, &uc_main);
}

static double best(double (*run)(void))
{
    double b = 1e30;
    for (int i = 0; i < 5; i++) {
        double r = run();
        if (r < b)
            b = r;
    }
    return b;
}

/* Each round trip is two switches. */
static double run_switch(void)
{
    double t0 = now_ns();
    for (long i = 0; i < rounds / 2; i++)
        sks__fiber_switch(&main_f, &other_f);
    return (now_ns() - t0) / (double)(rounds / 2 * 2);
}

static struct sks__stack_cache cache;

static double run_create(void)
{
    long n = rounds / 10;
    sks__fiber f;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        if (sks__fiber_make(&f, &cache, empty, NULL) != 0)
            exit(1);
        sks__fiber_switch(&main_f, &f);
        sks__fiber_release(&f, &cache);
    }
    return (now_ns() - t0) / (double)n;
}

static double run_swapcontext(void)
{
    long n = rounds / 10;
    double t0 = now_ns();
    for (long i = 0; i < n / 2; i++)
        swapcontext(&uc_main, &uc_other);
    return (now_ns() - t0) / (double)(n / 2 * 2);
}

int main(int argc, char **argv)
{
    static char uc_stack[64 * 1024];

    rounds = argc > 1 ? atol(argv[1]) : 10000000;
    if (rounds < 20)
        rounds = 20;
    sks__stack_cache_init(&cache, 0, 4);
    sks__fiber_thread(&main_f);
    if (sks__fiber_make(&other_f, &cache, pong, NULL) != 0)
        return 1;
    printf("RESULT switch impl=" IMPL " ns=%.1f\n", best(run_switch));
    printf("RESULT start-and-end impl=" IMPL " ns=%.1f\n", best(run_create));

    getcontext(&uc_other);
    uc_other.uc_stack.ss_sp = uc_stack;
    uc_other.uc_stack.ss_size = sizeof uc_stack;
    uc_other.uc_link = NULL;
    makecontext(&uc_other, uc_pong, 0);
    printf("RESULT switch impl=swapcontext ns=%.1f\n", best(run_swapcontext));
    return 0;
}
