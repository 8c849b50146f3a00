/*
 * sockserver.h - libsockserver: Python's socketserver for C.
 *
 * A server object (sks_server) owns the listening socket and the request
 * loop.  A handler class (sks_handler_class) owns the protocol.  Between
 * them sits a table of overridable hooks (sks_server_ops), one member per
 * method of Python's BaseServer, named as in Python.
 *
 * Conventions, for every function in this header unless it says otherwise:
 *   - Errors: functions that can fail return 0 (or a non-negative count) on
 *     success and a negative errno value on failure (-EINVAL, -EADDRINUSE,
 *     ...), or one of the SKS_E* codes below.  sks_strerror() names them.
 *     Nothing in the library prints, exits or aborts, except the default
 *     handle_error hook, which prints to stderr as documented.
 *   - Ownership is stated per type.
 *   - "Thread safety:" lines say which calls may run concurrently.
 *
 * MIT licence; see LICENSE.
 */
#ifndef SOCKSERVER_H
#define SOCKSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <sys/un.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SKS_EXTERN __attribute__((visibility("default")))
#else
#define SKS_EXTERN
#endif

#define SKS_VERSION_MAJOR 0
#define SKS_VERSION_MINOR 1
#define SKS_VERSION_PATCH 0

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Library-specific error codes.  They are negative like the -errno values
 * and far below any errno, so one int carries either.
 */
enum {
    SKS_EHANDLER = -20001, /* a request handler reported failure */
    SKS_EADDRESS = -20002, /* an address string could not be parsed */
    SKS_ECLOSED = -20003,  /* the server has been closed (server_close) */
    SKS_EUPGRADE = -20004, /* an upgrade's new process ended (or closed its
                              readiness pipe) before it was ready */
};

/*
 * Returns a static, human-readable description of an error code: a
 * negative errno value or an SKS_E* code (a positive errno is accepted too).
 * Never returns NULL.  Thread safety: safe from any thread.
 */
SKS_EXTERN const char *sks_strerror(int err);

/*
 * Returns the symbolic name of an error code ("ECONNRESET", "SKS_EHANDLER"),
 * or "E?" for an unknown one.  Never returns NULL.  Names and texts come
 * from the library's own table (every POSIX errno, and every Linux one on
 * Linux), so they are the same on every C library.  Thread safety: any.
 */
SKS_EXTERN const char *sks_errname(int err);

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */
/* ------------------------------------------------------------------------ */

/*
 * A socket address of any family this library serves: AF_INET, AF_INET6 or
 * AF_UNIX.  Plain data: copy it freely.  `len` is the meaningful length of
 * `u`; an unnamed Unix peer has len == sizeof(sa_family_t) (or 0).
 */
typedef struct sks_addr {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    } u;
} sks_addr;

/* Enough room for any address sks_addr_format() writes, with its NUL. */
#define SKS_ADDRSTRLEN 448

/*
 * Parses an address string into *out.  Accepted forms:
 *   "127.0.0.1:9000"     IPv4 literal and port
 *   "[::1]:9000"         IPv6 literal in brackets ("[fe80::1%lo]:9000" too)
 *   ":9000"              all IPv4 interfaces (as Python's ('', 9000))
 *   "localhost:9000"     a host name, resolved with getaddrinfo() (this may
 *                        block on name service); the first result is used
 *   "unix:/path/to.sock" a Unix socket path (relative paths are allowed)
 *   "unix:@name"         a Linux abstract socket name; "\xHH" escapes in the
 *                        name stand for arbitrary bytes (-EAFNOSUPPORT on
 *                        other systems, and in an SKS_PORTABLE build)
 *   "unix:"              the unnamed Unix address (as a peer, never to bind)
 * The port must be 0..65535; port 0 asks the kernel for a free port at bind.
 * Returns 0, SKS_EADDRESS for a malformed string, -ENAMETOOLONG for a Unix
 * path that does not fit, -EAFNOSUPPORT for an abstract name where there
 * are none, or -EHOSTUNREACH when a name does not resolve.
 * Thread safety: any.
 */
SKS_EXTERN int sks_addr_parse(const char *str, sks_addr *out);

/*
 * Formats an address in the syntax sks_addr_parse() reads, so that
 * parse(format(a)) == a: "127.0.0.1:54321", "[::1]:9000",
 * "unix:/tmp/s.sock", "unix:@name", "unix:" for an unnamed peer.  (One
 * exception: a relative path that begins with '@' is written "unix:./@x",
 * which names the same file, as "unix:@x" would be an abstract name.)
 * Writes at most cap bytes including the NUL.  Returns the string length,
 * -ENOSPC when cap is too small (SKS_ADDRSTRLEN always suffices), or
 * -EAFNOSUPPORT for another family.  Thread safety: any.
 */
SKS_EXTERN int sks_addr_format(const sks_addr *addr, char *buf, size_t cap);

/* ------------------------------------------------------------------------ */
/* Core types                                                                */
/* ------------------------------------------------------------------------ */

/*
 * The server.  Opaque.  Created by sks_server_new(), released by
 * sks_server_free().  The application owns it.
 */
typedef struct sks_server sks_server;

/*
 * One request: an accepted connection (stream servers) or one received
 * datagram plus the server socket (datagram servers).  Opaque.  The
 * library owns a request: it is created by get_request and ends when
 * sks_server_shutdown_request() has run; hooks and handlers may use it only
 * until then.
 */
typedef struct sks_request sks_request;

/*
 * One handler instance, created per request on the stack of the thread
 * that runs finish_request.  Opaque; valid only during setup/handle/finish.
 */
typedef struct sks_handler sks_handler;

/* Buffered reader and writer of a handler (rfile and wfile in Python). */
typedef struct sks_rfile sks_rfile;
typedef struct sks_wfile sks_wfile;

/* ------------------------------------------------------------------------ */
/* The hook table                                                            */
/* ------------------------------------------------------------------------ */

#define SKS_OPS_VERSION 2

/* A concurrency model's descriptor (sync, threading, forking, pool,
 * prefork).  Opaque: the mixin constructors and the predefined tables name
 * one in their table's `model`. */
typedef struct sks_model sks_model;

/*
 * The table of overridable hooks: one member per method of Python's
 * BaseServer, with Python's names and order of calls (see README).
 *
 * To override a hook, copy a variant's table, replace members, and pass the
 * copy to sks_server_new(); your hook calls the variant's own member as
 * "super", e.g. `return sks_tcp_ops.verify_request(srv, req) && mine(req);`.
 * The member functions of every exported table are also exported by name
 * (sks_tcp_get_request, ...), so tables can be built with static
 * designated initializers.  A table must outlive every server using it.
 *
 * Versions and required members (SQLite's iVersion discipline): the
 * server reads only the members the table's `version` defines (0 is read
 * as 1: every member before `model`), and refuses a version newer than
 * SKS_OPS_VERSION with -EINVAL.  Required, or -EINVAL: socket_type
 * (SOCK_STREAM or SOCK_DGRAM), server_bind, server_activate, get_request,
 * close_request and server_close, in the table and in every table a mixin
 * wrapped.  Every other hook may be NULL: it then runs BaseServer's
 * behaviour (the sks_base_* function of that name; serve_forever:
 * sks_base_serve_forever).  The server calls its own filled copy, made
 * at creation: changing the table afterwards changes nothing, and
 * sks_server_ops_of() still returns the table passed.
 *
 * Every hook receives the server.  Hooks that receive a request may use it
 * only as its ownership rule allows (see sks_request).
 */
