/*
 * http_file_server - a small HTTP/1.1 static file server: the C twin of
 * `python3 -m http.server`, and what a real protocol looks like on
 * libsockserver.
 *
 *   build/examples/http_file_server [OPTION VALUE]... [--pool|--fiber]
 *       [--tls CERT KEY] ADDRESS [DIR]
 *   build/examples/http_file_server 127.0.0.1:8000 ~/public
 *   curl -v http://127.0.0.1:8000/
 *
 * With --tls (when built with libsockserver_tls: make finds OpenSSL 3) it
 * serves HTTPS, ALPN "http/1.1": the handshake runs in the connection's
 * own thread or fiber, and file bodies are read and sent through TLS.
 *   curl --cacert CERT https://localhost:8000/
 *
 * The library does the server's half: the listening socket, a thread per
 * connection (ThreadingTCPServer, or ThreadingUnixStreamServer for a
 * unix: address; with --pool, a thread pool; with --fiber, a fiber per
 * connection on per-core epoll loops), buffered reads with a line
 * limit (rfile), buffered writes and file bodies (wfile), and a
 * per-operation I/O timeout (the handler class's .timeout), a request's
 * and an idle connection's deadlines (.request_timeout, .idle_timeout),
 * and at its bound the shedding of the connection that makes least of its
 * slot.  This file does the protocol's half:
 *
 *   - GET and HEAD of the files under DIR (default "."); for a directory,
 *     its index.html or a generated listing; Content-Length, Content-Type
 *     from the extension, Last-Modified, conditional requests (304, 412);
 *   - keep-alive: HTTP/1.1 keeps the connection unless "Connection: close",
 *     HTTP/1.0 closes it unless "Connection: keep-alive";
 *   - one access-log line per request on stderr, in the common log format;
 *   - hostile input gets its status and the server goes on:
 *       malformed request line or header, bad %-escape   400
 *       a method other than GET and HEAD                   501
 *       request-target over 8 KiB                          414
 *       header section over 64 KiB or over 100 lines       431
 *       an HTTP version other than 1.x                     505
 *       ".." in the path, a symlink leaving DIR            403
 *       a header not complete 10 s after its first byte   408, closed
 *       no request byte for 5 s, idle keep-alive included  closed
 *       a file body read slower than 64 KiB/s (+10 s)      cut
 *     and never a byte from outside DIR is sent.
 *
 * Start-up contract, as every example: the first line on stdout is
 * "listening on ADDRESS" (the real bound address), and SIGINT or SIGTERM
 * ends the server cleanly with exit status 0 (see "Graceful stop").
 */
#define _GNU_SOURCE /* strptime, timegm */
#include "common.h"
#ifdef EXAMPLE_TLS
#include "sockserver_tls.h"
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SERVER_NAME "libsockserver-http/0.1"

/* Limits on what a client may send, and the answers past them. */
#define MAX_URI          8192  /* request-target; longer: 414 */
#define MAX_REQUEST_LINE (MAX_URI + 64) /* method, version, spaces, CRLF */
#define MAX_HEADER_BYTES 65536 /* header section; more: 431 */
#define MAX_HEADER_LINES 100   /* header fields; more: 431 */
#define MAX_BLANK_LINES  4     /* empty lines tolerated before a request */

/*
 * readline_view returns at most rbufsize bytes, so the read buffer holds
 * the longest line we accept (the whole header-section budget) in one
 * view: a line that comes back without '\n' at the limit is too long.
 */
#define RBUFSIZE (MAX_HEADER_BYTES + 1024)
/* Headers plus a small file leave in one send (see sks_wfile_sendfile). */
#define WBUFSIZE 16384

#define DEFAULT_TIMEOUT 10.0   /* seconds, per read or write */
/* Deadlines (see "Slow clients" in docs/HTTP.md). */
#define DEFAULT_HEADER_TIMEOUT 10.0 /* request line and header: then 408 */
#define DEFAULT_IDLE_TIMEOUT 5.0    /* waiting for a request's first byte */
#define DEFAULT_MIN_RATE 65536.0    /* bytes/s a body may not go below */
#define ANSWER_SECONDS 2.0          /* to send a 408 after the deadline */

/* Lingering close (see linger_close): how much and how long to discard. */
#define LINGER_BYTES   (1 << 20)
#define LINGER_SECONDS 2

/* ------------------------------------------------------------------------ */
/* The site: what every request thread shares                               */

/* One open connection, on its handler's stack, for the graceful stop. */
struct conn {
    int fd;
    struct conn *prev, *next;
};

/* The server's user pointer (sks_server_user): read-only but for conns. */
struct site {
    char root[PATH_MAX];  /* DIR, resolved: no symlinks, no trailing '/' */
    size_t rootlen;
    double header_timeout; /* also each response's allowance, plus ... */
    double min_rate;       /* ... its body's bytes at this rate */
    pthread_mutex_t lock; /* guards conns and stopping */
    struct conn *conns;
    bool stopping;
};

/* ------------------------------------------------------------------------ */
/* Graceful stop                                                             */

/*
 * The threading server's server_close waits for every request thread, and
 * a keep-alive connection's thread spends its idle time blocked in a read:
 * left alone, one idle browser would hold the shutdown up for the whole
 * handler timeout.  Daemon threads (Python's ThreadingHTTPServer) would not
 * wait at all, but then the process exits under threads that may be in the
 * middle of a response.  So, as nginx and Go's http.Server.Shutdown do:
 * after serve_forever returns, every open connection gets shutdown(SHUT_RD).
 * A thread waiting for the next request sees end of input at once and
 * ends; one in the middle of a response finishes sending it (writes are
 * untouched) and then sees end of input.  server_close then waits only for
 * responses in flight, each step bounded by the handler timeout.
 *
 * A connection registers for its lifetime; the list lives on the handlers'
 * stacks.  The descriptor is closed only after it has left the list (by
 * shutdown_request, after handle returns), so the sweep never touches a
 * reused descriptor.
 */
static void conn_enter(struct site *site, struct conn *c)
{
    pthread_mutex_lock(&site->lock);
    c->prev = NULL;
    c->next = site->conns;
    if (site->conns != NULL)
        site->conns->prev = c;
    site->conns = c;
    /* Accepted just before the stop: serve what it already sent, no more. */
    if (site->stopping)
        shutdown(c->fd, SHUT_RD);
    pthread_mutex_unlock(&site->lock);
}

