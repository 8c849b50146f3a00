/*
 * internal.h - what the library's files share and users never see.
 */
#ifndef SKS_INTERNAL_H
#define SKS_INTERNAL_H

#include "sockserver.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

struct sks_request {
    int fd;             /* connection (stream) or server socket (datagram) */
    sks_addr client;
    bool admitted;      /* counted in `accepted`; its end is counted too */
    bool failed;        /* handle_error ran for it */
    /* In-flight stream requests, so a drain can cut them (srv->lock). */
    struct sks_request *prev, *next;
    /* PROXY protocol: set once the header is read (client is then the
     * original client's address, proxy the connection's real peer). */
    bool proxied;
    sks_addr proxy;
    size_t packet_len;  /* datagram: bytes received (after truncation) */
    bool truncated;     /* datagram: MSG_TRUNC */
    bool datagram;      /* packet[] holds a datagram */
    size_t packet_cap;  /* bytes of packet[] */
    unsigned char packet[]; /* datagram: max_packet_size bytes */
};

struct sks_rfile {
    int fd;             /* -1: memory only (a datagram) */
    char *buf;
    size_t cap, pos, end;
    bool eof;
    bool owned;         /* buf was malloc'd by the library */
};

struct sks_wfile {
    int fd;
    char *buf;
    size_t cap, len;
    bool collect;       /* datagram: gather everything, send in finish */
    bool borrowed;      /* buf is the handler's inline `reply`, not heap */
};

struct sks_handler {
    sks_server *server;
    sks_request *request;
    const sks_handler_class *cls;
    void *user;
    sks_rfile *rfile;   /* &rf once a flavour's setup ran */
    sks_wfile *wfile;
    struct sks_rfile rf;
    struct sks_wfile wf;
    /* A datagram reply starts here: most fit, and then answering takes no
     * allocation per datagram. */
    char reply[512];
};

/* A tracked (joinable) request thread that has ended and awaits join. */
struct sks__thread;

struct sks_server {
    const sks_server_ops *ops;
    const sks_handler_class *handler;
    void *user;
    int fd;
    int wake_rd, wake_wr;      /* self-pipe: shutdown and "a request ended" */
    sks_addr address;
    bool closed;

    /* Attributes read at bind. */
    bool reuse_address, reuse_port, unlink_stale, unlink_on_close;
    int queue_size;
    double timeout;
    size_t max_packet_size;
    bool have_sock_file;       /* we created a Unix socket file ... */
    dev_t sock_dev;            /* ... this one */
    ino_t sock_ino;

    /* serve_forever / shutdown handshake (Python's __is_shut_down). */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_int shutdown_request;
    bool serving, is_shut_down;
    pthread_t serving_thread;

    /* Accept gating: at the concurrency bound (the mixin's, or
     * max_connections) the loop stops accepting (backpressure) or refuses;
     * exhaustion errors (EMFILE...) pause accepting for a growing back-off. */
    size_t mixin_limit;        /* set by the mixin in use; 0: none */
    size_t max_connections;    /* 0: none */
    int overload_policy;       /* SKS_OVERLOAD_* */
    struct timespec accept_resume;
    int backoff_ms;

    /* Counters; active = accepted - completed - failed. */
    atomic_size_t accepted, completed, failed, refused;
    sks_request *inflight;     /* admitted stream requests (lock) */

    /* Concurrency mixins' attributes and state. */
    bool block_on_close, daemon_threads;
    size_t max_threads, stack_size, max_children;
    size_t nthreads;           /* request threads running (lock) */
    size_t ntracked;           /* joinable threads still running (lock) */
    struct sks__thread *done;  /* joinable threads that ended (lock) */
    size_t stop_after;         /* serve_forever ends after this many
                                  accepted requests (pre-forked child) */
    struct sks__prefork *prefork; /* pre-fork mixin state */
    size_t prefork_workers, prefork_max_requests;
    double prefork_timeout;
    struct sks__pool *pool;    /* thread-pool mixin state, made lazily */
    size_t pool_min, pool_max, pool_queue;
    double pool_idle;
    pid_t *children;           /* serving thread only */
    size_t children_cap;
    atomic_size_t nchildren;

    atomic_int refs;           /* the owner + each running request thread */
    /* One datagram request kept for reuse: allocating and freeing its
     * packet buffer was most of a busy UDP server's own work per datagram.
     * Exchanged atomically, as requests end in any thread. */
    _Atomic(sks_request *) spare;

    /* PROXY protocol (proxy.c): versions accepted (0: off), header
     * timeout (0: SKS__PROXY_DEFAULT_TIMEOUT), trusted proxies (none: any
     * peer). */
    unsigned proxy_versions;
    double proxy_timeout;
    struct sks__net {
        int family;            /* AF_INET or AF_INET6 */
        unsigned prefix;       /* bits */
        unsigned char addr[16];
    } trusted[16];
    size_t ntrusted;
};

/* Request lifetime.  A datagram request's memory (max_packet_size bytes)
 * is kept for the next one instead of freed: see srv->spare. */
sks_request *sks__request_new(sks_server *srv, int fd, size_t packet_cap);
void sks__request_free(sks_server *srv, sks_request *req);

/* Gives back what a flavour's setup allocated (rfile, wfile buffers),
 * without sending anything.  No-op when no flavour's setup ran. */
void sks__release_files(sks_handler *h);

/* Makes a server around address with everything but binding; fd < 0:
 * opens a fresh socket, else takes ownership of fd (on success only). */
int sks__server_make(sks_server **out, const sks_server_ops *ops,
                     const sks_addr *address,
                     const sks_handler_class *handler, void *user, int fd);

/* Server plumbing shared by the mixins. */
size_t sks__active(const sks_server *srv);
/* Ends a request without counting it as completed or failed: the forking
 * parent hands the request's accounting to the child's exit status. */
