/*
 * stream.c - the buffered reader and writer (rfile, wfile) and the Stream
 * handler flavour (Python's StreamRequestHandler).  The reader also serves
 * datagrams, over the packet in memory (datagram.c).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_RBUFSIZE 8192

/* ------------------------------------------------------------------------ */
/* Reader                                                                    */

/* A lent buffer over a layered transport (TLS): given back while the
 * transport waits for input, taken again to read it. */
static ssize_t recv_layered_lent(sks_rfile *r)
{
    sks__wait_give(r->buf, r->cap);
    r->buf = NULL;
    int err = r->conn->transport->await_input(r->conn);
    if (err != 0)
        return err;
    if ((r->buf = sks__wait_take(r->cap)) == NULL)
        return -ENOMEM;
    return sks__conn_recv(r->conn, r->buf, r->cap);
}

/* Reads more input after what is buffered.  Returns bytes added, 0 at end
 * of input, or -errno. */
static ssize_t fill(sks_rfile *r)
{
    ssize_t n;

    if (r->eof)
        return 0;
    if (r->pos == r->end) {
        /* Nothing buffered: a lent buffer goes back while the read waits
         * (an idle fiber holds none; see sks__conn_recv_lent). */
        r->pos = r->end = 0;
        n = !r->lent ? sks__conn_recv(r->conn, r->buf, r->cap)
            : r->conn->transport == &sks_plain_transport
                ? sks__conn_recv_lent(r->conn, &r->buf, r->cap)
                : recv_layered_lent(r);
    } else {
        if (r->end == r->cap && r->pos > 0) {
            memmove(r->buf, r->buf + r->pos, r->end - r->pos);
            r->end -= r->pos;
            r->pos = 0;
        }
        n = sks__conn_recv(r->conn, r->buf + r->end, r->cap - r->end);
    }
    if (n == 0)
        r->eof = true;
    if (n > 0)
        r->end += (size_t)n;
    return n;
}

ssize_t sks_rfile_readline_view(sks_rfile *r, const char **line, size_t max)
{
    size_t limit = max < r->cap ? max : r->cap;
    size_t scanned = 0;

    if (limit == 0)
        return -EINVAL;
    for (;;) {
        size_t avail = r->end - r->pos;
        size_t upto = avail < limit ? avail : limit;
        /* Nothing new to scan (and a lent buffer may be NULL then). */
        char *nl = upto > scanned
                       ? memchr(r->buf + r->pos + scanned, '\n', upto - scanned)
                       : NULL;
        if (nl != NULL || avail >= limit || r->eof) {
            size_t n = nl ? (size_t)(nl - (r->buf + r->pos)) + 1 : upto;
            *line = r->buf + r->pos;
            r->pos += n;
            return (ssize_t)n;
        }
        scanned = upto;
        /* The line so far must fit with room for `limit` bytes. */
        if (r->cap - r->pos < limit) {
            memmove(r->buf, r->buf + r->pos, avail);
            r->pos = 0;
            r->end = avail;
        }
        ssize_t n = fill(r);
        if (n < 0)
            return n;
    }
}

ssize_t sks_rfile_readline(sks_rfile *r, void *buf, size_t cap)
{
    char *out = buf;
    size_t got = 0;

    if (cap == 0)
        return -EINVAL;
    while (got < cap) {
        const char *piece;
        ssize_t n = sks_rfile_readline_view(r, &piece, cap - got);
        if (n < 0)
            return got > 0 ? (ssize_t)got : n;
        if (n == 0)
            break;
        memcpy(out + got, piece, (size_t)n);
        got += (size_t)n;
        if (out[got - 1] == '\n')
            break;
    }
    return (ssize_t)got;
}

ssize_t sks_rfile_read(sks_rfile *r, void *buf, size_t n)
{
    char *out = buf;
    size_t got = 0;

    while (got < n) {
        size_t avail = r->end - r->pos;
        if (avail > 0) {
            size_t take = avail < n - got ? avail : n - got;
            memcpy(out + got, r->buf + r->pos, take);
            r->pos += take;
            got += take;
            continue;
        }
        if (r->eof)
            break;
        ssize_t k;
        if (n - got >= r->cap) {
            /* Large reads bypass the buffer: no copy. */
            k = sks__conn_recv(r->conn, out + got, n - got);
            if (k == 0)
                r->eof = true;
            if (k > 0)
                got += (size_t)k;
        } else {
            k = fill(r);
        }
        if (k < 0)
            return got > 0 ? (ssize_t)got : k;
    }
    return (ssize_t)got;
}