typedef struct sks_server_ops {
    /* SKS_OPS_VERSION; lets the table grow without breaking the ABI. */
    unsigned version;
    /* Name for diagnostics ("TCPServer", "ThreadingUDPServer"). */
    const char *name;
    /* AF_INET (the address picks IPv4 or IPv6) or AF_UNIX. */
    int address_family;
    /* SOCK_STREAM or SOCK_DGRAM. */
    int socket_type;
    /*
     * The table a mixin wrapped (NULL in a transport's own table).  The
     * mixin's hooks delegate to it; see sks_threading_mixin().
     */
    const struct sks_server_ops *parent;

    /* Sets socket options and binds the socket to the server address, then
     * stores the real bound address (port 0 resolved).  0 or -errno. */
    int (*server_bind)(sks_server *srv);
    /* listen() for stream servers; nothing for datagram ones. */
    int (*server_activate)(sks_server *srv);
    /* Takes the next request: accept() or recvfrom().  On success stores a
     * new request in *out and returns 0.  -EAGAIN when nothing is pending.
     * Errors are not reported to handle_error, as in Python; the loop backs
     * off on descriptor/memory exhaustion instead of spinning. */
    int (*get_request)(sks_server *srv, sks_request **out);
    /* Returns true to process the request, false to refuse it (the loop
     * then calls shutdown_request and no handler runs).  Default: true. */
    bool (*verify_request)(sks_server *srv, sks_request *req);
    /* Takes ownership of req.  Default: finish_request, then
     * sks_server_shutdown_request.  The mixins run the same two steps in a
     * thread or child.  On a negative return the request has not been
     * shut down: the loop calls handle_error, then shutdown_request; zero
     * or positive is success. */
    int (*process_request)(sks_server *srv, sks_request *req);
    /* Runs the handler class on the request (setup, handle, finish).
     * Returns the handler's error (negative), or 0. */
    int (*finish_request)(sks_server *srv, sks_request *req);
    /* Ends the connection: SHUT_WR (stream), then close_request.  Does not
     * free req; the library does after this hook returns. */
    void (*shutdown_request)(sks_server *srv, sks_request *req);
    /* Closes the request's socket (stream); nothing for datagrams. */
    void (*close_request)(sks_server *srv, sks_request *req);
    /* Reports a failed request; err is the error code.  Default prints the
     * block documented at sks_base_handle_error to stderr.  May run in
     * request threads and forked children concurrently. */
    void (*handle_error)(sks_server *srv, sks_request *req, int err);
    /* Called by sks_server_handle_request() when its timeout expires. */
    void (*handle_timeout)(sks_server *srv);
    /* Called once per sks_server_serve_forever() loop turn, and by
     * sks_server_handle_request() while it waits at a concurrency bound
     * (so that a forking server reaps and can accept again). */
    void (*service_actions)(sks_server *srv);
    /* Closes the listening socket (and, in mixins, waits for requests). */
    void (*server_close)(sks_server *srv);

    /* Beyond Python.  Called for a request turned away by the overload
     * policy (SKS_OVERLOAD_REFUSE at max_connections or a mixin's bound),
     * before shutdown_request; a server can send a "busy" reply with
     * sks_request_reply().  Default: nothing. */
    void (*refuse_request)(sks_server *srv, sks_request *req);

    /* Python's serve_forever is a method too: the pre-fork mixin replaces
     * it with its supervisor.  NULL or sks_base_serve_forever: the loop
     * described at sks_server_serve_forever. */
    int (*serve_forever)(sks_server *srv, double poll_interval);

    /* Version 2.  The concurrency model this table adds to `parent`'s
     * (set by the mixin constructors and the predefined tables; copy it
     * with the table).  NULL: the model named by the table's own
     * process_request and serve_forever if they are the library's, else
     * none beyond the parent's (synchronous at the bottom). */
    const sks_model *model;
} sks_server_ops;

/* The transports' tables (Python's TCPServer, UDPServer, UnixStreamServer,
 * UnixDatagramServer). */
SKS_EXTERN extern const sks_server_ops sks_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_udp_ops;
SKS_EXTERN extern const sks_server_ops sks_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_unix_dgram_ops;

/* BaseServer's hooks, shared by every transport. */
SKS_EXTERN bool sks_base_verify_request(sks_server *srv, sks_request *req);
SKS_EXTERN int sks_base_process_request(sks_server *srv, sks_request *req);
SKS_EXTERN int sks_base_finish_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_base_shutdown_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_base_close_request(sks_server *srv, sks_request *req);
/*
 * Default handle_error: writes to stderr, in one piece,
 *   ----------------------------------------
 *   Exception occurred during processing of request from 127.0.0.1:54321
 *   Error: Connection reset by peer (ECONNRESET)
 *   ----------------------------------------
 * (the first two lines and the dashes as Python's).  req may be NULL, then
 * the address reads "unknown".  Thread safety: any.
 */
SKS_EXTERN void sks_base_handle_error(sks_server *srv, sks_request *req, int err);
SKS_EXTERN void sks_base_handle_timeout(sks_server *srv);
SKS_EXTERN void sks_base_service_actions(sks_server *srv);
SKS_EXTERN void sks_base_refuse_request(sks_server *srv, sks_request *req);
SKS_EXTERN int sks_base_serve_forever(sks_server *srv, double poll_interval);

/* TCPServer's hooks (UnixStreamServer uses them too, but for bind/close). */
SKS_EXTERN int sks_tcp_server_bind(sks_server *srv);
SKS_EXTERN int sks_tcp_server_activate(sks_server *srv);
SKS_EXTERN int sks_tcp_get_request(sks_server *srv, sks_request **out);
SKS_EXTERN void sks_tcp_shutdown_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_tcp_close_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_tcp_server_close(sks_server *srv);

/* UDPServer's hooks (UnixDatagramServer uses them too, but bind/close). */
SKS_EXTERN int sks_udp_server_activate(sks_server *srv);
SKS_EXTERN int sks_udp_get_request(sks_server *srv, sks_request **out);
SKS_EXTERN void sks_udp_shutdown_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_udp_close_request(sks_server *srv, sks_request *req);

/* Unix servers' bind and close: the socket-file policy (see
 * sks_server_set_unlink_stale and sks_server_set_unlink_on_close). */
SKS_EXTERN int sks_unix_server_bind(sks_server *srv);
SKS_EXTERN void sks_unix_server_close(sks_server *srv);

/* ------------------------------------------------------------------------ */
/* Handler classes                                                           */
/* ------------------------------------------------------------------------ */

#define SKS_HANDLER_VERSION 2

/*
 * A request-handler "class": Python's BaseRequestHandler and its
 * attributes.  Fill it with designated initializers; members left 0/NULL
 * take the defaults given.  Per request, the library creates an instance
 * and calls setup; if setup succeeded, handle; then finish, even when
 * handle failed.  Each returns zero or a positive value for success (a
 * byte count from sks_wfile_write is fine), or a negative error code (a
 * negative errno or SKS_EHANDLER); finish_request returns finish's error
 * if it has one, else handle's, else setup's, else 0.
 *
 * Every member may be NULL.  `version` is read as for sks_server_ops: 0
 * is read as 1, and a version newer than SKS_HANDLER_VERSION makes
 * sks_server_new refuse the class with -EINVAL.  The server keeps its own
 * copy, made at creation.
 *
 * The Stream and Datagram flavours are the setup/finish pairs below:
 *   { .setup = sks_stream_setup, .handle = my_handle,
 *     .finish = sks_stream_finish }
 * A setup override calls the flavour's setup first; a finish override calls
 * the flavour's finish last.
 */
typedef struct sks_handler_class {
    unsigned version;            /* SKS_HANDLER_VERSION (0 is read as 1) */
    const char *name;            /* for diagnostics; may be NULL */
    int (*setup)(sks_handler *h);  /* NULL: nothing */
    int (*handle)(sks_handler *h); /* NULL: nothing */
    int (*finish)(sks_handler *h); /* NULL: nothing */
    /* Stream flavour attributes (Python's StreamRequestHandler): */
    size_t rbufsize;  /* read buffer, and so the longest line readline can
                         return in one piece; 0: 8192 (Python's default) */
    size_t wbufsize;  /* 0: unbuffered, every write is sent in full at once
                         (Python's default); else a write buffer size */
    double timeout;   /* per-operation I/O timeout in seconds (rfile and
                         wfile; a datagram reply's wait for send-buffer
                         room); 0: none (so is INFINITY or any value over
                         INT_MAX).  See sks_handler_set_timeout */
    bool disable_nagle_algorithm; /* TCP_NODELAY on TCP connections */
    /* Version 2: a connection's deadlines (stream flavour), beside the
     * per-operation timeout; each 0 (or as timeout): none.  A class of
     * version 1 has neither. */
    double request_timeout; /* a whole request: once it has run this long,
                               its reads and writes fail with -ETIMEDOUT
                               however the bytes trickle.  A request starts
                               with the connection, or, when idle_timeout
                               is set, with its first byte */
    double idle_timeout;    /* how long the connection may wait for a
                               request's first byte: at the start, and
                               after sks_handler_await_request */
} sks_handler_class;

/*
 * Deadlines, and what a cut does.  When a connection's deadline (the
 * request's, or one set below) passes, the operation waiting fails with
 * -ETIMEDOUT, as does every later one until a new deadline is set; the
 * connection is counted in sks_stats.timed_out; and finish_request
 * returns -ETIMEDOUT whatever handle returned, so handle_error hears of
 * it once.  A cut while idle (no request in progress) is silent: counted,
 * but finish_request returns what handle returned, with -ETIMEDOUT read
 * as 0.  The per-operation timeout is the handler's own business, as in
 * Python: its -ETIMEDOUT reaches handle_error only if handle returns it.
 * Thread safety for the calls below: the handler's own thread, during the
 * handler calls, after the stream flavour's setup (else -EINVAL).
 */
/* A protocol serving many requests on one connection (HTTP keep-alive)
 * says a request has ended: the connection waits for the next one, for
 * up to idle_timeout, and the next request's deadline (request_timeout)
 * starts with its first byte, or at once if bytes of it are already
 * buffered (a pipelined request).  Without idle_timeout, the next
 * request's deadline starts now.  An idle connection may also be shed
 * when the server is at its bound (sks_server_set_overload_policy). */
