/*
 * internal.h - what the library's files share and users never see.
 */
#ifndef SKS_INTERNAL_H
#define SKS_INTERNAL_H

#include "sockserver.h"
#include "compat.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/*
 * One connection's I/O state, consulted by every read and write on it (the
 * wait layer: "Waiting and I/O" below).  The stream flavour keeps one per
 * handler (h->conn) under its rfile and wfile; the PROXY header read makes
 * one of its own with a deadline.
 *
 * An operation's deadline is the nearer of now + timeout and the
 * connection's deadline (sks__conn_deadline), so a whole-request limit, an
 * idle limit or a handler-set deadline is one more field folded in there;
 * a transport other than the kernel's (TLS) is one more pointer here.
 */
struct sks__conn {
    int fd;
    double timeout;     /* per operation: -ETIMEDOUT after this long with
                           no progress (seconds); INFINITY: none */
    double deadline;    /* the connection's own limit, whatever the
                           progress (sks__now() seconds); INFINITY: none */
    /* The handler class's whole-request and idle limits (seconds;
     * INFINITY: none), which set `deadline` as requests come and go. */
    double request_timeout, idle_timeout;
    /* No request in progress: the next byte received starts one (and
     * arms request_timeout). */
    bool idle;
    /* Where the admission layer sees how it waits on its client (the
     * request's; NULL: nowhere). */
    struct sks__client_wait *watch;
    /* Why `deadline` ended an operation, if it did (SKS__CUT_*): sticky,
     * for finish_request to count and report once. */
    unsigned char cut;
    /* Kernel timeouts the blocking backend has set on fd (SO_RCVTIMEO,
     * SO_SNDTIMEO), in seconds; 0: none set.  The backend's, not io.c's. */
    double rcv_timeo, snd_timeo;
    /* How the bytes move (sks_transport): sks_plain_transport unless the
     * server set another, and the state that one's start made. */
    const sks_transport *transport;
    void *transport_state;
    /* The transport's start (a TLS handshake) is running under its own
     * deadline: a cut there is a silent one, as an idle cut is, and its
     * bytes start no request. */
    bool starting;
    /* The deadline of the last sks_conn_*_once, which sks_conn_wait keeps
     * (a kernel timeout may have used it up already); 0: none. */
    double attempt_deadline;
};

/*
 * How a connection waits on its client, for SKS_OVERLOAD_SHED_IDLE: the
 * handler's thread writes it (io.c), the accepting loop reads it to pick a
 * connection to shed.  Times are sks__now(); 0: not so.  Relaxed: a hint
 * for the choice, which orders nothing else.  Kept only under that policy
 * (stream.c sets the connection's watch).
 */
struct sks__client_wait {
    _Atomic double idle_since;    /* between requests, since */
    _Atomic double waiting_since; /* in a read or write the client has
                                     not answered, since */
    atomic_bool shed;             /* shut down to make room */
};

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
    struct sks__client_wait wait; /* stream: its connection's */
    size_t packet_cap;  /* bytes of packet[] */
    unsigned char packet[]; /* datagram: max_packet_size bytes */
};

struct sks_rfile {
    struct sks__conn *conn; /* NULL: memory only (a datagram) */
    char *buf;
    size_t cap, pos, end;
    bool eof;
    bool owned;         /* buf was malloc'd by the library */
    bool lent;          /* buf is the wait backend's, given back while a
                           read waits with nothing buffered (NULL then) */
};

struct sks_wfile {
    struct sks__conn *conn; /* a datagram's: the server socket's */
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
    struct sks__conn conn; /* under rf and wf, once a flavour's setup ran */
    /* A datagram reply starts here: most fit, and then answering takes no
     * allocation per datagram. */
    char reply[512];
};

/*
 * A concurrency model (sync, threading, forking, pool, prefork): its state
 * and lifecycle behind one table, as nginx's ngx_event_actions_t.  The
 * core calls these members and never names a model's fields; a model
 * keeps its state in its own struct, made by attach when the server is
 * created and handed back to every member.  Every member but name and
 * roles may be NULL (nothing to do).  docs/DESIGN.md, "Adding a
 * concurrency model", says how a new one is written.
 */