static void conn_leave(struct site *site, struct conn *c)
{
    pthread_mutex_lock(&site->lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        site->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&site->lock);
}

static void stop_connections(struct site *site)
{
    pthread_mutex_lock(&site->lock);
    site->stopping = true;
    for (struct conn *c = site->conns; c != NULL; c = c->next)
        shutdown(c->fd, SHUT_RD);
    pthread_mutex_unlock(&site->lock);
}

/* ------------------------------------------------------------------------ */
/* One request and its response                                              */

/*
 * The conditional request fields (RFC 9110 13.1).  We send no entity
 * tags, so a list of them never matches and only "*" can: it matches
 * any file that exists.
 */
enum tag_condition { TAGS_ABSENT, TAGS_ANY, TAGS_LIST };
struct preconditions {
    enum tag_condition if_match, if_none_match;
    time_t if_unmodified_since, if_modified_since; /* -1: none or invalid */
};

struct exchange {
    sks_handler *h;
    sks_rfile *in;
    sks_wfile *out;
    struct site *site;

    /* The request line as received (CRLF cut), for the log. */
    char line[MAX_REQUEST_LINE + 1];
    size_t line_len;
    bool line_cut;         /* only a prefix of an over-long line */
    /* The same line split in place: method, target, version. */
    char work[MAX_REQUEST_LINE + 1];
    const char *method, *target;
    int minor;             /* HTTP/1.minor */
    bool head;             /* HEAD: headers only */
    bool keep_alive;       /* serve another request on this connection */
    bool has_body;         /* a request body we do not read: close after */
    struct preconditions cond;

    /* The response, for the log. */
    int status;            /* 0: nothing sent */
    long long bytes;       /* body bytes sent */
    bool broken;           /* a write failed: the connection is gone */
};

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 412: return "Precondition Failed";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

/* Writes through the buffered wfile; after a failure, nothing more. */
static void put(struct exchange *x, const void *data, size_t n)
{
    if (!x->broken && sks_wfile_write(x->out, data, n) < 0)
        x->broken = true;
}

