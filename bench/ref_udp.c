/*
 * ref_udp - hand-written datagram echo server: a blocking recvfrom/sendto
 * loop, for UDP or Unix datagram sockets.
 *
 *   ref_udp ADDRESS           (127.0.0.1:0 or unix:/path)
 */
#define _GNU_SOURCE
#include "net.h"

#include <stdio.h>

int main(int argc, char **argv)
{
    static char buf[65536];

    if (argc != 2) {
        fprintf(stderr, "usage: ref_udp ADDRESS\n");
        return 2;
    }
    int fd = bench_listen(argv[1], SOCK_DGRAM);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof(peer);
        ssize_t n = recvfrom(fd, buf, sizeof(buf), 0,
                             (struct sockaddr *)&peer, &len);
        if (n < 0)
            continue; /* EINTR, or ECONNREFUSED from an old ICMP */
        /* An unnamed Unix peer cannot be answered; sendto says so. */
        (void)sendto(fd, buf, (size_t)n, MSG_NOSIGNAL,
                     (struct sockaddr *)&peer, len);
    }
}