SKS_EXTERN int sks_handler_await_request(sks_handler *h);
/* Sets the current request's deadline to `seconds` from now (INFINITY:
 * none), replacing request_timeout's: a protocol re-arms it per request,
 * extends it before a large body (see sks_deadline_for_rate), or gives
 * itself a moment to answer after a cut (an HTTP 408).  0 or -EINVAL
 * (NaN, negative). */
SKS_EXTERN int sks_handler_set_deadline(sks_handler *h, double seconds);
/* Seconds to allow for sending `bytes` at no less than `min_rate` bytes a
 * second, plus `slack` seconds: a send deadline for a slow reader.
 * INFINITY for a rate that is not positive. */
SKS_EXTERN double sks_deadline_for_rate(double bytes, double min_rate,
                                        double slack);

/* StreamRequestHandler: setup makes rfile/wfile on the connection (applies
 * timeout and TCP_NODELAY); finish flushes wfile (a failure to flush is
 * ignored, as in Python) and releases both. */
SKS_EXTERN int sks_stream_setup(sks_handler *h);
SKS_EXTERN int sks_stream_finish(sks_handler *h);

/* DatagramRequestHandler: setup makes rfile read the packet and wfile
 * collect the reply; finish sends the collected bytes (possibly none) to
 * the client in one datagram and returns sendto's error, if any (e.g. an
 * unnamed Unix peer: -EDESTADDRREQ), so handle_error reports it.  A reply
 * to a Unix peer never waits: when the peer's queue is full (it does not
 * read), the reply is dropped with -EAGAIN. */
SKS_EXTERN int sks_datagram_setup(sks_handler *h);
SKS_EXTERN int sks_datagram_finish(sks_handler *h);

/* Ready classes whose handle does nothing; copy and set .handle. */
SKS_EXTERN extern const sks_handler_class sks_stream_handler;
SKS_EXTERN extern const sks_handler_class sks_datagram_handler;

/* Instance fields (Python's self.server, self.request, ...). */
SKS_EXTERN sks_server *sks_handler_server(const sks_handler *h);
SKS_EXTERN sks_request *sks_handler_request(const sks_handler *h);
SKS_EXTERN const sks_addr *sks_handler_client_address(const sks_handler *h);
/* NULL unless a flavour's setup ran. */
SKS_EXTERN sks_rfile *sks_handler_rfile(const sks_handler *h);
SKS_EXTERN sks_wfile *sks_handler_wfile(const sks_handler *h);
/* One pointer of per-instance user state, NULL at the start of setup. */
SKS_EXTERN void *sks_handler_get_user(const sks_handler *h);
SKS_EXTERN void sks_handler_set_user(sks_handler *h, void *user);
/*
 * Changes this instance's per-operation I/O timeout (the class's .timeout,
 * which setup applied) for the operations that follow on its rfile and
 * wfile: each fails with -ETIMEDOUT after `seconds` without progress; 0 (or
 * INFINITY, or over INT_MAX): none.  E.g. a protocol that waits briefly for
 * a client's last bytes before closing.  Use this rather than a socket
 * option on sks_request_fd: the library keeps the timeout itself, and a
 * SO_RCVTIMEO set there does not shorten its reads.  0, or -EINVAL for a
 * negative or NaN timeout or before a flavour's setup ran.  Thread safety:
 * the handler's thread.
 */
SKS_EXTERN int sks_handler_set_timeout(sks_handler *h, double seconds);

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/* The connected socket (stream) or the server socket (datagram).  Use it
 * for socket options (for timeouts, sks_handler_set_timeout); do the I/O
 * through rfile/wfile. */
SKS_EXTERN int sks_request_fd(const sks_request *req);
SKS_EXTERN const sks_addr *sks_request_client_address(const sks_request *req);
/* Datagram requests: the packet (NULL and 0 for stream requests), and
 * whether the kernel truncated it to max_packet_size (MSG_TRUNC). */
SKS_EXTERN const void *sks_request_packet(const sks_request *req, size_t *len);
SKS_EXTERN bool sks_request_truncated(const sks_request *req);

/*
 * Sends n bytes to the request's client outside a handler: in full on a
 * stream connection, as one datagram to the client's address on a datagram
 * server.  For refuse_request and verify_request overrides that answer
 * "busy" or "denied".  0 or -errno; never SIGPIPE.
 */
SKS_EXTERN int sks_request_reply(sks_request *req, const void *buf, size_t n);

/* ------------------------------------------------------------------------ */
/* Readers and writers (rfile, wfile)                                        */
/* ------------------------------------------------------------------------ */

/*
 * Reads one line: bytes up to and including '\n', at most cap bytes (the
 * maximum line length, as Python's readline(limit)).  A longer line is
 * returned in pieces of cap bytes, none ending in '\n'.  Returns the number
 * of bytes stored (not NUL-terminated), 0 at end of input, or -errno
 * (-ETIMEDOUT after the handler's timeout).  Thread safety: one thread per
 * rfile.
 */
SKS_EXTERN ssize_t sks_rfile_readline(sks_rfile *r, void *buf, size_t cap);

/*
 * Zero-copy readline: sets *line to the next line inside the reader's
 * buffer, valid until the next call on r.  At most min(max, rbufsize)
 * bytes; returns the length, 0 at end of input, or -errno.
 */
SKS_EXTERN ssize_t sks_rfile_readline_view(sks_rfile *r, const char **line,
                                           size_t max);

/* Reads exactly n bytes unless end of input comes first (Python's
 * read(n)).  Returns the count read, 0 at end of input, or -errno. */
SKS_EXTERN ssize_t sks_rfile_read(sks_rfile *r, void *buf, size_t n);

/* Reads everything up to end of input into a new malloc'd buffer (*data,
 * caller frees) of at most max bytes; -EMSGSIZE if there is more. */
SKS_EXTERN ssize_t sks_rfile_read_all(sks_rfile *r, void **data, size_t max);

/* Writes all n bytes (buffered if wbufsize > 0; datagram: collected).
 * Returns n or -errno (-EPIPE when the peer has gone; never SIGPIPE). */
SKS_EXTERN ssize_t sks_wfile_write(sks_wfile *w, const void *buf, size_t n);

/* Sends what is buffered.  0 or -errno.  No-op for datagram wfiles (the
 * reply goes out in finish). */
SKS_EXTERN int sks_wfile_flush(sks_wfile *w);

/*
 * Writes count bytes of the file fd, from offset on, after what is
 * buffered (Python's socket.sendfile(file, offset, count)): the body of a
 * file response.  A body that fits in the free room of the write buffer is
 * read into it, so it leaves with the headers before it in one send; a
 * larger one goes out with sendfile(2), from the page cache without a copy
 * (read and send where sendfile does not apply; datagram: collected).  The
 * file position of fd is not used or moved.  Returns the count written:
 * count, or less only if the file ended first (it shrank meanwhile); or
 * -errno (-EPIPE when the peer has gone; never SIGPIPE; -ETIMEDOUT after
 * the handler's timeout; a read error of fd).  Thread safety: one thread
 * per wfile.
 */
SKS_EXTERN ssize_t sks_wfile_sendfile(sks_wfile *w, int fd, off_t offset,
                                      size_t count);

/* The socket under the writer (Python's wfile.fileno()); -1 if none. */
SKS_EXTERN int sks_wfile_fileno(const sks_wfile *w);

/* ------------------------------------------------------------------------ */
/* Servers                                                                   */
/* ------------------------------------------------------------------------ */

/* sks_server_new flags. */
enum {
    /* Do not bind and activate at creation: set options, then call
     * sks_server_bind_and_activate() (Python's bind_and_activate=False). */
    SKS_NO_BIND = 1u << 0,
};

/*
 * Creates a server for the transport/mixin table ops, serving address (see
 * sks_addr_parse) with the handler class handler.  Unless SKS_NO_BIND is in
 * flags, binds and activates at once; on failure everything is released
 * (no descriptor leaks) and *out is left NULL.  ops and handler must outlive
 * the server.  `user` is the server's user pointer (sks_server_user).
 * Returns 0, -EINVAL for a table or handler class it refuses (a version
 * too new, a NULL required member: see sks_server_ops; a stack of models
 * no mixin constructor would make), -EAFNOSUPPORT when the address family
 * does not suit ops (a unix: address with sks_tcp_ops), SKS_EADDRESS, or
 * the bind/listen error (-EADDRINUSE, -EACCES, ...).  Thread safety: any.
 */
SKS_EXTERN int sks_server_new(sks_server **out, const sks_server_ops *ops,
                              const char *address,
                              const sks_handler_class *handler, void *user,
                              unsigned flags);

/* server_bind then server_activate, through the table; on failure the
 * socket is closed (server_close).  For servers made with SKS_NO_BIND. */