__attribute__((format(printf, 2, 3)))
static void putf(struct exchange *x, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0)
        put(x, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* RFC 9110's IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT". */
static void http_date(time_t t, char *buf, size_t cap)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/*
 * The status line and headers.  type NULL and length < 0 leave out
 * Content-Type and Content-Length; mtime < 0 leaves out Last-Modified;
 * extra is more header lines, each ending in CRLF, or NULL.  They go into
 * the write buffer: nothing is sent before the body or the flush.
 */
static void start_response(struct exchange *x, int status, const char *type,
                           long long length, time_t mtime, const char *extra)
{
    char date[64];

    x->status = status;
    http_date(time(NULL), date, sizeof(date));
    putf(x, "HTTP/1.1 %d %s\r\nServer: " SERVER_NAME "\r\nDate: %s\r\n",
         status, reason(status), date);
    if (type != NULL)
        putf(x, "Content-Type: %s\r\n", type);
    if (length >= 0)
        putf(x, "Content-Length: %lld\r\n", length);
    if (mtime >= 0) {
        http_date(mtime, date, sizeof(date));
        putf(x, "Last-Modified: %s\r\n", date);
    }
    if (extra != NULL)
        put(x, extra, strlen(extra));
    /* Explicit both ways: an HTTP/1.0 client needs "keep-alive" spelt out,
     * and "close" tells any client not to send another request. */
    putf(x, "Connection: %s\r\n\r\n", x->keep_alive ? "keep-alive" : "close");
}

/* A complete error response with a small HTML body (none for HEAD). */
static void send_error(struct exchange *x, int status, const char *extra)
{
    char body[256];
    int n = snprintf(body, sizeof(body),
                     "<!DOCTYPE html>\n<html><head><title>%d %s</title></head>"
                     "<body><h1>%d %s</h1></body></html>\n",
                     status, reason(status), status, reason(status));
    /* A client that sent a malformed request is not trusted with a
     * second one on the same connection. */
    if (status == 400)
        x->keep_alive = false;
    start_response(x, status, "text/html; charset=utf-8", n, -1, extra);
    if (!x->head) {
        put(x, body, (size_t)n);
        x->bytes = n;
    }
}

/*
 * Lingering close, as Apache and nginx do it.  After an error the client
 * may still be sending: the rest of an over-long header section, or a
 * body we never read.  Closing a socket that has unread input makes the
 * kernel answer with RST, which can destroy our response before the client
 * has read it.  So send the response, half-close (the client sees the end
 * of it), then read and discard what still comes, until the client closes,
 * within bounds of time and size.
 */
static void linger_close(struct exchange *x)
{
    int fd = sks_request_fd(sks_handler_request(x->h));
    char sink[4096];
    size_t total = 0;
    time_t until = time(NULL) + LINGER_SECONDS;

    if (sks_wfile_flush(x->out) != 0)
        return;
    shutdown(fd, SHUT_WR);
    /* Short reads now, whatever the handler timeout is: each read gives
     * up after a quarter of a second of silence; and no request deadline:
     * the loop below is the bound, and its end is no cut. */
    if (sks_handler_set_timeout(x->h, 0.25) != 0 ||
        sks_handler_set_deadline(x->h, INFINITY) != 0)
        return;
    while (total < LINGER_BYTES && time(NULL) <= until) {
        ssize_t n = sks_rfile_read(x->in, sink, sizeof(sink));
        if (n <= 0 && n != -ETIMEDOUT)
            break;
        if (n > 0)
            total += (size_t)n;
    }
}

/* ------------------------------------------------------------------------ */
/* Reading the request                                                       */

static bool is_tchar(int c)
{
    /* RFC 9110 token characters: methods and header names. */
    return c != 0 && (isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *trim(const char *s, size_t *len)
{
    while (*len > 0 && (s[0] == ' ' || s[0] == '\t')) {
        s++;
        (*len)--;
    }
    while (*len > 0 && (s[*len - 1] == ' ' || s[*len - 1] == '\t'))
        (*len)--;
    return s;
}

/* Splits "METHOD SP target SP HTTP/1.x" in x->work.  0, 400 or 505. */
static int parse_request_line(struct exchange *x)
{
    char *m = x->work, *sp1, *sp2;

    memcpy(x->work, x->line, x->line_len + 1);
    if ((sp1 = strchr(m, ' ')) == NULL || (sp2 = strchr(sp1 + 1, ' ')) == NULL
        || strchr(sp2 + 1, ' ') != NULL)
        return 400;
    *sp1 = *sp2 = '\0';
    x->method = m;
    x->target = sp1 + 1;
    const char *v = sp2 + 1;

    if (*m == '\0' || strlen(m) > 16)
        return 400;
    for (const char *p = m; *p; p++)
        if (!is_tchar((unsigned char)*p))
            return 400;
    /* Visible ASCII only: no controls (CR, NUL...), no spaces, no 8-bit
     * bytes; the target is echoed in a Location header and in the log. */
    if (*x->target == '\0')
        return 400;
    if (strlen(x->target) > MAX_URI)
        return 414; /* a line within MAX_REQUEST_LINE may still hold one */
    for (const unsigned char *p = (const unsigned char *)x->target; *p; p++)
        if (*p < 0x21 || *p > 0x7e)
            return 400;
    if (strncmp(v, "HTTP/", 5) != 0 || !isdigit((unsigned char)v[5]) ||
        v[6] != '.' || !isdigit((unsigned char)v[7]) || v[8] != '\0')
        return 400;
    if (v[5] != '1')
        return 505;
    x->minor = v[7] - '0';
    x->head = strcmp(m, "HEAD") == 0;
    return 0;
}

/* What the header section told us, beyond the exchange's own fields. */
struct fields_seen {
    bool conn_close, conn_keep; /* Connection: close / keep-alive */
    int hosts;                  /* Host field lines */
    long long length;           /* Content-Length; -1: none yet */
};

/* The next element of a comma-separated list, trimmed, or NULL past its
 * end (*v NULL); *v and *len move past it.  An empty element is "". */
static const char *list_next(const char **v, size_t *len, size_t *elen)
{
    const char *e = *v;
    if (e == NULL)
        return NULL;
    const char *comma = memchr(e, ',', *len);
    *elen = comma ? (size_t)(comma - e) : *len;
    if (comma != NULL) {
        *len -= *elen + 1;
        *v = comma + 1;
    } else {
        *v = NULL;
    }
    return trim(e, elen);
}

/* Does the comma-separated list (a Connection header) hold this token? */
static bool list_has(const char *v, size_t len, const char *token)
{
    const char *e;
    size_t elen;
    while ((e = list_next(&v, &len, &elen)) != NULL)
        if (elen == strlen(token) && strncasecmp(e, token, elen) == 0)
            return true;
    return false;
}

/*
 * Content-Length (RFC 9112 6.3, RFC 9110 8.6): one decimal number.  A
 * list of identical values ("42, 42", or the same value on two lines) is
 * the same length said twice and may be taken as it; two different
 * values leave the framing unknown, an unrecoverable error: 400.
 */
static int parse_content_length(struct fields_seen *f, const char *v,
                                size_t len)
{
    const char *e;
    size_t elen;
    while ((e = list_next(&v, &len, &elen)) != NULL) {
        long long n = 0;
        if (elen == 0 || elen > 18) /* 18 digits cannot overflow */
            return 400;
        for (size_t i = 0; i < elen; i++) {
            if (!isdigit((unsigned char)e[i]))
                return 400;
            n = n * 10 + (e[i] - '0');
        }
        if (f->length >= 0 && f->length != n)
            return 400;
        f->length = n;
    }
    return 0;
}

/*
 * Transfer-Encoding (RFC 9112 6.3 rule 4): when chunked is not the final
 * coding the body's length cannot be known: 400.  The last field line
 * holds the final coding, since the lines form one list in order.
 */
static bool te_ends_in_chunked(const char *v, size_t len)
{
    const char *e, *last = NULL;
    size_t elen, lastlen = 0;
    while ((e = list_next(&v, &len, &elen)) != NULL) {
        last = e;
        lastlen = elen;
    }
    return last != NULL && lastlen == 7 && strncasecmp(last, "chunked", 7) == 0;
}

static bool is_unreserved_or_sub_delim(int c)
{
    return isalnum(c) || strchr("-._~!$&'()*+,;=", c) != NULL;
}

/*
 * Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): a
 * bracketed IPv6 literal, or a reg-name (which covers IPv4 addresses) of
 * unreserved characters, sub-delims and %-escapes; then digits after a
 * colon.  Empty is valid (a target without an authority).
 */
static bool valid_host(const char *v, size_t len)
{
    size_t i = 0;
    if (len > 0 && v[0] == '[') {
        char lit[INET6_ADDRSTRLEN];
        struct in6_addr a6;
        const char *close = memchr(v, ']', len);
        size_t n = close ? (size_t)(close - v - 1) : 0;
        if (close == NULL || n == 0 || n >= sizeof(lit))
            return false;
        memcpy(lit, v + 1, n);
        lit[n] = '\0';
        if (inet_pton(AF_INET6, lit, &a6) != 1)
            return false;
        i = n + 2;
    } else {
        for (; i < len && v[i] != ':'; i++) {
            unsigned char c = (unsigned char)v[i];
            if (c == '%') {
                if (i + 2 >= len || !isxdigit((unsigned char)v[i + 1]) ||
                    !isxdigit((unsigned char)v[i + 2]))
                    return false;
                i += 2;
            } else if (c >= 0x80 || !is_unreserved_or_sub_delim(c)) {
                return false;
            }
        }
    }
    if (i == len)
        return true;
    if (v[i] != ':')
        return false;
    for (i++; i < len; i++)
        if (!isdigit((unsigned char)v[i]))
            return false;
    return true;
}

/*
 * An HTTP-date (RFC 9110 5.6.7), in any of the three forms a recipient
 * MUST accept: IMF-fixdate, the obsolete RFC 850 form and asctime's.
 * Returns the time, or -1 for anything else.
 */
static time_t parse_http_date(const char *v, size_t len)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* Sun, 06 Nov 1994 08:49:37 GMT */
        "%A, %d-%b-%y %H:%M:%S GMT", /* Sunday, 06-Nov-94 08:49:37 GMT */
        "%a %b %e %H:%M:%S %Y",      /* Sun Nov  6 08:49:37 1994 */
    };
    char date[64];

    if (len >= sizeof(date))
        return -1;
    memcpy(date, v, len);
    date[len] = '\0';
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(date, forms[i], &tm);
        if (end == NULL || *end != '\0')
            continue;
        if (i == 1) {
            /* A two-digit year more than 50 years ahead is the latest
             * past year with those digits (RFC 9110 5.6.7), not the
             * C library's fixed 1969..2068 window. */
            struct tm now;
            time_t t = time(NULL);
            gmtime_r(&t, &now);
            int year = now.tm_year - now.tm_year % 100 + tm.tm_year % 100;
            if (year > now.tm_year + 50)
                year -= 100;
            tm.tm_year = year;
        }
        return timegm(&tm);
    }
    return -1;
}