ssize_t sks_rfile_read_all(sks_rfile *r, void **data, size_t max)
{
    size_t cap = 0, len = 0;
    size_t ceiling = max < SIZE_MAX ? max + 1 : max; /* one more: overflow */
    char *out = NULL;

    *data = NULL;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 4096;
            if (ncap > ceiling)
                ncap = ceiling;
            char *p = ncap > cap ? realloc(out, ncap ? ncap : 1) : NULL;
            if (p == NULL) {
                free(out);
                return ncap > cap ? -ENOMEM : -EMSGSIZE;
            }
            out = p;
            cap = ncap;
        }
        ssize_t n = sks_rfile_read(r, out + len, cap - len);
        if (n < 0) {
            free(out);
            return n;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            free(out);
            return -EMSGSIZE;
        }
    }
    *data = out;
    return (ssize_t)len;
}

/* ------------------------------------------------------------------------ */
/* Writer                                                                    */

static int collect(sks_wfile *w, const void *buf, size_t n)
{
    if (w->len + n > w->cap) {
        size_t ncap = w->cap ? w->cap : 512;
        while (ncap < w->len + n)
            ncap *= 2;
        /* Out of the inline start: move to the heap. */
        char *p = w->borrowed ? malloc(ncap) : realloc(w->buf, ncap);
        if (p == NULL)
            return -ENOMEM;
        if (w->borrowed && w->len > 0)
            memcpy(p, w->buf, w->len);
        w->borrowed = false;
        w->buf = p;
        w->cap = ncap;
    }
    memcpy(w->buf + w->len, buf, n);
    w->len += n;
    return 0;
}

ssize_t sks_wfile_write(sks_wfile *w, const void *buf, size_t n)
{
    int err;

    if (n > SSIZE_MAX)
        return -EINVAL;
    /* Nothing to do; and a datagram's reply buffer may still be NULL,
     * where even NULL + 0 is undefined (found by fuzz_datagram). */
    if (n == 0)
        return 0;
    if (w->collect) {
        err = collect(w, buf, n);
    } else if (w->cap == 0) {
        err = sks__conn_send_all(w->conn, buf, n);
    } else if (w->len + n <= w->cap) {
        memcpy(w->buf + w->len, buf, n);
        w->len += n;
        err = 0;
    } else {
        err = sks_wfile_flush(w);
        if (err == 0 && n >= w->cap)
            err = sks__conn_send_all(w->conn, buf, n);
        else if (err == 0) {
            memcpy(w->buf, buf, n);
            w->len = n;
        }
    }
    return err != 0 ? err : (ssize_t)n;
}

int sks_wfile_flush(sks_wfile *w)
{
    if (w->collect || w->len == 0)
        return 0;
    int err = sks__conn_send_all(w->conn, w->buf, w->len);
    w->len = 0;
    return err;
}

/* pread(2), EINTR retried: bytes read, 0 at end of file, or -errno. */
static ssize_t pread_some(int fd, void *buf, size_t n, off_t offset)
{
    for (;;) {
        ssize_t r = pread(fd, buf, n, offset);
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
    }
}

/* The copying path, through sks_wfile_write: for datagram replies and for
 * files sendfile(2) does not take. */