SKS_EXTERN int sks_server_bind_and_activate(sks_server *srv);

/*
 * Closes the server if it is not closed yet (server_close through the
 * table) and releases it.  Daemon request threads still running keep the
 * memory alive until they end; nothing else may use srv afterwards.
 * NULL is a no-op.  Must not run while serve_forever runs.
 */
SKS_EXTERN void sks_server_free(sks_server *srv);

/*
 * Handles requests until shutdown is requested (Python's serve_forever):
 * each turn waits up to poll_interval seconds for a request or a shutdown
 * request, handles at most one request, then calls service_actions.
 * shutdown ends the wait at once; poll_interval only paces
 * service_actions.  Returns 0 after a shutdown, SKS_ECLOSED if the server
 * is closed, -EBUSY if another thread is serving.  Thread safety: one
 * serving thread per server.
 */
SKS_EXTERN int sks_server_serve_forever(sks_server *srv, double poll_interval);

/*
 * Asks serve_forever to stop and waits until it has returned (Python's
 * shutdown).  If serve_forever has not started yet, it waits for that run
 * to start and return, as Python does.  Called from the serving thread
 * itself (a handler of a synchronous server), it only requests the stop
 * and returns at once instead of deadlocking.  Does not close the socket:
 * call sks_server_close() too.  Thread safety: any thread.
 */
SKS_EXTERN void sks_server_shutdown(sks_server *srv);

/*
 * Requests a shutdown without waiting: async-signal-safe, for SIGINT and
 * SIGTERM handlers; errno is left as it was.  serve_forever returns within one loop turn.
 */
SKS_EXTERN void sks_server_request_shutdown(sks_server *srv);

/*
 * Handles one request, waiting up to the server's timeout (Python's
 * handle_request).  When the timeout passes with no request, calls
 * handle_timeout and returns -ETIMEDOUT.  Returns 0 when a request was
 * taken (whatever became of it), SKS_ECLOSED if closed.  While the server
 * is at a concurrency bound (max_children...) it runs service_actions
 * every few milliseconds, so that a forking server reaps its children and
 * serves the next request as soon as one ends.
 */
SKS_EXTERN int sks_server_handle_request(sks_server *srv);

/* server_close through the table, once; later calls are no-ops. */
SKS_EXTERN void sks_server_close(sks_server *srv);

/*
 * Dispatchers through the table, for hooks written by users.
 * sks_server_shutdown_request() calls shutdown_request and then releases
 * req: the request's last step.
 */
SKS_EXTERN int sks_server_finish_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_server_shutdown_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_server_handle_error(sks_server *srv, sks_request *req,
                                       int err);

/* Attributes. */

/* The listening (stream) or receiving (datagram) socket; -1 after close
 * (or after an upgrade handed it over).  Its SO_REUSEPORT siblings, if
 * the server has any (see FiberMixIn), are not listed. */
SKS_EXTERN int sks_server_fileno(const sks_server *srv);
/* The server address; after bind, the real one (port 0 resolved). */
SKS_EXTERN const sks_addr *sks_server_address(const sks_server *srv);
/* The family in use (AF_INET, AF_INET6, AF_UNIX) and SOCK_STREAM/DGRAM. */
SKS_EXTERN int sks_server_address_family(const sks_server *srv);
SKS_EXTERN int sks_server_socket_type(const sks_server *srv);
/* The table passed at creation (what the server calls is its filled copy
 * of it: see sks_server_ops). */
SKS_EXTERN const sks_server_ops *sks_server_ops_of(const sks_server *srv);
SKS_EXTERN void *sks_server_user(const sks_server *srv);

/*
 * Options read at bind (set them on a server made with SKS_NO_BIND):
 * SO_REUSEADDR (default off, as Python), SO_REUSEPORT (default off; only
 * AF_INET/AF_INET6, as Python), and the listen() backlog (default
 * 4096, whatever the libc's SOMAXCONN; the kernel clamps it to its own
 * limit, net.core.somaxconn on Linux).  Return 0, or -EINVAL for a bad value.
 */
SKS_EXTERN int sks_server_set_allow_reuse_address(sks_server *srv, bool on);
SKS_EXTERN int sks_server_set_allow_reuse_port(sks_server *srv, bool on);
SKS_EXTERN int sks_server_set_request_queue_size(sks_server *srv, int n);

/* handle_request's timeout in seconds; negative: none (the default). */
SKS_EXTERN int sks_server_set_timeout(sks_server *srv, double seconds);
SKS_EXTERN double sks_server_timeout(const sks_server *srv);

/* Datagram servers: the largest datagram read (default 8192, as Python).
 * Longer ones are truncated by the kernel; sks_request_truncated tells. */
SKS_EXTERN int sks_server_set_max_packet_size(sks_server *srv, size_t n);

/*
 * Unix servers' socket-file policy.  By default, as Python, bind fails with
 * -EADDRINUSE when the path exists, and server_close leaves the file.
 * unlink_stale: at bind, a path that is a socket nobody listens on (connect
 * is refused) is removed first; a live socket or a non-socket file is never
 * touched.  unlink_on_close: server_close removes the socket file this
 * server created, if it is still that file.  Abstract names have no file.
 */
SKS_EXTERN int sks_server_set_unlink_stale(sks_server *srv, bool on);
SKS_EXTERN int sks_server_set_unlink_on_close(sks_server *srv, bool on);

/* ------------------------------------------------------------------------ */
/* Concurrency mixins                                                        */
/* ------------------------------------------------------------------------ */

/*
 * A mixin wraps a table: it copies *base into *out, sets out->parent = base
 * and out->model to its concurrency model, and replaces process_request
 * (and server_close, service_actions, handle_timeout, which it extends and
 * which call the table it wrapped, never srv->ops->parent).  Everything else
 * stays base's, so user overrides in base survive, and the mixin runs each
 * request through the server's table (finish_request, handle_error,
 * shutdown_request), so overrides made in a copy of *out apply too.
 * base must outlive out.  Each model keeps its state from server creation
 * on, so its bound (max_threads...) holds before the first request.
 *
 * Stacking: a server runs at most one model that runs requests
 * (threading, forking, pool) and at most one that runs the loop
 * (prefork).  So prefork stacks with any one of the others, in either
 * order, and means the same both ways: pre-forked children, each running
 * the other model (threading over prefork = prefork over threading).  Any
 * other stack (threading over forking, a mixin over itself) is refused.
 * Each constructor returns 0, or -EINVAL for such a stack, for out or base
 * NULL, out == base, or a base version newer than SKS_OPS_VERSION.
 *
 * ThreadingMixIn: each request runs finish_request then shutdown_request in
 * a new thread; a failure goes to handle_error from that thread.
 *
 * Thread safety of a threading server: verify_request, process_request,
 * get_request, service_actions and handle_timeout run in the serving
 * thread only; finish_request, handle_error, shutdown_request and
 * close_request run in request threads, concurrently with each other and
 * with the serving thread.  A handler may read the server's attributes and
 * user pointer; shared user state needs its own locking.
 */
SKS_EXTERN int sks_threading_mixin(sks_server_ops *out,
                                   const sks_server_ops *base);
SKS_EXTERN int sks_threading_process_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_threading_service_actions(sks_server *srv);
SKS_EXTERN void sks_threading_server_close(sks_server *srv);

/*
 * ForkingMixIn: each request runs in a fork()ed child, which runs
 * finish_request (handle_error on failure) and shutdown_request, then
 * leaves with _exit(0), or _exit(1) after a failure: it never returns into
 * the loop or runs atexit handlers.  The parent closes its copy of the
 * request at once (close_request: no FIN), reaps its own children without
 * blocking every loop turn and on handle_timeout, and never waits for a
 * child it did not start.  Fork in a process that has threads gives the
 * child only the forking thread, as always with fork().
 */
SKS_EXTERN int sks_forking_mixin(sks_server_ops *out,
                                 const sks_server_ops *base);
SKS_EXTERN int sks_forking_process_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_forking_service_actions(sks_server *srv);
SKS_EXTERN void sks_forking_handle_timeout(sks_server *srv);
SKS_EXTERN void sks_forking_server_close(sks_server *srv);
/* Python's collect_children(): reaps finished children without blocking. */
SKS_EXTERN void sks_forking_collect_children(sks_server *srv);

/*
 * ThreadPoolMixIn (beyond Python): a pool of between min_workers and
 * max_workers threads, fed by a bounded queue of accepted requests.  A
 * worker runs finish_request (handle_error on failure) and
 * shutdown_request, as a request thread does.  Workers beyond min_workers
 * leave after idle_timeout seconds without work.  When max_workers are busy
 * and the queue holds queue_size requests, the overload policy applies:
 * stop accepting (backpressure, the default) or refuse.  server_close with
 * block_on_close finishes queued and running requests first; without it,
 * queued requests are closed unserved (counted as failed) and running ones
 * are not waited for.  Same thread-safety rules as the threading mixin.
 * sks_server_stats reports workers and queued.  The bound is on requests
 * in flight, max_workers + queue_size: `queued` alone may exceed
 * queue_size for the moment a worker that has just finished a request
 * takes to come back for the next.
 */