enum {
    SKS__RUNS_REQUESTS = 1u << 0, /* process_request: one per server */
    SKS__RUNS_LOOP = 1u << 1,     /* serve_forever: one per server */
};

struct sks_model {
    const char *name;
    unsigned roles;             /* SKS__RUNS_* this model takes */
    /* The hook that names this model in a table that carries no `model`
     * (a version 1 table, or one built by hand). */
    int (*process_request)(sks_server *srv, sks_request *req);
    int (*serve_forever)(sks_server *srv, double poll_interval);
    /* At server creation: makes the state with its defaults, so limits
     * and stats hold before the first request.  0 or -errno. */
    int (*attach)(sks_server *srv, void **state);
    /* Requests in flight at which the loop stops accepting; 0: none. */
    size_t (*limit)(const void *state);
    /* Fills the model's part of sks_server_stats (queued, workers). */
    void (*stats)(void *state, sks_stats *out);
    /* A drain's last resort: ends the model's own running work (children
     * signalled with sig); returns how many were cut. */
    size_t (*cut)(void *state, int sig);
    /* After each loop turn: true ends serve_forever (a quota). */
    bool (*done)(sks_server *srv, void *state);
    /* At server_close, after the table's server_close: waits for (or
     * lets go of) running work.  Runs once. */
    void (*close)(sks_server *srv, void *state);
    /* Releases the state, when the server's memory is released. */
    void (*free)(void *state);
};

/* One model in use by a server, and a filled copy of the table it wrapped
 * (its "super": a mixin's hooks call this one, never srv->ops->parent). */
struct sks__slot {
    const sks_model *model;
    void *state;
    sks_server_ops wrapped;
};
#define SKS__MAX_MODELS 2  /* one that runs requests, one that runs the loop */
/* Listening sockets of one server: its own and its SO_REUSEPORT siblings. */
#define SKS__MAX_LISTENERS 64

struct sks_server {
    /* The table the library calls: a filled copy of `given` (see
     * sks__table_fill), so a NULL member or an older version never
     * reaches a call. */
    const sks_server_ops *ops;
    sks_server_ops table;
    const sks_server_ops *given;  /* as passed: sks_server_ops_of */
    const sks_handler_class *handler; /* &hclass */
    sks_handler_class hclass;
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

    /* Accept gating: at the concurrency bound (the models', or
     * max_connections) the loop stops accepting (backpressure) or refuses;
     * exhaustion errors (EMFILE...) pause accepting for a growing back-off. */
    size_t max_connections;    /* 0: none */
    int overload_policy;       /* SKS_OVERLOAD_* */
    struct timespec accept_resume;
    int backoff_ms;

    /* Counters; active = accepted - completed - failed. */
    atomic_size_t accepted, completed, failed, refused;
    atomic_size_t timed_out; /* connections cut at a deadline, or shed */
    bool shedding;      /* the loop shed an idle connection: wait for it */
    sks_request *inflight;     /* admitted stream requests (lock) */

    /* Attributes every model that runs requests elsewhere reads:
     * server_close waits for them; the stack of the threads a model makes
     * (0: the system's default). */
    bool block_on_close;
    size_t stack_size;

    /* The models in use (model.c), made at creation. */
    struct sks__slot models[SKS__MAX_MODELS];
    size_t nmodels;

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

    /* The stream connections' transport (transport.c); NULL: plain. */
    const sks_transport *transport;
    void *transport_arg;
    double transport_timeout;  /* its start's limit, seconds; INFINITY */
    /* The listening sockets beyond fd: its SO_REUSEPORT siblings on the
     * same address (listeners.c). */
    int more[SKS__MAX_LISTENERS - 1];
    size_t nmore;
    unsigned listen_turn;      /* which one the loop looks at first */