void sks__request_release(sks_server *srv, sks_request *req);
void sks__count_end(sks_server *srv, bool failed);
/* The serve_forever handshake (Python's __is_shut_down), for the loops. */
int sks__serve_begin(sks_server *srv);
void sks__serve_end(sks_server *srv);
/* Pre-fork mixin state release. */
void sks__prefork_free(sks_server *srv);
/* Thread-pool mixin: its part of sks_server_stats, and its release. */
void sks__pool_stats(sks_server *srv, sks_stats *out);
void sks__pool_free(sks_server *srv);
void sks__wake(sks_server *srv);              /* async-signal-safe */
void sks__server_ref(sks_server *srv);
void sks__server_unref(sks_server *srv);
/* Binds srv->fd to srv->address with the reuse options; updates address. */
int sks__bind(sks_server *srv);

/* System-call layer: every byte a handler reads or writes, and every
 * datagram, passes here (EINTR retried, no SIGPIPE, timeouts mapped). */
ssize_t sks__recv(int fd, void *buf, size_t n);
int sks__send_all(int fd, const void *buf, size_t n);
/* One sendfile(2) from in_fd at *offset (advanced) to the socket fd:
 * bytes sent, 0 at end of file, or -errno; never raises SIGPIPE. */
ssize_t sks__sendfile(int fd, int in_fd, off_t *offset, size_t n);
int sks__sendto(int fd, const void *buf, size_t n, const sks_addr *to);
ssize_t sks__recvfrom(int fd, void *buf, size_t cap, sks_addr *from,
                      bool *truncated);
void sks__close(int fd);
/* Waits until fd is readable or the deadline (sks__now() seconds) passes,
 * then peeks at up to n bytes without consuming them: the count, 0 at end
 * of input, -ETIMEDOUT, or -errno. */
ssize_t sks__peek(int fd, void *buf, size_t n, double deadline);
/* Consumes exactly n bytes that are already in fd's receive queue (peeked
 * before), without waiting: 0, -EPROTO if fewer were there, or -errno. */
int sks__recv_queued(int fd, void *buf, size_t n);

/*
 * PROXY protocol (proxy.c).  sks__proxy_parse reads a header at the start
 * of buf[0..n) for the accepted versions: returns its length (> 0) when
 * complete and valid, filling *out; 0 when valid so far but incomplete;
 * -EPROTO when malformed (or of a version not accepted), -EMSGSIZE when
 * longer than SKS_PROXY_HEADER_MAX.  A prefix of a valid header is never
 * an error, and an error stays one whatever follows.  sks__proxy_accept
 * reads the header of a stream request (finish_request) and applies it.
 */
typedef struct sks__proxy_header {
    int version;        /* 1 or 2 */
    bool local;         /* LOCAL, UNKNOWN or UNSPEC: keep the real peer */
    sks_addr src, dst;  /* when !local */
} sks__proxy_header;
ssize_t sks__proxy_parse(const void *buf, size_t n, unsigned versions,
                         sks__proxy_header *out);
int sks__proxy_accept(sks_server *srv, sks_request *req);
#define SKS__PROXY_DEFAULT_TIMEOUT 5.0

/* Monotonic clock helpers. */
double sks__now(void);
int sks__ms_until(double deadline);

/*
 * Table fragments, so the predefined tables are written once each without
 * overriding initializers.  A table is: a transport fragment, a
 * concurrency fragment, and server_close.
 */
#define SKS__BASE_HOOKS                                                      \
    .verify_request = sks_base_verify_request,                               \
    .finish_request = sks_base_finish_request,                               \
    .handle_error = sks_base_handle_error,                                   \
    .refuse_request = sks_base_refuse_request

#define SKS__STREAM_HOOKS                                                    \
    .socket_type = SOCK_STREAM,                                              \
    .server_activate = sks_tcp_server_activate,                              \
    .get_request = sks_tcp_get_request,                                      \
    .shutdown_request = sks_tcp_shutdown_request,                            \
    .close_request = sks_tcp_close_request, SKS__BASE_HOOKS

#define SKS__DGRAM_HOOKS                                                     \
    .socket_type = SOCK_DGRAM,                                               \
    .server_activate = sks_udp_server_activate,                              \
    .get_request = sks_udp_get_request,                                      \
    .shutdown_request = sks_udp_shutdown_request,                            \
    .close_request = sks_udp_close_request, SKS__BASE_HOOKS

#define SKS__TCP_TRANSPORT                                                   \
    .address_family = AF_INET, .server_bind = sks_tcp_server_bind,           \
    SKS__STREAM_HOOKS
#define SKS__UDP_TRANSPORT                                                   \
    .address_family = AF_INET, .server_bind = sks_tcp_server_bind,           \
    SKS__DGRAM_HOOKS
#define SKS__UNIX_STREAM_TRANSPORT                                           \
    .address_family = AF_UNIX, .server_bind = sks_unix_server_bind,          \
    SKS__STREAM_HOOKS
#define SKS__UNIX_DGRAM_TRANSPORT                                            \
    .address_family = AF_UNIX, .server_bind = sks_unix_server_bind,          \
    SKS__DGRAM_HOOKS

#define SKS__THREADING_HOOKS                                                 \
    .process_request = sks_threading_process_request,                        \
    .service_actions = sks_threading_service_actions,                        \
    .handle_timeout = sks_base_handle_timeout,                               \
    .server_close = sks_threading_server_close

#define SKS__SYNC_HOOKS                                                      \
    .process_request = sks_base_process_request,                             \
    .handle_timeout = sks_base_handle_timeout,                               \
    .service_actions = sks_base_service_actions

#endif /* SKS_INTERNAL_H */