SKS_EXTERN int sks_pool_mixin(sks_server_ops *out, const sks_server_ops *base);
SKS_EXTERN int sks_pool_process_request(sks_server *srv, sks_request *req);
SKS_EXTERN void sks_pool_service_actions(sks_server *srv);
SKS_EXTERN void sks_pool_server_close(sks_server *srv);
/* Defaults: 4, 64, 30 s, 64.  min <= max, max >= 1.  0 or -EINVAL (also
 * once the pool has started, at its first request).  No effect on a
 * server that is not pooled.  Set before serving. */
SKS_EXTERN int sks_server_set_pool(sks_server *srv, size_t min_workers,
                                   size_t max_workers, double idle_timeout,
                                   size_t queue_size);

/*
 * PreForkMixIn (beyond Python): the parent binds and listens, then forks
 * `workers` children that each run serve_forever on the inherited socket
 * with the concurrency of the wrapped table (synchronous, threading or
 * pool: wrap sks_threading_tcp_ops to get threads in each child).  The
 * parent accepts nothing; it supervises: a child that dies is replaced, a
 * child that has accepted max_requests_per_child requests (0: never)
 * leaves and is replaced.  On shutdown the parent sends SIGTERM; each child
 * stops accepting, drains its requests for up to `timeout` seconds and
 * exits; stragglers get SIGKILL after timeout + 1 s.  The children share one
 * listening socket (see docs/DESIGN.md on the thundering herd).  Works for
 * every transport; datagram children read the shared socket.  Counters
 * (sks_server_stats) live in each child: the parent's stay at zero.
 */
SKS_EXTERN int sks_prefork_mixin(sks_server_ops *out,
                                 const sks_server_ops *base);
SKS_EXTERN int sks_prefork_serve_forever(sks_server *srv, double poll_interval);
/* workers 0: one per online CPU (the default); timeout default 5 s.
 * 0 or -EINVAL.  No effect on a server that does not pre-fork.  Set before
 * serving. */
SKS_EXTERN int sks_server_set_prefork(sks_server *srv, size_t workers,
                                      size_t max_requests_per_child,
                                      double timeout);
/* The pre-fork parent's children (pids), for supervision and tests: fills
 * up to cap pids, returns how many children are alive. */
SKS_EXTERN size_t sks_server_prefork_children(sks_server *srv, pid_t *pids,
                                              size_t cap);
SKS_EXTERN extern const sks_server_ops sks_prefork_tcp_ops;          /* sync children */
SKS_EXTERN extern const sks_server_ops sks_prefork_threading_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_prefork_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_prefork_udp_ops;

/*
 * FiberMixIn (no Python counterpart; gevent's StreamServer is the
 * nearest): each request runs finish_request then shutdown_request as a
 * fiber, a coroutine with its own stack, on one of `loops` threads, each
 * with its own epoll instance (poll(2) where there is no epoll, which
 * scales to a few thousand parked connections per loop).  The handler is written as for threads:
 * blocking reads and writes through rfile and wfile park the fiber until
 * the socket is ready or the operation's deadline passes (-ETIMEDOUT), so
 * an idle connection costs a few kilobytes, not a thread.  One line
 * switches a server: sks_fiber_tcp_ops for sks_threading_tcp_ops.
 *
 * - Loops: one per CPU the process may run on (its affinity mask where
 *   the platform has one, else the CPUs online), or
 *   sks_server_set_fiber_loops().  The loops share the listening socket,
 *   unless it has SO_REUSEPORT (sks_server_set_allow_reuse_port before
 *   bind, or an inherited socket that has it): then each loop gets a
 *   socket of its own on the same address, opened when serving starts,
 *   and the kernel spreads connections over them.  A server adopted with
 *   a set of N such sockets (an upgrade passes them all) runs max(loops,
 *   N) loops, loop i on socket i mod N: no socket is left with a queue
 *   nobody accepts from, and loops beyond N share.  Each loop accepts in
 *   batches and backs off on its own when descriptors run out.  A fiber
 *   stays on its loop for life, so thread-local state is safe in a
 *   handler.
 * - A handler must not block its loop: a blocking call outside rfile and
 *   wfile (a disk read, name resolution, a lock held long) stalls every
 *   connection of that loop.  Run it with sks_run_blocking(); sleep with
 *   sks_sleep().  The watchdog (sks_server_set_fiber_watchdog, default
 *   0.1 s) counts each time a fiber held its loop longer than that:
 *   sks_server_fiber_stalls().
 * - Stacks: 256 KiB each by default, reserved, not committed: a fiber
 *   costs the pages its deepest call touched (8-12 KiB for a handler
 *   parked in readline).  Below each stack is a PROT_NONE guard page: an
 *   overflow is a SIGSEGV at an address in that page, never silent
 *   corruption.  Size a stack (sks_server_set_fiber_stack_size) as the
 *   handler's deepest call chain and largest locals plus 16 KiB for the
 *   library and libc; under AddressSanitizer, frames grow 2-3 times.  Each
 *   stack is two memory mappings, so vm.max_map_count (65530 by default)
 *   caps a process at about 32,000 concurrent connections until raised.
 *
 * Thread safety of a fiber server: verify_request, process_request and
 * get_request run in the loops' acceptor fibers, finish_request,
 * handle_error, shutdown_request and close_request in request fibers: on
 * `loops` threads at once, so shared user state needs its own locking (but
 * never a lock held across a blocking call: see above).  service_actions
 * and handle_timeout run in the thread that called serve_forever.
 * In gdb: `source tools/sks_fibers_gdb.py`, then `sks-fibers` lists every
 * fiber of every loop (state, what it runs), `sks-fibers bt` with their
 * backtraces, `sks-fiber-bt FIBER` one parked fiber's.
 */
SKS_EXTERN int sks_fiber_mixin(sks_server_ops *out, const sks_server_ops *base);
SKS_EXTERN int sks_fiber_process_request(sks_server *srv, sks_request *req);
SKS_EXTERN int sks_fiber_serve_forever(sks_server *srv, double poll_interval);
SKS_EXTERN void sks_fiber_server_close(sks_server *srv);
SKS_EXTERN extern const sks_server_ops sks_fiber_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_fiber_udp_ops;
SKS_EXTERN extern const sks_server_ops sks_fiber_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_fiber_unix_dgram_ops;

/*
 * Fiber attributes, set before serving; 0 or -EINVAL; no effect on a
 * server of another model.  loops: 0 (the default) for one per CPU the
 * process may run on.  stack_size: bytes per fiber stack, 0 for 256 KiB,
 * else at least 16 KiB (see above).  watchdog: seconds a fiber may run
 * without yielding before it is reported (handle_error(srv, NULL,
 * -ETIME), once per stall, and counted in sks_server_fiber_stalls); 0
 * turns it off; default 0.1.
 */
SKS_EXTERN int sks_server_set_fiber_loops(sks_server *srv, size_t n);
SKS_EXTERN int sks_server_set_fiber_stack_size(sks_server *srv, size_t bytes);
SKS_EXTERN int sks_server_set_fiber_watchdog(sks_server *srv, double seconds);
SKS_EXTERN size_t sks_server_fiber_stalls(const sks_server *srv);
/*
 * Where the last stall was, for handle_error(srv, NULL, -ETIME) (which
 * runs after it is recorded) or later: the loop, its thread, and the
 * handler class's handle that the held fiber ran (NULL: the loop's
 * acceptor, that is verify_request, get_request or process_request, or a
 * handler class with no handle).  The fiber's own stack: attach gdb to
 * the process; the held fiber is the one running on that thread, so
 * `thread apply all bt` shows it (tools/sks_fibers_gdb.py lists the
 * others).  0 and *out; -ENOENT before any stall; -EINVAL (NULL, or not a
 * fiber server).  Thread safety: any thread.
 */
typedef struct sks_fiber_stall {
    size_t loop;                    /* 0 .. loops - 1 */
    pthread_t thread;               /* that loop's thread */
    int (*handle)(sks_handler *h);  /* what the held fiber ran */
} sks_fiber_stall;
SKS_EXTERN int sks_server_fiber_last_stall(const sks_server *srv,
                                           sks_fiber_stall *out);
/*
 * Read buffers (rbufsize bytes each) the fiber server's connections hold
 * now.  A fiber waiting for input with nothing buffered (a handler parked
 * in readline between requests) gives its buffer back to its loop's pool
 * and takes one when the bytes come, so idle connections hold none; a
 * partial line keeps its buffer.  0 for a server of another model, whose
 * connections each keep theirs.  Thread safety: any thread, but not
 * during sks_server_close or while serve_forever starts.
 */