/* If-Match or If-None-Match: "*" alone, or a list (of tags that, since we
 * send none, cannot match).  A field repeated is one list. */
static enum tag_condition tag_condition(enum tag_condition was, const char *v,
                                        size_t len)
{
    if (was == TAGS_ABSENT && len == 1 && v[0] == '*')
        return TAGS_ANY;
    return TAGS_LIST;
}

/*
 * Evaluates the preconditions in RFC 9110 13.2.2's order for a GET or
 * HEAD whose answer would be 200 (13.2.1: only then do they apply), for a
 * resource that exists, last modified at mtime (-1: not known).  Returns
 * 0 to go on, 304 or 412.
 */
static int evaluate_preconditions(const struct exchange *x, time_t mtime)
{
    const struct preconditions *c = &x->cond;

    if (c->if_match == TAGS_LIST)
        return 412;
    if (c->if_match == TAGS_ABSENT && c->if_unmodified_since >= 0 &&
        mtime >= 0 && mtime > c->if_unmodified_since)
        return 412;
    if (c->if_none_match != TAGS_ABSENT)
        return c->if_none_match == TAGS_ANY ? 304 : 0;
    /* 13.1.3: ignored beside If-None-Match (above), or without a date. */
    if (c->if_modified_since >= 0 && mtime >= 0 &&
        mtime <= c->if_modified_since)
        return 304;
    return 0;
}

/*
 * Takes one header field line (CRLF cut) into x and f.  Returns 0 or 400.
 * Every field is checked, used or not: a recipient cannot know which of
 * them another hop will act on.
 */
static int parse_header(struct exchange *x, struct fields_seen *f,
                        const char *line, size_t len)
{
    const char *colon = memchr(line, ':', len);

    /* No colon, an empty name, a space before the colon (RFC 9112 5.1:
     * must be rejected), or an obsolete folded continuation line. */
    if (colon == NULL || colon == line)
        return 400;
    for (const char *p = line; p < colon; p++)
        if (!is_tchar((unsigned char)*p))
            return 400;
    size_t nlen = (size_t)(colon - line);
    size_t vlen = len - nlen - 1;
    const char *v = trim(colon + 1, &vlen);

    /* RFC 9110 5.5: CR, LF and NUL in a field value MUST be rejected (or
     * replaced); a bare CR is one RFC 9112 2.2 names.  The other controls
     * but HTAB are outside the grammar too: refused alike. */
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)v[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 400;
    }

#define NAME_IS(s) (nlen == sizeof(s) - 1 && strncasecmp(line, s, nlen) == 0)
    if (NAME_IS("Host")) {
        f->hosts++;
        if (!valid_host(v, vlen))
            return 400;
    } else if (NAME_IS("Connection")) {
        f->conn_close |= list_has(v, vlen, "close");
        f->conn_keep |= list_has(v, vlen, "keep-alive");
    } else if (NAME_IS("Content-Length")) {
        if (parse_content_length(f, v, vlen) != 0)
            return 400;
        if (f->length > 0)
            x->has_body = true;
    } else if (NAME_IS("Transfer-Encoding")) {
        if (!te_ends_in_chunked(v, vlen))
            return 400;
        x->has_body = true;
    } else if (NAME_IS("If-Match")) {
        x->cond.if_match = tag_condition(x->cond.if_match, v, vlen);
    } else if (NAME_IS("If-None-Match")) {
        x->cond.if_none_match = tag_condition(x->cond.if_none_match, v, vlen);
    } else if (NAME_IS("If-Unmodified-Since")) {
        x->cond.if_unmodified_since = parse_http_date(v, vlen);
    } else if (NAME_IS("If-Modified-Since")) {
        x->cond.if_modified_since = parse_http_date(v, vlen);
    }
#undef NAME_IS
    return 0;
}

/* Keeps (a prefix of) the request line for the log. */
static void keep_line(struct exchange *x, const char *line, size_t n, bool cut)
{
    if (n > 0 && line[n - 1] == '\n')
        n--;
    if (n > 0 && line[n - 1] == '\r')
        n--;
    memcpy(x->line, line, n);
    x->line[n] = '\0';
    x->line_len = n;
    x->line_cut = cut;
}

/*
 * Reads the request line and the header section.  Returns 0 for a
 * complete request; a status (400, 408, 414, 431, 505) to answer before
 * closing; or -1 to close without a word (end of input, a reset, or a
 * connection that timed out before sending a request line, such as an idle
 * keep-alive one: RFC 9112 9.5 lets a server close those at any time).
 */
