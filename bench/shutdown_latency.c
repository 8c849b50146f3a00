/*
 * shutdown_latency - how long sks_server_shutdown() takes to make
 * serve_forever() return, with poll_interval 0.5 s.
 *
 *   shutdown_latency [ITERATIONS]
 *
 * Each iteration starts a ThreadingTCPServer on 127.0.0.1:0 serving in a
 * thread, waits a random 5-55 ms so that the loop sits in its wait, calls
 * shutdown, and takes the time from the call to serve_forever returning
 * (stamped by the serving thread).  Prints
 *   RESULT shutdown n=N median_us=X p90_us=X max_us=X
 */
#define _GNU_SOURCE
#include "net.h"
#include "sockserver.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct run {
    sks_server *srv;
    uint64_t returned;
};

static void *serve(void *arg)
{
    struct run *r = arg;
    sks_server_serve_forever(r->srv, 0.5);
    r->returned = bench_now_ns();
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 50;
    double *lat = calloc((size_t)(n > 0 ? n : 1), sizeof(double));

    if (n < 1) {
        fprintf(stderr, "usage: shutdown_latency [ITERATIONS]\n");
        return 2;
    }
    srand((unsigned)bench_now_ns());
    for (int i = 0; i < n; i++) {
        struct run r = { 0 };
        pthread_t t;
        int err = sks_server_new(&r.srv, &sks_threading_tcp_ops,
                                 "127.0.0.1:0", &sks_stream_handler, NULL, 0);
        if (err != 0) {
            fprintf(stderr, "shutdown_latency: %s\n", sks_strerror(err));
            return 1;
        }
        pthread_create(&t, NULL, serve, &r);
        long ms = 5 + rand() % 50;
        nanosleep(&(struct timespec){ .tv_nsec = ms * 1000000 }, NULL);
        uint64_t t0 = bench_now_ns();
        sks_server_shutdown(r.srv);
        pthread_join(t, NULL);
        sks_server_free(r.srv);
        lat[i] = (double)(r.returned - t0) / 1e3;
    }
    qsort(lat, (size_t)n, sizeof(double), cmp);
    int p90 = (int)(n * 0.9) < n - 1 ? (int)(n * 0.9) : n - 1;
    printf("RESULT shutdown n=%d median_us=%.1f p90_us=%.1f max_us=%.1f\n", n,
           lat[n / 2], lat[p90], lat[n - 1]);
    free(lat);
    return 0;
}