SKS_EXTERN size_t sks_server_fiber_read_buffers(const sks_server *srv);

/*
 * For handlers, whatever the model.  sks_run_blocking runs fn(arg) and
 * returns when it has: under the fiber model on a helper thread while the
 * fiber parks (a loop never blocks on it), under the others in the
 * calling thread.  sks_sleep waits `seconds`: a fiber parks, a thread
 * sleeps.  0, or -EINVAL (NULL, negative or NaN); sks_sleep also
 * -ECANCELED when the fiber server is closing.  Thread safety: from the
 * handler's own thread or fiber.
 */
SKS_EXTERN int sks_run_blocking(sks_handler *h, void (*fn)(void *), void *arg);
SKS_EXTERN int sks_sleep(sks_handler *h, double seconds);

/* The eight predefined servers: Python's ThreadingTCPServer, ...,
 * ForkingUnixDatagramServer. */
SKS_EXTERN extern const sks_server_ops sks_threading_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_threading_udp_ops;
SKS_EXTERN extern const sks_server_ops sks_threading_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_threading_unix_dgram_ops;
SKS_EXTERN extern const sks_server_ops sks_forking_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_forking_udp_ops;
SKS_EXTERN extern const sks_server_ops sks_forking_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_forking_unix_dgram_ops;
/* And the pooled ones. */
SKS_EXTERN extern const sks_server_ops sks_pool_tcp_ops;
SKS_EXTERN extern const sks_server_ops sks_pool_udp_ops;
SKS_EXTERN extern const sks_server_ops sks_pool_unix_stream_ops;
SKS_EXTERN extern const sks_server_ops sks_pool_unix_dgram_ops;

/*
 * Mixin attributes.  block_on_close (both mixins, default on): server_close
 * waits for running request threads / children.  daemon_threads (default
 * off): request threads are not waited for.  max_threads (default 1024;
 * 0: no bound, as Python) and max_children (default 40): at the bound the
 * server stops accepting until a request ends; new connections wait in the
 * listen backlog.  Set them before serving.  Return 0 or -EINVAL.  An
 * option of a model the server does not run (max_children on a threading
 * server) is checked, then has no effect.
 */
SKS_EXTERN int sks_server_set_block_on_close(sks_server *srv, bool on);
SKS_EXTERN int sks_server_set_daemon_threads(sks_server *srv, bool on);
SKS_EXTERN int sks_server_set_max_threads(sks_server *srv, size_t n);

/*
 * The stack size of the threads that run requests: the threading mixin's
 * per-request threads and the pool's workers (a pre-forked child runs its
 * requests in its own main thread, on the process's stack).
 *
 * Default SKS_DEFAULT_THREAD_STACK_SIZE, 256 KiB, not the system's (8 MiB
 * on most Linux systems, from RLIMIT_STACK): glibc keeps only about 40 MiB
 * of ended threads' stacks for reuse, so with 8 MiB stacks a server
 * running more than a handful of requests at once maps a fresh stack, and
 * page-faults it in, for nearly every new thread.  256 KiB stacks are
 * reused, and 1,000 threads reserve 250 MiB of address space, not 8 GiB.
 *
 * The trade-off: a handler, with everything it calls, must fit in the
 * stack.  256 KiB holds the library's own frames (a stream handler's
 * buffers are on the heap) plus a 128 KiB local array, even under
 * AddressSanitizer, whose frames are larger.  Deep recursion, big local
 * buffers or a library that uses much stack (some regex, compression or
 * TLS code paths) need more: set it here (bytes, at least 16384; rounded
 * by the system to whole pages), or 0 for the system default.  Running out
 * of stack is a crash (SIGSEGV on the guard page), not an error return.
 * Returns 0 or -EINVAL (below 16384).  Set it before serving.
 */
#define SKS_DEFAULT_THREAD_STACK_SIZE ((size_t)256 * 1024)
SKS_EXTERN int sks_server_set_thread_stack_size(sks_server *srv, size_t bytes);
SKS_EXTERN int sks_server_set_max_children(sks_server *srv, size_t n);

/* Requests running now in threads or children (live, from any thread). */
SKS_EXTERN size_t sks_server_active_requests(const sks_server *srv);
/* Children not yet reaped (forking servers); thread-safe read. */
SKS_EXTERN size_t sks_server_active_children(const sks_server *srv);

/* ------------------------------------------------------------------------ */
/* Overload, counters and graceful drain (every server)                     */
/* ------------------------------------------------------------------------ */

/* What a server does at its concurrency bound. */
enum {
    /* Stop accepting until a request ends: new connections wait in the
     * kernel's listen backlog (their handshake completes there). */
    SKS_OVERLOAD_BACKPRESSURE = 0,
    /* Accept and turn away at once: refuse_request, then shutdown_request;
     * counted in `refused`. */
    SKS_OVERLOAD_REFUSE = 1,
    /* Keep-alive reuse, as nginx does with its idle connections: while a
     * new connection waits at the bound, shut down the connection idle the
     * longest (between requests: see sks_handler_await_request) so that a
     * slot frees; with none idle, as backpressure.  The shed handler sees
     * end of input; the connection counts in timed_out.  Threading and
     * pool servers (a forked child's connection is not the parent's to
     * shed).  A request whose first byte arrives as it is shed is cut, as
     * an HTTP client's keep-alive race it retries. */
    SKS_OVERLOAD_SHED_IDLE = 2,
};

/*
 * At most n requests in flight (0: no limit, the default), for every
 * server and mixin, on top of the mixin's own bound (max_threads,
 * max_children, the pool's size).  The policy applies to both bounds.
 * Return 0 or -EINVAL.  Set them before serving.
 */
SKS_EXTERN int sks_server_set_max_connections(sks_server *srv, size_t n);
SKS_EXTERN int sks_server_set_overload_policy(sks_server *srv, int policy);

/*
 * Live counters.  accepted: requests taken for processing (past
 * verify_request and the overload policy); refused: those turned away by
 * either; completed / failed: ended without / with handle_error (for a
 * forked child: exit status 0 / non-zero); active = accepted - completed -
 * failed, always.  queued: requests waiting for a pool worker; workers:
 * pool threads alive (0 for other servers).
 */
typedef struct sks_stats {
    size_t accepted, active, completed, failed, refused;
    size_t timed_out; /* connections cut at their deadline (see
                         "Deadlines"), idle ones included; each is also
                         completed or failed */
    size_t queued, workers;
} sks_stats;

/* Fills *out.  Thread safety: any thread, any time while srv exists. */
SKS_EXTERN void sks_server_stats(const sks_server *srv, sks_stats *out);

/*
 * Graceful drain: stops serve_forever (and waits for it to return, unless
 * called from the serving thread), lets requests in flight finish for up to
 * `timeout` seconds, then cuts the rest: shuts their connections down
 * (SHUT_RDWR) so handlers blocked on I/O see end of input, and sends
 * SIGTERM to forked children.  Waits up to one more second for the cut
 * requests to end.  *finished (if not NULL) gets the count of requests that
 * ended on their own during the drain, *cut the count cut.  Returns 0 when
 * nothing is left running, -ETIMEDOUT when a cut request still runs (a
 * handler not blocked on its connection).  The listening socket stays open:
 * call sks_server_close() (or free) after.  Called from the serving thread
 * (a synchronous server's handler) it would wait for its own request: it
 * returns -EDEADLK at once instead, doing nothing.  Thread safety: any one
 * thread.
 */
SKS_EXTERN int sks_server_drain(sks_server *srv, double timeout,
                                size_t *finished, size_t *cut);

/* ------------------------------------------------------------------------ */
/* Inherited sockets and socket activation                                   */
/* ------------------------------------------------------------------------ */

/*
 * Creates a server on a socket that is already bound (and, for a stream
 * server, already listening) instead of binding one: a socket inherited
 * from a supervisor, a parent process or systemd.  The socket's family and
 * type must suit ops (AF_INET or AF_INET6 for the TCP/UDP tables, AF_UNIX
 * for the Unix ones; SOCK_STREAM or SOCK_DGRAM as ops says), a stream
 * socket must be listening (SO_ACCEPTCONN) and a datagram socket bound.
 * The server sets FD_CLOEXEC on fd and makes a stream listener
 * non-blocking, as its own listeners are (a datagram socket is made
 * blocking, as its own are); sks_server_address() is the socket's
 * getsockname().  The options read at bind (reuse_address, queue size...)
 * no longer apply.  On success the server owns fd and closes it at
 * server_close; a Unix socket file it did not create is never removed.
 * On failure *out is NULL and fd is left open, still the caller's.
 * Returns 0, -EBADF, -ENOTSOCK, -EAFNOSUPPORT (family), -EPROTOTYPE
 * (type), -EINVAL (a stream socket not listening, a datagram socket not
 * bound, or a table or handler class refused as by sks_server_new),
 * -ENOMEM.  Thread safety: any.
 */