static int read_request(struct exchange *x)
{
    const char *line;
    ssize_t n;

    for (int blank = 0;; blank++) {
        n = sks_rfile_readline_view(x->in, &line, MAX_REQUEST_LINE);
        if (n <= 0)
            return -1;
        if (line[n - 1] != '\n') {
            /* A piece at the limit without '\n': the line is longer. */
            if (n < MAX_REQUEST_LINE)
                return -1; /* the client closed in the middle of it */
            keep_line(x, line, 128, true);
            return 414;
        }
        /* RFC 9112 2.2: tolerate empty lines before a request. */
        bool empty = n == 1 || (n == 2 && line[0] == '\r');
        if (!empty || blank == MAX_BLANK_LINES)
            break;
    }
    keep_line(x, line, (size_t)n, false);
    int status = parse_request_line(x);
    if (status != 0)
        return status;

    struct fields_seen f = { .length = -1 };
    int fields = 0;
    size_t used = 0;
    for (;;) {
        size_t left = MAX_HEADER_BYTES - used;
        n = sks_rfile_readline_view(x->in, &line, left + 1);
        if (n == -ETIMEDOUT)
            return 408;
        if (n <= 0)
            return -1;
        if (line[n - 1] != '\n')
            return (size_t)n == left + 1 ? 431 : -1;
        used += (size_t)n;
        if (used > MAX_HEADER_BYTES)
            return 431;
        size_t len = (size_t)n - 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        if (len == 0)
            break; /* the empty line: end of the header section */
        if (++fields > MAX_HEADER_LINES)
            return 431;
        status = parse_header(x, &f, line, len);
        if (status != 0)
            return status;
    }
    /* RFC 9112 3.2: an HTTP/1.1 request has exactly one Host. */
    if (f.hosts > 1 || (x->minor >= 1 && f.hosts == 0))
        return 400;
    x->keep_alive = x->minor >= 1 ? !f.conn_close : f.conn_keep && !f.conn_close;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mapping the path to the file system                                       */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %-decodes n bytes of s into out (cap > n).  0, or 400 for a malformed
 * escape or an encoded NUL (it would cut the path short). */
static int url_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return 400;
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return 0;
}

/* Any ".." segment is refused outright: a path needs none to name a file
 * under the root, and "%2e%2e" arrives here already decoded. */
static bool has_dotdot(const char *path)
{
    for (const char *p = path; *p;) {
        size_t seg = strcspn(p, "/");
        if (seg == 2 && p[0] == '.' && p[1] == '.')
            return true;
        p += seg;
        if (*p == '/')
            p++;
    }
    return false;
}

static bool inside_root(const struct site *site, const char *real)
{
    if (site->rootlen == 1) /* DIR is "/" */
        return true;
    return strncmp(real, site->root, site->rootlen) == 0 &&
           (real[site->rootlen] == '\0' || real[site->rootlen] == '/');
}

/*
 * Opens a path under the root.  realpath() resolves every symlink and
 * "..", so the prefix check sees where the path really leads; the file is
 * then opened by that resolved name with O_NOFOLLOW (its last component
 * cannot have become a symlink since) and O_NONBLOCK (a FIFO must not
 * block the thread in open).  Returns 0 with *fd, *st and real (PATH_MAX
 * bytes) set for a regular file or a directory, or the status to answer:
 * 403 outside the root or not readable, 404 missing.
 */
static int open_in_root(const struct site *site, const char *full,
                        char *real, int *fd, struct stat *st)
{
    if (realpath(full, real) == NULL)
        return errno == EACCES || errno == ELOOP ? 403 : 404;
    if (!inside_root(site, real))
        return 403;
    *fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (*fd < 0)
        return errno == EACCES || errno == ELOOP ? 403 : 404;
    if (fstat(*fd, st) != 0 ||
        !(S_ISREG(st->st_mode) || S_ISDIR(st->st_mode))) {
        close(*fd);
        return 403;
    }
    return 0;
}

/* open_in_root waits for the disk (realpath, open, fstat): through
 * sks_run_blocking, which on a fiber server (--fiber) runs it on a helper
 * thread so the connection's loop keeps serving, and elsewhere simply
 * calls it. */
struct open_job {
    const struct site *site;
    const char *full;
    char *real;
    int *fd;
    struct stat *st;
    int status;
};

static void open_job_run(void *arg)
{
    struct open_job *j = arg;
    j->status = open_in_root(j->site, j->full, j->real, j->fd, j->st);
}

static int open_in_root_off_loop(sks_handler *h, const struct site *site,
                                 const char *full, char *real, int *fd,
                                 struct stat *st)
{
    struct open_job j = { site, full, real, fd, st, 500 };
    if (sks_run_blocking(h, open_job_run, &j) != 0)
        return 500;
    return j.status;
}

static const char *content_type(const char *name)
{
    static const struct { const char *ext, *type; } types[] = {
        { "html", "text/html" },        { "htm", "text/html" },
        { "css", "text/css" },          { "js", "text/javascript" },
        { "mjs", "text/javascript" },   { "json", "application/json" },
        { "txt", "text/plain" },        { "md", "text/markdown" },
        { "c", "text/plain" },          { "h", "text/plain" },
        { "xml", "application/xml" },   { "svg", "image/svg+xml" },
        { "png", "image/png" },         { "jpg", "image/jpeg" },
        { "jpeg", "image/jpeg" },       { "gif", "image/gif" },
        { "webp", "image/webp" },       { "ico", "image/vnd.microsoft.icon" },
        { "pdf", "application/pdf" },   { "wasm", "application/wasm" },
        { "zip", "application/zip" },   { "gz", "application/gzip" },
        { "tar", "application/x-tar" }, { "mp4", "video/mp4" },
        { "woff2", "font/woff2" },
    };
    const char *base = strrchr(name, '/');
    const char *dot = strrchr(base ? base : name, '.');
    if (dot != NULL)
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot + 1, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* ------------------------------------------------------------------------ */
/* Responses: a file, a listing, a redirect                                  */

/* Answers 304 or 412 if the preconditions say so; true if it did. */
static bool answer_preconditions(struct exchange *x, time_t mtime)
{
    int status = evaluate_preconditions(x, mtime);
    if (status == 304)
        start_response(x, 304, NULL, -1, mtime, NULL);
    else if (status != 0)
        send_error(x, status, NULL);
    return status != 0;
}

static void send_file(struct exchange *x, int fd, const struct stat *st,
                      const char *name)
{
    if (answer_preconditions(x, st->st_mtime))
        return;
    start_response(x, 200, content_type(name), (long long)st->st_size,
                   st->st_mtime, NULL);
    if (x->head || x->broken)
        return;
    /* A slow reader is cut too: the body must leave at min_rate at
     * least, on top of the response's own allowance. */
    sks_handler_set_deadline(x->h, sks_deadline_for_rate(
        (double)st->st_size, x->site->min_rate, x->site->header_timeout));
    /* The body straight from the file: copied behind the headers when it
     * fits the write buffer, else by sendfile(2) after them. */
    ssize_t n = sks_wfile_sendfile(x->out, fd, 0, (size_t)st->st_size);
    if (n > 0)
        x->bytes = n;
    /* A write error, or a file that shrank while being sent: the
     * Content-Length promised is broken, only closing can tell. */
    if (n != (ssize_t)st->st_size)
        x->broken = true;
}

/* A growing string, for the listing (its length goes in the headers). */
struct strbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void sb_puts(struct strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Text in HTML: names are the file system's and may hold anything. */
static void sb_html(struct strbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        case '\'': sb_puts(b, "&#39;"); break;
        default: sb_add(b, s, 1);
        }
    }
}