    /* Zero-downtime upgrade (upgrade.c). */
    struct sks__upgrade {
        char *const *argv;      /* for requested upgrades; NULL: none */
        double timeout;         /* seconds for the successor to be ready */
        char *name;             /* LISTEN_FDNAMES entry (malloc'd); NULL:
                                   "unknown" */
        pid_t owner;            /* the process that made the server: its
                                   forked children never upgrade */
        atomic_bool requested;  /* sks_server_request_upgrade */
        atomic_bool busy;       /* one upgrade at a time */
        atomic_bool handed_over; /* the successor serves our sockets */
        atomic_bool cancel;     /* server_close: stop waiting */
        bool thread_started;    /* a requested upgrade's thread, to join */
        pthread_t thread;
    } upgrade;
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

/* Tables (table.c).  sks__table_fill makes *out a copy of *in with every
 * member in: 0, or -EINVAL for a version newer than the library or a NULL
 * required member.  sks__transport_table: the library's own table for the
 * server's family and type, the base of every fill. */
int sks__table_fill(sks_server_ops *out, const sks_server_ops *in);
/* The part of sks__table_fill that copies: the members in's version
 * defines, the rest zero.  0, or -EINVAL for a version too new. */
int sks__table_copy(sks_server_ops *out, const sks_server_ops *in);
int sks__handler_fill(sks_handler_class *out, const sks_handler_class *in);
const sks_server_ops *sks__transport_table(const sks_server *srv);

/* Models (model.c).  sks__models_attach resolves the models of the
 * server's table and attaches each; the others walk them. */
int sks__models_attach(sks_server *srv);
void *sks__model_state(const sks_server *srv, const sks_model *m);
/* The table model m wrapped, filled; a transport's when m is not in use. */
const sks_server_ops *sks__model_super(const sks_server *srv,
                                       const sks_model *m);
size_t sks__models_limit(const sks_server *srv);
void sks__models_stats(const sks_server *srv, sks_stats *out);
size_t sks__models_cut(sks_server *srv, int sig);
bool sks__models_done(sks_server *srv);
void sks__models_close(sks_server *srv);
void sks__models_free(sks_server *srv);
/* A mixin constructor's common part: *out becomes *base wrapped by m
 * (parent base, model m); -EINVAL when base already runs what m runs. */
int sks__mixin_wrap(sks_server_ops *out, const sks_server_ops *base,
                    const sks_model *m);
/* The library's models, so that an older table's hooks name them. */
extern const sks_model sks__threading_model, sks__forking_model,
    sks__pool_model, sks__prefork_model;
/* The fiber model (fiber.c): a new model's tables always carry `model`,
 * so it is not among model.c's library_models. */
extern const sks_model sks__fiber_model;

/* Server plumbing shared by the models. */
size_t sks__active(const sks_server *srv);
/* Ends a request without counting it as completed or failed: the forking
 * parent hands the request's accounting to the child's exit status. */
void sks__request_release(sks_server *srv, sks_request *req);
void sks__count_end(sks_server *srv, bool failed);
/* The serve_forever handshake (Python's __is_shut_down), for the loops. */
int sks__serve_begin(sks_server *srv);
void sks__serve_end(sks_server *srv);
/* Admission (admission.c): the loop takes a request it has verified, or
 * turns it away; stream requests admitted are listed for a drain. */
bool sks__at_limit(const sks_server *srv);
/* Accepting paused at the bound: backpressure, or shedding (which waits
 * as backpressure does while a shed connection frees its slot). */
bool sks__paused(const sks_server *srv);
/* SKS_OVERLOAD_SHED_IDLE: shuts down the in-flight connection that makes
 * least of its slot (admission.c); true if there was one. */
bool sks__shed_one(sks_server *srv);
void sks__admit(sks_server *srv, sks_request *req);
void sks__refuse(sks_server *srv, sks_request *req, bool overload);
void sks__inflight_remove(sks_server *srv, sks_request *req);
size_t sks__inflight_cut(sks_server *srv);
/* The loop (loop.c): what a drain and a pre-forked child need of it. */
bool sks__is_serving(sks_server *srv);
void sks__wake(sks_server *srv);              /* async-signal-safe */
void sks__server_ref(sks_server *srv);
void sks__server_unref(sks_server *srv);
/* Listening sockets (listeners.c).  sks__listeners fills out with srv->fd
 * and its siblings (none once closed): their count.  sks__listener_adopt
 * takes a sibling (inherited, already checked): 0 or -ENOSPC.
 * sks__listener_open opens one more on the server's address: 0, or
 * -EOPNOTSUPP unless srv->fd is a TCP listener with SO_REUSEPORT, -ENOSPC,
 * -errno.  sks__listeners_close_more closes the siblings.  get_request
 * accepts on sks__accept_fd(srv): the socket sks__accept_on chose for srv
 * in the calling thread (fd -1: none), else srv->fd. */
size_t sks__listeners(const sks_server *srv, int *out, size_t cap);
int sks__listener_adopt(sks_server *srv, int fd);
int sks__listener_open(sks_server *srv);
void sks__listeners_close_more(sks_server *srv);
void sks__accept_on(const sks_server *srv, int fd);
int sks__accept_fd(const sks_server *srv);
/* Upgrades (upgrade.c).  The serving loops call sks__upgrade_turn every
 * turn (a requested upgrade starts there) and sks__upgrade_loop_ended
 * under srv->lock as they end (after a hand-over, the listening sockets
 * close there); sks_server_close calls sks__upgrade_close first.  In a
 * successor, activation calls sks__upgrade_inherit when it reads the
 * variables meant for this process (and unsets SKS__UPGRADE_FD_ENV with
 * them), and sks__serve_begin calls sks__upgrade_signal_ready. */
void sks__upgrade_turn(sks_server *srv);
void sks__upgrade_loop_ended(sks_server *srv);
void sks__upgrade_close(sks_server *srv);
#define SKS__UPGRADE_FD_ENV "SKS_UPGRADE_FD"
void sks__upgrade_inherit(void);
void sks__upgrade_signal_ready(void);
/* Binds srv->fd to srv->address with the reuse options; updates address. */
int sks__bind(sks_server *srv);

/*
 * Waiting and I/O: clock.c, wait.c, io.c.  See "Waiting in one place" in
 * docs/DESIGN.md.
 *
 * Every wait in the library goes through one primitive, sks__wait, which
 * takes a deadline on the monotonic clock; every byte goes through io.c,
 * which tries the system call first and calls the wait only when the call
 * reports EAGAIN (Go's internal/poll.FD.Read).  How a thread waits is its
 * wait backend: the blocking one (wait.c) blocks in the kernel; a later
 * model (fibers on an epoll loop) supplies one that parks the calling fiber
 * instead.  Nothing above io.c and sks__wait knows which is in use.
 */

/* The monotonic clock (clock.c).  A deadline is a point on it, in
 * seconds; INFINITY means none. */
double sks__now(void);
/* sks__now() + seconds; INFINITY (no deadline) for a negative or NaN
 * number of seconds. */
double sks__deadline_in(double seconds);
/* Milliseconds from now to deadline, for poll(2): rounded up, 0 once it
 * has passed, -1 for INFINITY, at most a day. */
int sks__ms_until(double deadline);

/* A connection on fd with a per-operation timeout in the handler class's
 * convention (0, negative, NaN, INFINITY or over INT_MAX: none). */
struct sks__conn sks__conn_make(int fd, double timeout);
/* Why a connection's deadline cut it: no request in progress (silent), or
 * a request's (handle_error hears -ETIMEDOUT). */
enum { SKS__CUT_NONE, SKS__CUT_IDLE, SKS__CUT_REQUEST };
/* Arms the handler class's request_timeout and idle_timeout on c and
 * starts it waiting for its first request. */
void sks__conn_limits(struct sks__conn *c, double request_timeout,
                      double idle_timeout);
/* Between requests: idle until the next request's first byte (at once if
 * `buffered`: a pipelined request is already here). */
void sks__conn_await_request(struct sks__conn *c, bool buffered);
/* The current request's deadline, seconds from now (INFINITY: none). */
void sks__conn_set_deadline(struct sks__conn *c, double seconds);
/* The deadline of the next operation on c; INFINITY when it has none (the
 * clock is then not read). */
double sks__conn_deadline(const struct sks__conn *c);

/*
 * A wait backend: how the threads that use it wait.  The table is the seam
 * a concurrency model replaces; sks__wait_use selects one per thread.
 *
 *   prepare  Before an attempt that may block in the kernel (recv, send or
 *            sendfile on a socket in blocking mode) for `events` on c, which
 *            must return within `left` seconds (> 0, finite).  The blocking
 *            backend bounds the kernel's own wait with SO_RCVTIMEO or
 *            SO_SNDTIMEO, set only when the one in force would overshoot
 *            (or wake far too early): no system call while an operation's
 *            deadline stays where it was.  NULL: nothing to do (a backend
 *            whose sockets are non-blocking, so attempts never block).
 *            0 or -errno.
 *   wait     Until one of fds[0..n) shows one of its events (revents set),
 *            or until `deadline` (INFINITY: no limit); n 0: until the
 *            deadline.  Returns the number ready, 0 once the deadline has
 *            passed, or -errno; EINTR is not an error (it waits on, to the
 *            same deadline).
 *
 *   take, give  Read buffers of `size` bytes for connections waiting
 *            with nothing buffered, which hold none meanwhile (the fiber
 *            backend's per-loop pool: an idle connection then costs no
 *            buffer).  take: a buffer or NULL; give: one taken from this
 *            backend, on the same thread.  NULL (both): no pool, and a
 *            connection keeps its buffer (stream.c asks sks__wait_lends).
 *
 * io.c calls prepare only for operations with a deadline, then attempts
 * the call, and calls wait only after EAGAIN, which before the deadline is
 * never reported as a timeout: the socket was non-blocking, or a kernel
 * timeout ended sooner than the deadline.
 */
typedef struct sks__wait_backend {
    const char *name;
    int (*prepare)(struct sks__conn *c, short events, double left);
    int (*wait)(struct pollfd *fds, size_t n, double deadline);
    void *(*take)(size_t size);
    void (*give)(void *buf, size_t size);
    void (*drained)(int fd);
    bool (*empty)(int fd);
} sks__wait_backend;

/* poll(2) and the kernel's socket timeouts (wait.c): every thread's
 * backend until it selects another. */
extern const sks__wait_backend sks__blocking_wait;
/* Selects the calling thread's backend (NULL: the blocking one), for every
 * wait after it; a model calls it at the start of each thread it runs. */
void sks__wait_use(const sks__wait_backend *backend);
/* The wait primitive: the calling thread's backend's wait (see above). */
int sks__wait(struct pollfd *fds, size_t n, double deadline);
/* The calling thread's backend's prepare, when it has one; else 0. */
int sks__wait_prepare(struct sks__conn *c, short events, double left);
/* Whether the calling thread's backend lends read buffers; its take and
 * give (malloc and free where it has none; give ignores NULL). */
bool sks__wait_lends(void);
void *sks__wait_take(size_t size);
void sks__wait_give(void *buf, size_t size);
/* The backend's read hint (false, and nothing, where it has none). */
void sks__wait_drained(int fd);
bool sks__wait_empty(int fd);

/*
 * The system-call layer (io.c): EINTR retried, never SIGPIPE, EAGAIN waited
 * out to the deadline, -ETIMEDOUT only once the deadline has passed.
 */
/* The stream layer's calls, through the connection's transport (Redis's
 * inline wrappers over ConnectionType).  Bytes received (0 at end of
 * input) or -errno. */
static inline ssize_t sks__conn_recv(struct sks__conn *c, void *buf, size_t n)
{
    return c->transport->recv(c, buf, n);
}
/* All n bytes, each step that makes progress with a new per-operation
 * timeout; 0 or -errno. */
int sks__conn_send_all(struct sks__conn *c, const void *buf, size_t n);
/* sks__conn_recv into *buf (n bytes; NULL: none held yet), which is the
 * wait backend's (sks__wait_take): given back while the call waits, so
 * *buf is NULL after an error, a new one after the wait.  -ENOMEM when
 * none can be had. */
ssize_t sks__conn_recv_lent(struct sks__conn *c, char **buf, size_t n);
/* Up to n bytes from in_fd at *offset (advanced) to c: bytes sent, 0 at
 * end of file, or -errno (-ENOSYS: the transport cannot; copy instead);
 * never raises SIGPIPE.  The plain transport's is one sendfile(2). */
static inline ssize_t sks__conn_sendfile(struct sks__conn *c, int in_fd,
                                         off_t *offset, size_t n)
{
    if (c->transport->send_file == NULL)
        return -ENOSYS;
    return c->transport->send_file(c, in_fd, offset, n);
}
/* Transports (transport.c).  sks__conn_start: srv's transport takes over
 * c, its start run under srv's start timeout; 0 or its error (c is then
 * plain again).  sks__conn_end: the transport's shutdown (the stream's
 * end, after the last flush).  sks__conn_close: its close, once; c is
 * plain after. */
int sks__conn_start(struct sks__conn *c, const sks_server *srv);
void sks__conn_end(struct sks__conn *c);
void sks__conn_close(struct sks__conn *c);
/* Waits until c's socket is readable or c's deadline passes, then peeks at
 * up to n bytes without consuming them: the count, 0 at end of input,
 * -ETIMEDOUT, or -errno. */
ssize_t sks__conn_peek(struct sks__conn *c, void *buf, size_t n);
/* Consumes exactly n bytes that are already in fd's receive queue (peeked
 * before), without waiting: 0, -EPROTO if fewer were there, or -errno. */
int sks__recv_queued(int fd, void *buf, size_t n);
/* One datagram to `to`, waiting for send-buffer room up to deadline; to a
 * Unix peer never waiting (-EAGAIN: the reply is dropped).  0 or -errno. */
int sks__sendto(int fd, const void *buf, size_t n, const sks_addr *to,
                double deadline);
/* One datagram if one is queued, never waiting (-EAGAIN: none). */
ssize_t sks__recvfrom(int fd, void *buf, size_t cap, sks_addr *from,
                      bool *truncated);
/* One connection from a non-blocking listener, close-on-exec, never
 * waiting: its descriptor, or -errno (-EAGAIN: none pending). */
int sks__accept(int fd, sks_addr *peer);
void sks__close(int fd);

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

/*
 * Fibers: the context switch and the stacks (fiber_switch.c, fiber_stack.c,
 * and one platform file: fiber_ctx_x86_64.S, fiber_ctx_aarch64.S (ELF), or
 * fiber_ctx_portable.c elsewhere or when SKS_FIBER_PORTABLE or
 * SKS_PORTABLE is defined).
 * Thread safety: none; a fiber, and the stack cache it came from, belong to
 * one thread for life (a fiber never migrates, so __thread state stays
 * valid inside it).
 *
 * Stacks.  Each fiber runs on its own mmap'd stack with a PROT_NONE guard
 * page below it, always: an overflow is a SIGSEGV whose address lies in
 * that page, never silent corruption of a neighbour.  Memory is reserved,
 * not committed: a stack costs what its deepest call touched, page by page
 * (an idle handler parked in readline touches 2-3 pages), so the default
 * SKS__FIBER_STACK_DEFAULT (256 KiB) is cheap in RSS but bounds the depth.
 * Size a stack as the deepest handler call chain plus its largest locals
 * plus 16 KiB for the library and libc (getaddrinfo and printf-family
 * calls use several KiB); under AddressSanitizer frames grow 2-3x.  Each
 * stack is two memory mappings (guard and stack), so vm.max_map_count
 * (65530 by default) caps a process at about 32,000 live fibers.
 * Transparent huge pages are refused for stacks (MADV_NOHUGEPAGE): a 2 MiB
 * page would make every stack resident in full.
 */
#define SKS__FIBER_STACK_DEFAULT (256u * 1024)
#define SKS__FIBER_STACK_MIN (16u * 1024)

/* The sanitizers built in, for the fiber files' annotations. */
#if defined(__SANITIZE_ADDRESS__)
#define SKS__ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define SKS__TSAN 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SKS__ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define SKS__TSAN 1
#endif
#endif
/* The negative control of tests/test_fiber_tools.sh: fiber files that
 * tell no tool (ASan, TSan, valgrind) of their stacks and switches. */
#ifdef SKS_NO_TOOL_ANNOTATIONS
#undef SKS__ASAN
#undef SKS__TSAN
#endif

/* One stack.  The descriptor lives in the mapping, above the stack. */
struct sks__stack {
    char *lo;                  /* usable [lo, hi); the guard page is below */
    char *hi;                  /* 16-aligned start, coloured per use */
    size_t map_len;            /* the mapping: guard page + stack + this */
    unsigned vg_id;            /* valgrind's stack id */
    struct sks__stack *next;   /* in the cache's free list */
};

/* A per-owner (per-loop) cache of free stacks of one size. */
struct sks__stack_cache {
    size_t size;               /* usable bytes of each stack */
    unsigned max_free;         /* free stacks kept; more are unmapped */
    unsigned nfree;
    unsigned live;             /* stacks handed out and not yet put back */
    unsigned colour;           /* rotates each stack's start offset */
    struct sks__stack *free;
};

/* size 0: SKS__FIBER_STACK_DEFAULT; rounded up to whole pages and to at
 * least SKS__FIBER_STACK_MIN.  Maps nothing yet. */
void sks__stack_cache_init(struct sks__stack_cache *c, size_t size,
                           unsigned max_free);
/* 0 and *out, or -ENOMEM (or another -errno from mmap/mprotect). */
int sks__stack_get(struct sks__stack_cache *c, struct sks__stack **out);
void sks__stack_put(struct sks__stack_cache *c, struct sks__stack *s);
/* Unmaps the free stacks; stacks still handed out stay the owner's. */
void sks__stack_cache_fini(struct sks__stack_cache *c);

/*
 * A fiber is a saved context plus, unless it is a thread's own context, a
 * stack.  sks__fiber_switch(from, to) saves the running context in from
 * and resumes to; it returns when something switches back to from.  A
 * fiber made by sks__fiber_make starts at fn(arg) on its first switch-in;
 * when fn returns, done is set and the fiber switches for the last time to
 * whichever fiber last switched to it (its resumer), which may then
 * release it.  Only callee-saved registers, the FP control state (x87 and
 * MXCSR, or FPCR), SP and PC are switched: no signal mask, no system call.
 * The sanitizers (ASan, TSan) and valgrind are told of every switch and
 * every stack.
 */
typedef struct sks__fiber sks__fiber;
struct sks__fiber {
    void *sp;                  /* saved context while switched out */
    sks__fiber *resumer;       /* the fiber that last switched here */
    struct sks__stack *stack;  /* NULL: a thread's own stack */
    void (*fn)(void *);
    void *arg;
    bool done;                 /* fn returned */
    const void *asan_bottom;   /* this fiber's stack, as ASan knows it */
    size_t asan_size;
    void *asan_fake;           /* ASan's fake stack while switched out */
    void *tsan;                /* TSan's fiber */
};

/* Makes f the calling thread's own context, so it can switch to fibers. */
void sks__fiber_thread(sks__fiber *f);
/* Prepares f to run fn(arg) on a stack from c: 0, or -errno. */
int sks__fiber_make(sks__fiber *f, struct sks__stack_cache *c,
                    void (*fn)(void *), void *arg);
void sks__fiber_switch(sks__fiber *from, sks__fiber *to);
/* Gives f's stack back to c.  f is done, or never ran; f is not running. */
void sks__fiber_release(sks__fiber *f, struct sks__stack_cache *c);

/* The platform layer (one file per architecture).  make writes a first
 * frame below top (made 16-aligned) that starts entry(arg), returning the
 * context to switch to (lo, the stack's low end, is for the portable
 * file's makecontext); switch saves the running context in *save and
 * resumes load.  entry must never return. */
void *sks__fctx_make(void *lo, void *top, void (*entry)(void *), void *arg);
void sks__fctx_switch(void **save, void *load);

/*
 * Fiber loops (fiber_loop.c): one thread, one readiness backend
 * (fiber_poller.h), its fibers and their timer heap.  A loop belongs to the thread that runs it; only
 * sks__floop_cancel may be called from another thread.  The calls below
 * that take no loop act on the calling thread's, from inside one of its
 * fibers (-EINVAL elsewhere).
 */
struct sks__floop;
/* cached_stacks: free stacks the loop keeps for its next fibers. */
int sks__floop_new(struct sks__floop **out, size_t stack_size,
                   unsigned cached_stacks);
/* After sks__floop_run returned (fibers never run are released). */
void sks__floop_free(struct sks__floop *l);
/* A fiber running fn(arg), first run in the loop's next turn: 0, -errno.
 * From the loop's thread (a fiber of it, or before sks__floop_run). */
int sks__floop_spawn(struct sks__floop *l, void (*fn)(void *), void *arg);
/* Runs the loop on the calling thread until it has no fiber left: 0, or
 * -errno if the backend's wait fails. */
int sks__floop_run(struct sks__floop *l);
/* Any thread: every parked fiber wakes with -ECANCELED, and every later
 * wait returns it at once, so handlers end. */
void sks__floop_cancel(struct sks__floop *l);
/* The calling fiber's loop; NULL outside a loop's fibers. */
struct sks__floop *sks__floop_here(void);
size_t sks__floop_fibers(const struct sks__floop *l);
/* fd, non-blocking, is the loop's until sks__floop_forget (with epoll:
 * added once, at its first wait, edge-triggered, both directions); 0 or
 * -ENOMEM.  Forget it once it is closed (no system call), before the loop
 * can open another with its number; descriptors never registered still
 * work, at two epoll_ctl a wait with epoll. */
int sks__floop_register(int fd);
void sks__floop_forget(int fd);
/* After EAGAIN: parks until fd may be readable (or writable), or until
 * deadline (sks__now() seconds; INFINITY: none).  0: try again;
 * -ETIMEDOUT, -ECANCELED, -EBUSY (another fiber waits the same way). */
int sks__floop_wait_fd(int fd, bool write, double deadline);
/* A read hint, so that a read may wait before it tries (the epoll
 * server's one recv per readiness): sks__floop_read_drained after a read
 * on registered fd returned fewer bytes than asked, which on a stream
 * socket means the kernel had no more; sks__floop_read_empty: whether no
 * readiness has come for fd since.  A read that parks on the hint alone
 * parks 50 ms at most, then returns 0 (try): a short read can leave bytes
 * behind (TCP urgent data; a Unix socket stops at passed descriptors or
 * changed credentials).  No mark is kept where the poller does not watch
 * a descriptor nobody waits on (poll: fiber_poller.h). */
void sks__floop_read_drained(int fd);
bool sks__floop_read_empty(int fd);
/* Parks until deadline: 0, or -ECANCELED. */
int sks__floop_sleep(double deadline);
/* Lets every other ready fiber run first. */
void sks__floop_yield(void);
/* The calling fiber (NULL outside a loop's fibers), and, from any thread,
 * a way to end its current or next wait with -EINTR.  f must not have
 * ended (its owner keeps it alive until it sees why it was woken). */
struct sks__fib;
struct sks__fib *sks__floop_self(void);
void sks__floop_interrupt(struct sks__fib *f);
/* What a fiber runs, for a watchdog and a debugger: the calling fiber's
 * tag (NULL at first), which may change as it goes (a function copied,
 * never called here). */
typedef void (*sks__floop_tag)(void);
void sks__floop_set_tag(sks__floop_tag tag);
/* For a watchdog thread, every interval: true when the same fiber has
 * run since the previous call, without yielding (*resumes: the count the
 * previous call saw, updated); *tag: the tag of the fiber that runs, or
 * last ran (read without touching the fiber, which may end meanwhile). */
bool sks__floop_held(struct sks__floop *l, unsigned long *resumes,
                     sks__floop_tag *tag);

/* Helper threads for blocking work (fiber_loop.c).  sks__floop_offload
 * runs fn(arg) on one of them while the calling fiber parks, and returns
 * once fn has returned (a cancel does not cut it short); outside a
 * loop's fibers, or with no helpers, it calls fn itself. */
struct sks__helpers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct sks__job *queue;
    bool stopping;
    pthread_t *threads;
    size_t n;
};
int sks__helpers_start(struct sks__helpers *h, size_t n);
/* Lets queued jobs finish, then joins the threads. */
void sks__helpers_stop(struct sks__helpers *h);
int sks__floop_offload(struct sks__helpers *h, void (*fn)(void *), void *arg);

#endif /* SKS_INTERNAL_H */
