/*
 * upgrade_bench.c - zero-downtime upgrades under load: whoami_server --pid
 * upgraded (SIGUSR2) once a second, 10 times, while 16 unpaced clients
 * connect on loopback (tests/upgrade_drive.c, the load of
 * tests/test_upgrade.c), for each model, and for the fiber model with a
 * SO_REUSEPORT socket per loop as well.  Prints, per model: connections,
 * requests, failed connections (refused, reset, timed out, short reply),
 * the time from each signal to the new generation's "listening on" (it
 * says ready a few microseconds later, as its loop starts) and to its
 * first reply, and how long each old generation took to exit after that.
 *
 *   upgrade_bench WHOAMI_SERVER [SECONDS_PER_MODEL]   (default 10)
 */
#define _GNU_SOURCE
#include "upgrade_drive.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define UPGRADES 10
#define CLIENTS 16

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void summary(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    printf("    %-36s median %6.1f ms, max %6.1f ms\n", what,
           n ? v[n / 2] * 1e3 : 0, n ? v[n - 1] * 1e3 : 0);
}

static int run(const char *whoami, const char *model, bool reuse_port,
               double seconds, long *total, long *failures)
{
    char *argv[] = { (char *)whoami, "--pid", "--model", (char *)model,
                     reuse_port ? "--reuse-port" : "127.0.0.1:0",
                     reuse_port ? "127.0.0.1:0" : NULL, NULL };
    ud_server s;
    if (ud_server_start(&s, whoami, argv, "/dev/null", NULL) != 0) {
        fprintf(stderr, "upgrade_bench: %s does not start\n", whoami);
        return 1;
    }
    ud_load l;
    if (ud_load_start(&l, s.port, CLIENTS, seconds, 0) != 0)
        return 1;
    double t0 = ud_now(), step = seconds / UPGRADES;
    double trigger[UPGRADES];
    pid_t gen[UPGRADES + 1];
    int done = 0;
    for (int k = 0; k < UPGRADES; k++) {
        ud_sleep_until(t0 + step / 2 + k * step);
        double until = ud_now() + 3;
        while (ud_pids(&l) <= k && ud_now() < until)
            ud_sleep_until(ud_now() + 0.002);
        if ((gen[k] = ud_pid(&l, k)) <= 0)
            break;
        trigger[k] = ud_now();
        kill(gen[k], SIGUSR2);
        done++;
    }
    ud_load_join(&l);
    gen[done] = ud_pid(&l, done);
    double to_listening[UPGRADES], to_reply[UPGRADES], to_exit[UPGRADES];
    int n = 0;
    for (int k = 0; k < done; k++) {
        double when;
        if (ud_listening_at(&s, k + 1) < 0 || ud_pid_seen(&l, k + 1) < 0 ||
            !ud_exited(&s, gen[k], 3000, &when, NULL))
            continue;
        to_listening[n] = ud_listening_at(&s, k + 1) - trigger[k];
        to_reply[n] = ud_pid_seen(&l, k + 1) - trigger[k];
        to_exit[n] = when - ud_listening_at(&s, k + 1);
        n++;
    }
    ud_server_stop(&s);
    long conns = atomic_load(&l.connections) + atomic_load(&l.refused);
    printf("  %-9s%s %7ld connections, %7ld requests, %ld failed (refused %ld, "
           "reset %ld, timed out %ld, short %ld, other %ld); %d upgrades, "
           "%d generations answered\n",
           model, reuse_port ? " (a socket per loop)" : "", conns,
           atomic_load(&l.requests), atomic_load(&l.failures),
           atomic_load(&l.refused), atomic_load(&l.reset),
           atomic_load(&l.timed_out), atomic_load(&l.short_reply),
           atomic_load(&l.other), done, ud_pids(&l));
    summary("signal to new \"listening on\":", to_listening, n);
    summary("signal to new generation's 1st reply:", to_reply, n);
    summary("new ready to old exited:", to_exit, n);
    *total += conns;
    *failures += atomic_load(&l.failures);
    return n == UPGRADES ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s WHOAMI_SERVER [SECONDS_PER_MODEL]\n",
                argv[0]);
        return 2;
    }
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    if (ud_become_subreaper() != 0) {
        fprintf(stderr, "upgrade_bench: needs PR_SET_CHILD_SUBREAPER\n");
        return 1;
    }
    static const struct {
        const char *model;
        bool reuse_port;
    } models[] = {
        { "threading", false },
        { "prefork", false },
        { "fiber", false },
        { "fiber", true },
    };
    long total = 0, failures = 0;
    int rc = 0;
    printf("upgrades under load: whoami_server --pid, %d clients unpaced, "
           "%d upgrades in %.0f s per model\n", CLIENTS, UPGRADES, seconds);
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
        rc |= run(argv[1], models[i].model, models[i].reuse_port, seconds,
                  &total, &failures);
    printf("  all: %ld connections, %ld failed, %d upgrades per model "
           "(targets: 0 failed, <= 200 ms to ready)\n",
           total, failures, UPGRADES);
    return rc;
}