/* A name in an href: everything but unreserved characters %-encoded. */
static void sb_url(struct strbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-._~", c) != NULL) {
            sb_add(b, s, 1);
        } else {
            char esc[4];
            snprintf(esc, sizeof(esc), "%%%02X", c);
            sb_add(b, esc, 3);
        }
    }
}

static int skip_dots(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

/* The listing of directory `real`, as `python3 -m http.server` writes it:
 * names sorted, directories with '/', symlinks with '@'. */
static void send_listing(struct exchange *x, int dirfd, const char *real,
                         const char *urlpath)
{
    struct dirent **names;
    struct strbuf b = { 0 };
    int n = scandir(real, &names, skip_dots, alphasort);

    if (n < 0) {
        send_error(x, errno == EACCES ? 403 : 404, NULL);
        return;
    }
    /* A listing is generated: no modification date, only "*" applies. */
    if (answer_preconditions(x, -1)) {
        while (n-- > 0)
            free(names[n]);
        free(names);
        return;
    }
    sb_puts(&b, "<!DOCTYPE HTML>\n<html lang=\"en\">\n<head>\n"
                "<meta charset=\"utf-8\">\n<title>Directory listing for ");
    sb_html(&b, urlpath);
    sb_puts(&b, "</title>\n</head>\n<body>\n<h1>Directory listing for ");
    sb_html(&b, urlpath);
    sb_puts(&b, "</h1>\n<hr>\n<ul>\n");
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        const char *mark = "";
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            mark = S_ISDIR(st.st_mode) ? "/" : S_ISLNK(st.st_mode) ? "@" : "";
        sb_puts(&b, "<li><a href=\"");
        sb_url(&b, name);
        if (*mark == '/')
            sb_puts(&b, "/");
        sb_puts(&b, "\">");
        sb_html(&b, name);
        sb_puts(&b, mark);
        sb_puts(&b, "</a></li>\n");
        free(names[i]);
    }
    free(names);
    sb_puts(&b, "</ul>\n<hr>\n</body>\n</html>\n");

    if (b.failed) {
        send_error(x, 500, NULL);
    } else {
        start_response(x, 200, "text/html; charset=utf-8", (long long)b.len,
                       -1, NULL);
        if (!x->head) {
            put(x, b.p, b.len);
            x->bytes = (long long)b.len;
        }
    }
    free(b.p);
}

/* GET or HEAD of the request-target. */
static void serve_target(struct exchange *x)
{
    const char *t = x->target;
    char path[MAX_URI + 1], full[PATH_MAX], real[PATH_MAX];
    struct stat st;
    int fd, status;

    /* The absolute form (RFC 9112 3.2.2): drop "http://authority". */
    if (strncasecmp(t, "http://", 7) == 0 ||
        strncasecmp(t, "https://", 8) == 0) {
        t = strstr(t, "://") + 3;
        t += strcspn(t, "/?#");
        if (*t != '/')
            t = "/";
    }
    if (*t != '/') {
        send_error(x, 400, NULL);
        return;
    }
    size_t rawlen = strcspn(t, "?#"); /* the query is no part of the path */
    if (url_decode(t, rawlen, path) != 0) {
        send_error(x, 400, NULL);
        return;
    }
    if (has_dotdot(path)) {
        send_error(x, 403, NULL);
        return;
    }
    if ((size_t)snprintf(full, sizeof(full), "%s%s", x->site->root, path) >=
        sizeof(full)) {
        send_error(x, 404, NULL);
        return;
    }
    if ((status = open_in_root_off_loop(x->h, x->site, full, real, &fd,
                                        &st)) != 0) {
        send_error(x, status, NULL);
        return;
    }
    if (S_ISREG(st.st_mode)) {
        send_file(x, fd, &st, path);
        close(fd);
        return;
    }

    /* A directory.  Without its trailing '/', relative links in it would
     * resolve against the parent: redirect first, as Python does. */
    if (rawlen == 0 || t[rawlen - 1] != '/') {
        char location[MAX_URI + 32];
        snprintf(location, sizeof(location), "Location: %.*s/%s\r\n",
                 (int)rawlen, t, t + rawlen);
        send_error(x, 301, location);
        close(fd);
        return;
    }
    int ifd;
    struct stat ist;
    char index[PATH_MAX], ireal[PATH_MAX];
    status = 404;
    if ((size_t)snprintf(index, sizeof(index), "%s/index.html", real) <
        sizeof(index))
        status = open_in_root_off_loop(x->h, x->site, index, ireal, &ifd,
                                       &ist);
    if (status == 0 && S_ISREG(ist.st_mode)) {
        send_file(x, ifd, &ist, ireal);
        close(ifd);
    } else if (status == 403) {
        send_error(x, 403, NULL);
    } else {
        if (status == 0)
            close(ifd); /* index.html is a directory: list instead */
        send_listing(x, fd, real, path);
    }
    close(fd);
}

/* ------------------------------------------------------------------------ */
/* The access log                                                            */

/*
 * The common log format:
 *   127.0.0.1 - - [22/Nov/2025:10:16:00 +0000] "GET / HTTP/1.1" 200 1234
 * The request line is the client's: control bytes, quotes and 8-bit bytes
 * are escaped as \xHH so nobody can forge log lines, and one over-long
 * line is cut.  One write per line, so lines from threads never mix.
 */