SKS_EXTERN int sks_server_new_from_fd(sks_server **out,
                                      const sks_server_ops *ops, int fd,
                                      const sks_handler_class *handler,
                                      void *user);

/* The first descriptor passed by socket activation (SD_LISTEN_FDS_START). */
#define SKS_LISTEN_FDS_START 3

/*
 * The systemd socket-activation protocol, read without libsystemd (as
 * sd_listen_fds_with_names): when LISTEN_PID is this process and
 * LISTEN_FDS is n, descriptors 3 .. 3+n-1 were passed to it, named by the
 * colon-separated LISTEN_FDNAMES ("unknown" when absent).  Sets FD_CLOEXEC
 * on each.  With unset_environment, removes LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES (whatever they held), so that children do not inherit
 * them.  If names is not NULL and n > 0, *names gets a malloc'd array of n
 * malloc'd strings plus a NULL (the caller frees each and the array);
 * otherwise *names is set to NULL.  Returns n (0: not activated, or
 * activated for another process), -EINVAL for malformed variables (LISTEN_FDS
 * not a number, a name count that does not match), -ENOMEM.  The
 * descriptors are then the caller's (sks_server_new_from_fd adopts one);
 * use this or sks_server_new_activated, not both for one activation.
 * Thread safety: reads and changes the environment, so call it at
 * start-up before other threads run (getenv/unsetenv are not thread-safe).
 */
SKS_EXTERN int sks_listen_fds(bool unset_environment, char ***names);

/*
 * Creates a server on a socket passed by socket activation: with name
 * NULL, the first passed socket not adopted yet whose family and type suit
 * ops (see sks_server_new_from_fd); else the first one not adopted yet
 * named `name` in LISTEN_FDNAMES (systemd's FileDescriptorName=, or
 * systemd-socket-activate --fdname).  A stream server also adopts every
 * later passed listener of the same name bound to the same address (its
 * SO_REUSEPORT siblings, as an upgrade passes a server's set): it accepts
 * from all of them, closes them with its own, and passes them all on an
 * upgrade, so that no sibling's queue is left unserved.  Reads the
 * variables as
 * sks_listen_fds(true, NULL) does when they are set for this process, so
 * several servers can each adopt one of the passed sockets, one call each.
 * Returns 0; -ENOENT when the process was not activated or no passed
 * socket is left (or has that name); for a socket found that does not
 * suit ops, the error of sks_server_new_from_fd (it stays available);
 * -EINVAL for malformed variables.  Thread safety: as sks_listen_fds.
 */
SKS_EXTERN int sks_server_new_activated(sks_server **out,
                                        const sks_server_ops *ops,
                                        const char *name,
                                        const sks_handler_class *handler,
                                        void *user);

/* ------------------------------------------------------------------------ */
/* Zero-downtime upgrade                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Hands the server's listening socket to a new program without losing a
 * connection (nginx's binary upgrade, tableflip): the program at argv[0]
 * (searched in PATH when it names no directory) is forked and executed
 * with argv, and adopts the same socket by socket activation; once it
 * serves, this server stops accepting.  The connections in the socket's
 * queue, and those arriving meanwhile, are accepted by one process or the
 * other: nothing is re-bound, so nothing is refused or reset.
 *
 * The server's listening sockets are passed, every one: its socket and
 * its SO_REUSEPORT siblings (a fiber server's per-loop sockets, see
 * FiberMixIn), n in all, as descriptors 3 .. 3+n-1, then the write end of
 * a readiness pipe at 3+n.  A sibling left behind would reset the
 * connections in its queue as it closed.  The successor's environment is
 * this process's (read from `environ` before the fork) with LISTEN_FDS=n,
 * LISTEN_FDNAMES (n times the name the server was activated under, else
 * "unknown"), LISTEN_PID (the successor's own pid: the forked child
 * writes its digits into room made for them, as nothing may be allocated
 * between fork and exec) and SKS_UPGRADE_FD=3+n.  Every descriptor the
 * library opens is close-on-exec, so only these cross the exec (one the
 * program opened itself without FD_CLOEXEC is inherited, as by any exec).
 * The child's signal mask is emptied before the exec; ignored signals
 * stay ignored, as with any exec.
 *
 * The successor adopts the sockets with sks_server_new_activated (the
 * siblings with the first: see there), which also takes the readiness
 * pipe (so does sks_listen_fds, for sks_server_new_from_fd), and says
 * "ready" when its first serve_forever starts,
 * after the adoption and its own set-up, before its first accept: one
 * byte on the pipe, which it then closes.  Then this process's loop
 * stops accepting (serve_forever returns 0, sks_server_upgraded says
 * true) and closes its copies of the listening sockets as it ends (a Unix
 * socket file is never removed: the successor listens on it).  Requests
 * in flight run on: drain them (sks_server_drain, with the drain deadline
 * you use at shutdown) and exit.
 *
 * If the successor ends before it is ready, or closes the pipe, or is not
 * ready within `timeout` seconds (it is then killed with SIGKILL), this
 * server goes on serving, nothing changed; the successor is reaped.  One
 * upgrade at a time.
 *
 * sks_server_upgrade does all of it in the calling thread, waiting for
 * the successor; the serving loop goes on meanwhile in its own thread.
 * Returns 0 once the successor is ready (a loop serving the server is
 * asked to stop; with none, the socket is closed before it returns);
 * -ETIMEDOUT; SKS_EUPGRADE (the successor ended, or closed the pipe,
 * before it was ready); the exec's error (-ENOENT, -EACCES, -ENOEXEC...);
 * -EBUSY (an upgrade is under way); -EALREADY (the socket was handed over
 * already); -EPERM (called in a forked or pre-forked child of the
 * server); SKS_ECLOSED; -ECANCELED (the server was closed meanwhile);
 * -EINVAL (srv, argv or argv[0] NULL, timeout not > 0); -ENOMEM; fork's
 * error.  Thread safety: any thread; it reads the environment, so no
 * other thread may change it meanwhile (setenv).
 */
SKS_EXTERN int sks_server_upgrade(sks_server *srv, char *const argv[],
                                  double timeout);

/* The default readiness timeout of a requested upgrade, in seconds. */
#define SKS_UPGRADE_TIMEOUT 10.0

/*
 * The command and readiness timeout (0: SKS_UPGRADE_TIMEOUT) of requested
 * upgrades; argv (main's, typically) must outlive the server.  NULL argv:
 * none (a request is then reported to handle_error as -EINVAL).  0 or
 * -EINVAL.  Set it before serving.
 */
SKS_EXTERN int sks_server_set_upgrade(sks_server *srv, char *const argv[],
                                      double timeout);

/*
 * Requests an upgrade with the command set by sks_server_set_upgrade,
 * without waiting: async-signal-safe, for a SIGUSR2 handler (errno is
 * left as it was).  The serving loop (of any model; a pre-forked server's
 * supervisor) starts it within one turn, on a thread of its own, and goes
 * on serving until the successor is ready.  A failure is reported to
 * handle_error(srv, NULL, err) with the codes of sks_server_upgrade (the
 * default prints it); a request while one is under way is reported as
 * -EBUSY.  A forked or pre-forked child of the server ignores requests.
 */
SKS_EXTERN void sks_server_request_upgrade(sks_server *srv);

/* True once the listening socket has been handed to a successor: a
 * serve_forever that returned 0 returned for that, not for a shutdown.
 * Thread safety: any. */
SKS_EXTERN bool sks_server_upgraded(const sks_server *srv);

/* ------------------------------------------------------------------------ */
/* PROXY protocol (behind HAProxy and other load balancers)                  */
/* ------------------------------------------------------------------------ */

/* Versions for sks_server_set_proxy_protocol. */
enum {
    SKS_PROXY_V1 = 1u << 0,  /* the text header, "PROXY TCP4 ...\r\n" */
    SKS_PROXY_V2 = 1u << 1,  /* the binary header */
    SKS_PROXY_ANY = SKS_PROXY_V1 | SKS_PROXY_V2,
};

/* The longest PROXY header accepted: a v1 line is at most 107 bytes by the
 * specification; a v2 header (16 bytes, addresses and TLVs) longer than
 * this is refused as oversized. */
#define SKS_PROXY_HEADER_MAX 2048