static ssize_t copy_file(sks_wfile *w, int fd, off_t offset, size_t count)
{
    char chunk[16384];
    size_t done = 0;

    while (done < count) {
        size_t want = count - done < sizeof(chunk) ? count - done
                                                   : sizeof(chunk);
        ssize_t n = pread_some(fd, chunk, want, offset + (off_t)done);
        if (n <= 0)
            return n < 0 ? n : (ssize_t)done;
        ssize_t err = sks_wfile_write(w, chunk, (size_t)n);
        if (err < 0)
            return err;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

ssize_t sks_wfile_sendfile(sks_wfile *w, int fd, off_t offset, size_t count)
{
    size_t done = 0;

    if (count > SSIZE_MAX || offset < 0)
        return -EINVAL;
    if (w->collect)
        return copy_file(w, fd, offset, count);
    /* A small body joins the headers in the buffer: one send for both,
     * where flush + sendfile would cost two calls and two segments. */
    if (count <= w->cap - w->len) {
        while (done < count) {
            ssize_t n = pread_some(fd, w->buf + w->len, count - done,
                                   offset + (off_t)done);
            if (n <= 0)
                return n < 0 ? n : (ssize_t)done;
            w->len += (size_t)n;
            done += (size_t)n;
        }
        return (ssize_t)done;
    }
    int err = sks_wfile_flush(w);
    if (err != 0)
        return err;
    while (done < count) {
        ssize_t n = sks__conn_sendfile(w->conn, fd, &offset, count - done);
        /* EINVAL/ENOSYS before any byte: a file sendfile cannot read
         * (some special files); copy it instead. */
        if ((n == -EINVAL || n == -ENOSYS) && done == 0)
            return copy_file(w, fd, offset, count);
        if (n <= 0)
            return n < 0 ? n : (ssize_t)done;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int sks_wfile_fileno(const sks_wfile *w)
{
    return w->conn->fd;
}

/* ------------------------------------------------------------------------ */
/* Stream flavour                                                            */

int sks_stream_setup(sks_handler *h)
{
    const sks_handler_class *cls = h->cls;
    int fd = h->request->fd;
    int family = h->server->address.u.sa.sa_family;

    if (cls->disable_nagle_algorithm &&
        (family == AF_INET || family == AF_INET6)) {
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
            return -errno;
    }
    /* The timeout is a deadline the I/O layer keeps, per operation, not a
     * socket option set here: see "Waiting in one place" in DESIGN.md. */
    h->conn = sks__conn_make(fd, cls->timeout);
    /* Only shedding reads what a connection waits on: elsewhere it would
     * cost every read and write two clock reads and two atomic stores. */
    if (h->server->overload_policy == SKS_OVERLOAD_SHED_IDLE)
        h->conn.watch = &h->request->wait;
    /* The server's transport (a TLS handshake) before any request. */
    int err = sks__conn_start(&h->conn, h->server);
    if (err != 0)
        return err;
    /* The server's copy of the class: a version-1 class reads as none. */
    sks__conn_limits(&h->conn, cls->request_timeout, cls->idle_timeout);
    /* Where the wait backend lends read buffers (fibers), the first read
     * takes one: a connection that never sends holds none.  On the plain
     * transport, whose read is the socket's, and on one that can wait
     * for input without a buffer (await_input); another keeps its own. */
    const sks_transport *t = h->conn.transport;
    h->rf = (struct sks_rfile){
        .conn = &h->conn, .owned = true,
        .lent = sks__wait_lends() &&
                (t == &sks_plain_transport ||
                 (t->version >= 2 && t->await_input != NULL)) };
    h->rf.cap = cls->rbufsize ? cls->rbufsize : DEFAULT_RBUFSIZE;
    h->rf.buf = h->rf.lent ? NULL : malloc(h->rf.cap);
    h->wf = (struct sks_wfile){ .conn = &h->conn, .cap = cls->wbufsize };
    if (cls->wbufsize > 0)
        h->wf.buf = malloc(cls->wbufsize);
    if ((h->rf.buf == NULL && !h->rf.lent) ||
        (cls->wbufsize > 0 && h->wf.buf == NULL)) {
        free(h->rf.buf);
        free(h->wf.buf);
        sks__conn_close(&h->conn);
        return -ENOMEM;
    }
    h->rfile = &h->rf;
    h->wfile = &h->wf;
    return 0;
}

int sks_stream_finish(sks_handler *h)
{
    if (h->wfile == NULL)
        return 0;
    /* A final error such as a reset peer is expected here and ignored, as
     * Python's StreamRequestHandler.finish does (bpo-14574). */
    (void)sks_wfile_flush(h->wfile);
    sks__conn_end(&h->conn);
    sks__release_files(h);
    return 0;
}

const sks_handler_class sks_stream_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "StreamRequestHandler",
    .setup = sks_stream_setup,
    .finish = sks_stream_finish,
};