static void log_request(const struct exchange *x)
{
    const sks_addr *a = sks_handler_client_address(x->h);
    char host[INET6_ADDRSTRLEN] = "-";
    char when[64], req[1100 * 4], line[sizeof(req) + 256];
    struct tm tm;
    time_t now = time(NULL);
    size_t o = 0;

    if (a->u.sa.sa_family == AF_INET)
        inet_ntop(AF_INET, &a->u.in.sin_addr, host, sizeof(host));
    else if (a->u.sa.sa_family == AF_INET6)
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof(host));
    localtime_r(&now, &tm);
    strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);

    for (size_t i = 0; i < x->line_len && i < 1024; i++) {
        unsigned char c = (unsigned char)x->line[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(req + o, 5, "\\x%02x", c);
        else
            req[o++] = (char)c;
    }
    if (x->line_cut || x->line_len > 1024)
        o += (size_t)snprintf(req + o, 4, "...");
    req[o] = '\0';

    char bytes[32] = "-";
    if (x->bytes > 0)
        snprintf(bytes, sizeof(bytes), "%lld", x->bytes);
    int n = snprintf(line, sizeof(line), "%s - - [%s] \"%s\" %d %s\n", host,
                     when, req, x->status, bytes);
    if (n > 0)
        fwrite(line, 1, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1,
               stderr);
}

/* ------------------------------------------------------------------------ */
/* The handler                                                               */

/* Serves one request.  Returns true to wait for the next one. */
static bool serve_one(struct exchange *x)
{
    x->line_len = 0;
    x->line[0] = '\0';
    x->line_cut = false;
    x->minor = 1;
    x->head = false;
    x->keep_alive = false;
    x->has_body = false;
    x->cond = (struct preconditions){ .if_unmodified_since = -1,
                                      .if_modified_since = -1 };
    x->status = 0;
    x->bytes = 0;

    /* The request's deadline (header_timeout) starts with its first byte;
     * until then the connection is idle (idle_timeout), as between
     * keep-alive requests, and cut silently. */
    int status = read_request(x);
    if (status < 0)
        return false;
    if (status > 0) {
        /* The request could not be read to its end: what follows on the
         * connection cannot be trusted to start a request. */
        if (status == 408)
            sks_handler_set_deadline(x->h, ANSWER_SECONDS);
        send_error(x, status, NULL);
        log_request(x);
        if (status == 408)
            sks_wfile_flush(x->out); /* a stalled client: just close */
        else
            linger_close(x);
        return false;
    }
    /* The response's own allowance (a file body extends it). */
    sks_handler_set_deadline(x->h, x->site->header_timeout);
    /* A body we do not read would be taken for the next request. */
    if (x->has_body)
        x->keep_alive = false;

    if (strcmp(x->method, "GET") == 0 || x->head)
        serve_target(x);
    else
        send_error(x, 501, "Allow: GET, HEAD\r\n");

    if (!x->broken && sks_wfile_flush(x->out) != 0)
        x->broken = true;
    log_request(x);
    if (x->broken)
        return false;
    if (!x->keep_alive && x->has_body)
        linger_close(x);
    if (x->keep_alive)
        sks_handler_await_request(x->h);
    return x->keep_alive;
}

static int http_handle(sks_handler *h)
{
    struct site *site = sks_server_user(sks_handler_server(h));
    struct conn c = { .fd = sks_request_fd(sks_handler_request(h)) };
    struct exchange *x = malloc(sizeof(*x));

    if (x == NULL)
        return -ENOMEM; /* handle_error reports it */
    x->h = h;
    x->in = sks_handler_rfile(h);
    x->out = sks_handler_wfile(h);
    x->site = site;
    x->broken = false;

    conn_enter(site, &c);
    while (serve_one(x))
        ;
    conn_leave(site, &c);
    free(x);
    /* A client that went away or stalled is the protocol's business,
     * answered and logged above; nothing for handle_error.  (One cut at a
     * deadline reaches it all the same: see http_error.) */
    return 0;
}

/* A request cut at its deadline is already in the access log (408, or a
 * response cut short): handle_error's block on stderr would repeat it, a
 * thousand times under a slow-client attack.  Anything else is reported. */
static void http_error(sks_server *srv, sks_request *req, int err)
{
    if (err != -ETIMEDOUT)
        sks_base_handle_error(srv, req, err);
}

/*
 * The handler class: StreamRequestHandler's setup and finish around our
 * handle.  Not const: main sets .timeout from the command line before the
 * server is created (the class must not change while it serves).
 */
static sks_handler_class http_handler = {
    .version = SKS_HANDLER_VERSION,
    .name = "HTTPRequestHandler",
    .setup = sks_stream_setup,
    .handle = http_handle,
    .finish = sks_stream_finish,
    .rbufsize = RBUFSIZE,
    .wbufsize = WBUFSIZE,
    .timeout = DEFAULT_TIMEOUT,
    .request_timeout = DEFAULT_HEADER_TIMEOUT,
    .idle_timeout = DEFAULT_IDLE_TIMEOUT,
    /* Headers and body may leave in two sends; Nagle would hold the second
     * back for the client's delayed ACK (40 ms a response). */
    .disable_nagle_algorithm = true,
};

/* ------------------------------------------------------------------------ */
/* main                                                                      */

/*
 * The concurrency models this server runs on, one line each; the first is
 * the default.  A model must run handlers in this process (threads, or
 * fibers on the fiber model's loops), for the graceful stop's sweep to
 * reach them.  With the pool, mind that an
 * idle keep-alive connection holds a worker until its next request or the
 * timeout.
 */
static const struct model {
    const char *flag;
    const sks_server_ops *tcp, *unix_stream;
} models[] = {
    { "--threading", &sks_threading_tcp_ops, &sks_threading_unix_stream_ops },
    { "--pool", &sks_pool_tcp_ops, &sks_pool_unix_stream_ops },
    { "--fiber", &sks_fiber_tcp_ops, &sks_fiber_unix_stream_ops },
};

/* HTTPS (--tls): one certificate, ALPN http/1.1, the defaults else
 * (TLS 1.2 and up, tickets, a 10 s handshake deadline). */