/*
 * HAProxy's PROXY protocol (versions 1 and 2, doc/proxy-protocol.txt),
 * for stream servers behind a load balancer that sends it (HAProxy's
 * send-proxy / send-proxy-v2).  With versions non-zero, every accepted
 * connection must start with a PROXY header of one of those versions; 0
 * (the default) turns it off.  The header is read in finish_request,
 * before the handler's setup, in the request's own thread or child (a
 * threading, pool or forking server never blocks its accept loop on it; a
 * synchronous server waits for it up to the proxy timeout).  Exactly the
 * header's bytes are consumed, so rfile starts at the payload.
 *
 * Then the request's client address (sks_handler_client_address,
 * sks_request_client_address, handle_error's report) is the original
 * client's from the header, and sks_request_proxy_address() is the
 * connection's real peer, the proxy.  A v2 LOCAL command (a health check),
 * a v1 UNKNOWN line, and a v2 header of the UNSPEC family or protocol keep
 * the real peer as the client address.  v2 TLVs are checked for framing
 * and skipped; a CRC32C TLV is verified.
 *
 * A missing, malformed, truncated, oversized or wrong-version header ends
 * the request before its handler runs: finish_request returns -EPROTO
 * (-EMSGSIZE for oversized, -ETIMEDOUT when the header is not complete
 * within the proxy timeout, -EACCES for a peer outside the trusted
 * proxies), so handle_error reports it and the connection is closed.
 * verify_request runs before the header is read and sees the proxy's
 * address.  Returns 0, -EINVAL for unknown bits, -EOPNOTSUPP for a
 * datagram server.  Set it before serving.
 */
SKS_EXTERN int sks_server_set_proxy_protocol(sks_server *srv,
                                             unsigned versions);

/* How long a PROXY header may take to arrive in full, in seconds, from
 * the start of finish_request: > 0, default 5 (the specification asks for
 * at least 3, to cover a TCP retransmit).  0 or -EINVAL.  Set it before
 * serving. */
SKS_EXTERN int sks_server_set_proxy_timeout(sks_server *srv, double seconds);

/*
 * Adds a trusted proxy: an IPv4 or IPv6 address, or a network in CIDR
 * form ("127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8").  Once any is added,
 * a PROXY-protocol connection whose real peer is not in the list is
 * refused (-EACCES) before its header is read; an IPv4-mapped IPv6 peer
 * (::ffff:a.b.c.d) matches the IPv4 entries.  Connections over a Unix
 * socket are not filtered: its file permissions say who may connect.
 * Up to 16 entries.  Returns 0, SKS_EADDRESS for a malformed entry,
 * -ENOSPC when the list is full.  Set it before serving.
 */
SKS_EXTERN int sks_server_add_trusted_proxy(sks_server *srv,
                                            const char *network);

/* The connection's real peer (the proxy) once a PROXY header has been
 * read for req; NULL when the server does not use the PROXY protocol (or
 * before the header is read, as in verify_request). */
SKS_EXTERN const sks_addr *sks_request_proxy_address(const sks_request *req);


/* ------------------------------------------------------------------------ */
/* Transports                                                                */
/* ------------------------------------------------------------------------ */

/*
 * How a stream connection's bytes move, under rfile and wfile: the plain
 * kernel socket by default, or a layer such as TLS (libsockserver_tls,
 * sockserver_tls.h) that a server selects with sks_server_set_transport.
 * This is the one seam such a layer needs; the core names no TLS library.
 *
 * A connection is an sks_conn: its socket, its per-operation timeout and
 * its deadlines (request_timeout, idle_timeout, sks_handler_set_deadline),
 * owned by the handler instance and valid during the handler calls.  A
 * transport does its I/O with the sks_conn_*_once calls below, one system
 * call each that never raises SIGPIPE, and waits with sks_conn_wait, the
 * library's one wait: it keeps the connection's deadlines, and under the
 * fiber model it parks the fiber instead of blocking the thread.
 */
typedef struct sks__conn sks_conn;

#define SKS_TRANSPORT_VERSION 2

/*
 * A transport's table (const, designated initializers).  Every member but
 * recv and send may be NULL.  Thread safety: each member runs in the
 * request's own thread, child or fiber, never two at once for one
 * connection.
 *
 *   start     In the worker, after the PROXY header (if any) and before
 *             the handler's setup returns, with the connection's deadline
 *             set to the start timeout given to sks_server_set_transport
 *             (a TLS handshake).  Makes the per-connection state (*state,
 *             later read with sks_conn_state).  0, or -errno, after which
 *             nothing of it is left and the request ends with that error
 *             (handle_error reports it), except that a cut at the start
 *             deadline is counted in timed_out and is silent, as an idle
 *             cut is.  arg: as given to sks_server_set_transport.
 *   recv      Up to n bytes (n > 0): the count, 0 at a clean end of input,
 *             or -errno (-ETIMEDOUT at a deadline); waits as needed.
 *   send      Some of n bytes (n > 0): the count (> 0), or -errno.
 *   send_file Up to n bytes of in_fd from *offset (advanced): the count, 0
 *             at end of file, or -errno; -ENOSYS (or NULL) makes
 *             sks_wfile_sendfile read the file and send it through send.
 *   shutdown  Ends the stream in this transport's terms (a TLS
 *             close_notify), without waiting for the peer; at the stream
 *             flavour's finish, after the last flush.
 *   close     Releases the per-connection state; always called once after
 *             a successful start, whatever became of the connection.  The
 *             socket itself is closed by the server (shutdown_request).
 *   await_input  (version 2) Waits, holding no buffer of the caller's,
 *             until recv would not wait for the peer (input the transport
 *             holds already, bytes or an end on the socket): 0, or -errno
 *             (-ETIMEDOUT at the deadline, as recv).  0 may be early: recv
 *             then waits itself.  Under the fiber model the stream layer
 *             calls it before each read with nothing buffered, so that an
 *             idle connection holds no read buffer, as a plain one does.
 *             NULL (or a version-1 table): the connection keeps its
 *             buffer.
 */
typedef struct sks_transport {
    unsigned version;            /* SKS_TRANSPORT_VERSION */
    const char *name;
    int (*start)(sks_conn *c, void *arg, void **state);
    ssize_t (*recv)(sks_conn *c, void *buf, size_t n);
    ssize_t (*send)(sks_conn *c, const void *buf, size_t n);
    ssize_t (*send_file)(sks_conn *c, int in_fd, off_t *offset, size_t n);
    void (*shutdown)(sks_conn *c);
    void (*close)(sks_conn *c);
    int (*await_input)(sks_conn *c);   /* version 2 */
} sks_transport;

/* The plain socket transport, every connection's unless the server says
 * otherwise: what a layered transport's members may call as "super". */
SKS_EXTERN extern const sks_transport sks_plain_transport;

/*
 * Every stream connection of srv from now on uses t, with arg handed to
 * its start, which must finish within start_timeout seconds (0, negative,
 * NaN or INFINITY: no limit of its own).  t NULL: plain sockets again.
 * The table is used as given, not copied: it must outlive the server.
 * Works with every concurrency model, since start runs in the worker.
 * 0; -EINVAL for a version newer than SKS_TRANSPORT_VERSION or a NULL
 * recv or send; -EOPNOTSUPP for a datagram server.  Thread safety: before
 * serving, on the thread that configures the server.
 */
SKS_EXTERN int sks_server_set_transport(sks_server *srv,
                                        const sks_transport *t, void *arg,
                                        double start_timeout);

/* The calls below, for a transport's members and the handler.  Thread
 * safety: the request's own thread, child or fiber, during its handler
 * calls (and its transport's start).  The handler's connection: NULL
 * unless the stream flavour's setup ran. */
SKS_EXTERN sks_conn *sks_handler_conn(sks_handler *h);
/* The connection's socket, transport, and the state its start made. */
SKS_EXTERN int sks_conn_fd(const sks_conn *c);
SKS_EXTERN const sks_transport *sks_conn_transport(const sks_conn *c);
SKS_EXTERN void *sks_conn_state(const sks_conn *c);
/* One attempt to receive up to n bytes on the socket: the count, 0 at end
 * of input, -EAGAIN when none came, or -errno; EINTR is retried.  On a
 * blocking socket (every model but fibers) it may block in the kernel up
 * to the operation's deadline (then -EAGAIN, and sks_conn_wait reports
 * the timeout); on a fiber's non-blocking socket it never waits. */
SKS_EXTERN ssize_t sks_conn_recv_once(sks_conn *c, void *buf, size_t n);
/* One attempt to send up to n bytes, as sks_conn_recv_once, never raising
 * SIGPIPE (a dead peer is -EPIPE or -ECONNRESET): the count, -EAGAIN when
 * the send buffer stayed full, or -errno. */
SKS_EXTERN ssize_t sks_conn_send_once(sks_conn *c, const void *buf, size_t n);
/* Waits until the socket is readable (POLLIN) or writable (POLLOUT), as
 * events says, through the library's wait (a fiber parks): 0 when it may
 * be, -ETIMEDOUT at the operation's deadline (the per-operation timeout
 * from the sks_conn_*_once attempt just before, or from this call if none,
 * or the connection's deadline, whichever is nearer),
 * -ECANCELED when the server closes, or -errno. */
SKS_EXTERN int sks_conn_wait(sks_conn *c, short events);

#ifdef __cplusplus
}
#endif

#endif /* SOCKSERVER_H */
