/*
 * compat.h - every platform difference the library has, behind one set of
 * calls (compat.c).  Each has the native form where the platform has it
 * and a portable fallback elsewhere; nothing outside compat.c names a
 * Linux-only call or constant (make check-compat proves it).
 *
 * SKS_PORTABLE (make test-portable) forces every fallback on Linux, so
 * that each one runs under the whole suite here, where no macOS or BSD
 * machine does.
 */
#ifndef SKS_COMPAT_H
#define SKS_COMPAT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* A socket of domain and type, close-on-exec, non-blocking if asked:
 * its descriptor, or -errno. */
int sks__socket(int domain, int type, bool nonblock);

/* A pipe, both ends close-on-exec and non-blocking: 0 or -errno. */
int sks__pipe(int fds[2]);

/* One accept (EINTR retried): the new socket, close-on-exec and blocking
 * whatever the listener's O_NONBLOCK (a BSD accept inherits it), or
 * -errno.  *len is in/out as for accept. */
int sks__accept_blocking(int fd, struct sockaddr *peer, socklen_t *len);

/* One send or sendto that never raises SIGPIPE (flags as for send; to
 * NULL for send): as the call, -1 with errno on failure. */
ssize_t sks__send_nosigpipe(int fd, const void *buf, size_t n, int flags,
                            const struct sockaddr *to, socklen_t tolen);

/* One sendfile from in_fd at *offset (advanced) to the socket fd, never
 * raising SIGPIPE: bytes sent, or -1 with errno; ENOSYS where the
 * platform has no sendfile of this form (the caller copies instead). */
ssize_t sks__sendfile_nosigpipe(int fd, int in_fd, off_t *offset, size_t n);

/* A thread that a reaper joins only once it has ended.  The thread calls
 * sks__thread_ended as its very last act; sks__thread_tryjoin then joins
 * it (0) or says it still runs (EBUSY) without waiting for it. */
void sks__thread_ended(atomic_bool *ended);
int sks__thread_tryjoin(pthread_t tid, const atomic_bool *ended);

/* The address family of socket fd, or -errno (EBADF, ENOTSOCK). */
int sks__socket_family(int fd);

/* Empties an IP socket's error queue (IP_RECVERR's ICMP reports) where
 * the platform has one; a no-op elsewhere. */
void sks__drain_error_queue(int fd);

/* Whether "unix:@name" (Linux's abstract namespace) can be used. */
bool sks__abstract_names(void);

/* How many CPUs this process may run on (its affinity mask where the
 * platform has one, else the CPUs online): at least 1. */
size_t sks__cpus_allowed(void);

/* len bytes of anonymous read-write memory for a fiber stack (len a
 * multiple of the page size), or MAP_FAILED with errno: reserved without
 * swap and marked a stack where the platform has the flags for it, and
 * without transparent huge pages where Linux has them (advice only). */
void *sks__map_stack(size_t len);
/* Hands the allocator's free memory back to the system where it keeps
 * it resident (glibc: the holes in its heaps, malloc_trim); elsewhere a
 * no-op. */
void sks__release_free_memory(void);

#endif