#ifdef EXAMPLE_TLS
static void *start_tls(const char *prog, const char *cert, const char *key)
{
    sks_tls_cert pair = { cert, key };
    sks_tls_opts o = { .version = SKS_TLS_OPTS_VERSION, .certs = &pair,
                       .ncerts = 1, .alpn = "http/1.1" };
    sks_tls_ctx *ctx;
    char why[256];
    if (sks_tls_ctx_new(&ctx, &o, why, sizeof(why)) != 0) {
        fprintf(stderr, "%s: TLS: %s\n", prog, why);
        return NULL;
    }
    return ctx;
}

static void use_tls(sks_server *srv, void *ctx)
{
    sks_server_set_tls(srv, ctx);
}

static void end_tls(void *ctx)
{
    sks_tls_ctx_free(ctx);
}
#else
static void *start_tls(const char *prog, const char *cert, const char *key)
{
    (void)cert;
    (void)key;
    fprintf(stderr, "%s: built without TLS (make TLS=openssl)\n", prog);
    return NULL;
}

static void use_tls(sks_server *srv, void *ctx)
{
    (void)srv;
    (void)ctx;
}

static void end_tls(void *ctx)
{
    (void)ctx;
}
#endif

/* Once serve_forever has returned: see "Graceful stop".  The counters go
 * to stdout (stderr is the access log). */
static void stop_site(sks_server *srv)
{
    sks_stats st;
    stop_connections(sks_server_user(srv));
    sks_server_stats(srv, &st);
    printf("stats: accepted %zu, completed %zu, failed %zu, refused %zu, "
           "timed out or shed %zu\n",
           st.accepted, st.completed, st.failed, st.refused, st.timed_out);
    fflush(stdout);
}

/*
 * At the bound, a connection that makes nothing of its slot (idle between
 * requests, or stalled on its client) makes room for a new one: see
 * "Admission under pressure" in docs/HTTP.md.  The pool gets no queue: a
 * queued connection would wait behind slow ones that may never finish,
 * where at the bound it sheds one of them.  Its extra workers leave after
 * 5 s without work.
 */
static void configure(sks_server *srv)
{
    sks_server_set_overload_policy(srv, SKS_OVERLOAD_SHED_IDLE);
    sks_server_set_pool(srv, 4, 64, 5.0, 0);
}

static struct site site = {
    .header_timeout = DEFAULT_HEADER_TIMEOUT,
    .min_rate = DEFAULT_MIN_RATE,
    .lock = PTHREAD_MUTEX_INITIALIZER,
};

/* The numeric options, each a positive number. */
static const struct option {
    const char *flag, *help;
    double *value;
} options[] = {
    { "--timeout", "SECONDS  per read/write with no progress",
      &http_handler.timeout },
    { "--header-timeout", "SECONDS  to receive a request line and "
      "header (then 408); also each response's allowance",
      &site.header_timeout },
    { "--idle-timeout", "SECONDS  for a request's first byte (keep-alive)",
      &http_handler.idle_timeout },
    { "--min-rate", "BYTES  per second a file body may not go below",
      &site.min_rate },
};

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [OPTION VALUE]... [MODEL] [--tls CERT KEY] ADDRESS [DIR]\n"
            "  ADDRESS  127.0.0.1:8000, [::1]:0, unix:/tmp/http.sock, ...\n"
            "  DIR      the directory to serve (default: .)\n",
            prog);
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
        fprintf(stderr, "  %s %s (default %g)\n", options[i].flag,
                options[i].help, *options[i].value);
    fprintf(stderr, "  MODEL   ");
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++)
        fprintf(stderr, " %s%s", models[i].flag, i == 0 ? " (default)" : "");
    fprintf(stderr, "\n");
    return 2;
}

int main(int argc, char **argv)
{
    const struct model *model = &models[0];
    const char *address = NULL, *dir = ".";
    const char *tls_cert = NULL, *tls_key = NULL;
    int npos = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool known = false;
        for (size_t o = 0; o < sizeof(options) / sizeof(options[0]); o++)
            if (strcmp(a, options[o].flag) == 0 && i + 1 < argc) {
                char *end;
                *options[o].value = strtod(argv[++i], &end);
                if (*end != '\0' || !(*options[o].value > 0))
                    return usage(argv[0]);
                known = true;
                break;
            }
        if (known)
            continue;
        for (size_t m = 0; m < sizeof(models) / sizeof(models[0]); m++)
            if (strcmp(a, models[m].flag) == 0) {
                model = &models[m];
                known = true;
            }
        if (known)
            continue;
        if (strcmp(a, "--tls") == 0 && i + 2 < argc) {
            tls_cert = argv[++i];
            tls_key = argv[++i];
            continue;
        }
        if (a[0] == '-' && a[1] == '-')
            return usage(argv[0]);
        if (npos == 0)
            address = a;
        else if (npos == 1)
            dir = a;
        else
            return usage(argv[0]);
        npos++;
    }
    if (address == NULL)
        return usage(argv[0]);

    struct stat st;
    if (realpath(dir, site.root) == NULL || stat(site.root, &st) != 0 ||
        !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: %s: not a directory\n", argv[0], dir);
        return 1;
    }
    site.rootlen = strlen(site.root);

    http_handler.request_timeout = site.header_timeout;
    /* The model's table with our handle_error: a copy, as a subclass. */
    static sks_server_ops ops;
    ops = *(strncmp(address, "unix:", 5) == 0 ? model->unix_stream
                                                : model->tcp);
    ops.handle_error = http_error;
    /* example_create (common.c) sets allow_reuse_address, as Python's
     * HTTPServer: a restart binds the same port at once. */
    void *tls = NULL;
    if (tls_cert != NULL && (tls = start_tls(argv[0], tls_cert, tls_key)) == NULL)
        return 1;
    sks_server *srv = NULL;
    example_set_command(argv); /* SIGUSR2 runs this command line again */
    if (example_create(&srv, argv[0], address, &ops, &http_handler, &site,
                       configure) != 0)
        return 1;
    if (tls != NULL)
        use_tls(srv, tls);
    /* Its server_close then waits for the responses in flight. */
    int rc = example_run(srv, argv[0], stop_site);
    end_tls(tls);
    return rc;
}
