/*
 * clock.c - the monotonic clock every deadline is measured on.  A deadline
 * is a point on this clock in seconds (a double: sub-microsecond precision
 * for centuries of uptime), and INFINITY means "none".  clock_gettime on
 * CLOCK_MONOTONIC is a vDSO call on Linux, no system call, so reading the
 * clock before each operation that has a deadline costs nothing a
 * benchmark can see.
 */
#include "internal.h"

#include <math.h>

double sks__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double sks__deadline_in(double seconds)
{
    /* Negative or NaN: no deadline (NaN must not reach a comparison that
     * would read it as "already passed"). */
    if (!(seconds >= 0))
        return INFINITY;
    return sks__now() + seconds;
}

int sks__ms_until(double deadline)
{
    if (deadline == INFINITY)
        return -1;
    double left = deadline - sks__now();
    if (left <= 0)
        return 0;
    /* poll takes an int: a longer wait is cut to a day, and the wait layer
     * looks at the clock again when it ends. */
    if (left > 86400.0)
        return 86400 * 1000;
    return (int)ceil(left * 1000.0);
}
