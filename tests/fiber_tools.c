/*
 * fiber_tools.c - what ThreadSanitizer and valgrind see of fibers, for
 * tests/test_fiber_tools.sh, which builds it twice: with the fiber files'
 * tool annotations, and without them (SKS_NO_TOOL_ANNOTATIONS).
 *
 * Fiber A parks inside parked_in_a.  Another thread writes `shared`;
 * then fiber B writes it too, with nothing ordering the two: a data race
 * that ThreadSanitizer reports, with B's stack.  Told of the switches, it
 * keeps a shadow stack per fiber, and B's stack is B's own; not told, it
 * has one for the thread, on which A's frames were never popped, and they
 * show under B's.  Under memcheck, a switch to a stack it was not told of
 * is a "client switching stacks?" warning (and its checks of the stack
 * may go wrong from there).
 */
#define _GNU_SOURCE
#include "../src/internal.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

static sks__fiber main_fiber, fa, fb;
static struct sks__stack_cache cache;
static int shared;

__attribute__((noinline)) static void parked_in_a(void)
{
    sks__fiber_switch(&fa, &main_fiber);
}

static void fiber_a(void *arg)
{
    (void)arg;
    parked_in_a();
}

__attribute__((noinline)) static void racy_write_in_b(void)
{
    shared++;
}

static void fiber_b(void *arg)
{
    (void)arg;
    racy_write_in_b();
}

static void *other_thread(void *arg)
{
    (void)arg;
    shared++;
    return NULL;
}

int main(void)
{
    pthread_t t;
    struct timespec pause = { 0, 100 * 1000 * 1000 };

    sks__fiber_thread(&main_fiber);
    sks__stack_cache_init(&cache, 0, 4);
    if (sks__fiber_make(&fa, &cache, fiber_a, NULL) != 0 ||
        sks__fiber_make(&fb, &cache, fiber_b, NULL) != 0)
        return 2;
    sks__fiber_switch(&main_fiber, &fa);        /* A parks */
    /* Detached, not joined: a join would order its write before B's. */
    if (pthread_create(&t, NULL, other_thread, NULL) != 0 ||
        pthread_detach(t) != 0)
        return 2;
    nanosleep(&pause, NULL);
    sks__fiber_switch(&main_fiber, &fb);        /* B runs to its end */
    sks__fiber_switch(&main_fiber, &fa);        /* A returns */
    sks__fiber_release(&fa, &cache);
    sks__fiber_release(&fb, &cache);
    sks__stack_cache_fini(&cache);
    printf("done\n");
    return 0;
}
