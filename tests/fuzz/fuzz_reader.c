/*
 * fuzz_reader.c - libFuzzer target: the Stream flavour's buffered reader
 * and writer (rfile, wfile) over a connection whose bytes arrive split at
 * arbitrary points.
 *
 * The handler's rfile and wfile are made by sks_stream_setup() on a fake
 * connection: a real descriptor (so its number is ours) whose recv() and
 * send() are served from the input by the replacements below, which
 * interpose libc's for that one descriptor and pass every other one
 * through.  Everything the library does above libc runs as in a server:
 * io.c's EINTR retries, MSG_NOSIGNAL and waits, the reader's buffer
 * management, the writer's buffering.  An EAGAIN from the fake connection
 * is "not ready": io.c then waits, and the wait backend below (the seam a
 * fiber model fills) says the deadline passed, so it ends in -ETIMEDOUT.
 *
 * Input: a header (read buffer size, write buffer size, how the stream
 * ends, EINTR injection, write failure), then up to 64 operations
 * (readline, readline_view, read, read_all, write, flush), then the sizes
 * of the pieces recv() returns, then the stream's content.  Every read is
 * checked against the model in fuzz.h; every byte sent against what was
 * written.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "../../src/internal.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The fake connection's state for one input. */
static struct {
    int fd;                       /* -1 until the first input */
    const uint8_t *data;          /* what the peer sends */
    size_t len, pos;
    const uint8_t *pieces;        /* recv/send piece sizes, cycled */
    size_t npieces, rpi, spi;
    size_t left;                  /* of the current recv piece */
    int end_errno;                /* after the data: 0 = end of input */
    bool eintr, eintr_due;        /* EINTR before every piece */
    uint8_t *sent;                /* what the library sent */
    size_t sent_len, sent_cap;
    size_t send_fail_at;          /* sent bytes before send fails */
    int send_errno;
} rd = { .fd = -1 };

static size_t rd_piece(size_t *i)
{
    if (rd.npieces == 0)
        return SIZE_MAX;
    return (size_t)rd.pieces[(*i)++ % rd.npieces] + 1;
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    if (fd != rd.fd || fd < 0)
        return (ssize_t)syscall(SYS_recvfrom, fd, buf, n, flags, NULL, NULL);
    /* recv of 0 bytes returns 0, which the reader would take for the end
     * of input. */
    FUZZ_CHECK(n > 0);
    if (rd.eintr_due) {
        rd.eintr_due = false;
        errno = EINTR;
        return -1;
    }
    if (rd.pos == rd.len) {
        if (rd.end_errno == 0)
            return 0;
        errno = rd.end_errno;
        return -1;
    }
    if (rd.left == 0)
        rd.left = rd_piece(&rd.rpi);
    size_t k = rd.len - rd.pos;
    if (k > rd.left)
        k = rd.left;
    if (k > n)
        k = n;
    memcpy(buf, rd.data + rd.pos, k);
    rd.pos += k;
    rd.left -= k;
    if (rd.left == 0 && rd.eintr)
        rd.eintr_due = true;
    return (ssize_t)k;
}

/* The portable fallback's way against SIGPIPE: blocked around the call. */
static bool sigpipe_blocked(void)
{
    sigset_t now;
    return pthread_sigmask(SIG_BLOCK, NULL, &now) == 0 &&
           sigismember(&now, SIGPIPE) == 1;
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    if (fd != rd.fd || fd < 0)
        return (ssize_t)syscall(SYS_sendto, fd, buf, n, flags, NULL, 0);
    FUZZ_CHECK((flags & MSG_NOSIGNAL) || sigpipe_blocked()); /* never SIGPIPE */
    FUZZ_CHECK(n > 0);
    if (rd.eintr_due) {
        rd.eintr_due = false;
        errno = EINTR;
        return -1;
    }
    if (rd.sent_len >= rd.send_fail_at) {
        errno = rd.send_errno;
        return -1;
    }
    size_t k = rd_piece(&rd.spi);
    if (k > n)
        k = n;
    if (k > rd.send_fail_at - rd.sent_len)
        k = rd.send_fail_at - rd.sent_len;
    if (rd.sent_len + k > rd.sent_cap) {
        size_t ncap = (rd.sent_len + k) * 2;
        uint8_t *p = realloc(rd.sent, ncap);
        FUZZ_CHECK(p != NULL);
        rd.sent = p;
        rd.sent_cap = ncap;
    }
    memcpy(rd.sent + rd.sent_len, buf, k);
    rd.sent_len += k;
    rd.eintr_due = rd.eintr;
    return (ssize_t)k;
}

/* The fake connection never becomes ready: a wait on it ends as at its
 * deadline, at once.  Waits on anything else are real. */
static int rd_wait(struct pollfd *fds, size_t n, double deadline)
{
    if (n == 1 && fds[0].fd == rd.fd && rd.fd >= 0)
        return 0;
    return sks__blocking_wait.wait(fds, n, deadline);
}

static const sks__wait_backend rd_backend = {
    .name = "fuzz_reader",
    .wait = rd_wait,
};

/* The writer's side of the check: what the handler wrote, in order. */
typedef struct rd_written {
    uint8_t *buf;
    size_t len, cap;
    bool failed;       /* a write or flush reported an error */
} rd_written;

static void rd_write_op(sks_wfile *w, rd_written *wr, size_t wbufsize,
                        uint8_t arg)
{
    size_t n = arg;
    uint8_t *chunk = malloc(n ? n : 1);
    FUZZ_CHECK(chunk != NULL);
    for (size_t i = 0; i < n; i++)
        chunk[i] = (uint8_t)((wr->len + i) * 7 + 1);
    ssize_t r = sks_wfile_write(w, chunk, n);
    if (r < 0) {
        /* Only a failing send may fail a write, and with its error. */
        FUZZ_CHECK(rd.sent_len >= rd.send_fail_at);
        FUZZ_CHECK(r == (rd.send_errno == EAGAIN ? -ETIMEDOUT
                                                 : -rd.send_errno));
        wr->failed = true;
    } else {
        FUZZ_CHECK(r == (ssize_t)n);
    }
    if (wr->len + n > wr->cap) {
        wr->cap = (wr->len + n) * 2;
        wr->buf = realloc(wr->buf, wr->cap);
        FUZZ_CHECK(wr->buf != NULL);
    }
    if (n > 0)
        memcpy(wr->buf + wr->len, chunk, n);
    wr->len += n;
    free(chunk);
    /* Bytes leave in order; what is held back fits in the buffer. */
    FUZZ_CHECK(rd.sent_len <= wr->len);
    FUZZ_CHECK(rd.sent_len == 0 ||
               memcmp(rd.sent, wr->buf, rd.sent_len) == 0);
    if (!wr->failed)
        FUZZ_CHECK(wr->len - rd.sent_len <= wbufsize);
}

static void rd_flush_op(sks_wfile *w, rd_written *wr)
{
    int r = sks_wfile_flush(w);
    if (r < 0) {
        FUZZ_CHECK(rd.sent_len >= rd.send_fail_at);
        wr->failed = true;
    } else if (!wr->failed) {
        FUZZ_CHECK(rd.sent_len == wr->len);
    }
    FUZZ_CHECK(rd.sent_len <= wr->len);
    FUZZ_CHECK(rd.sent_len == 0 ||
               memcmp(rd.sent, wr->buf, rd.sent_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t rbufs[16] = { 1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 64,
                                      100, 255, 1024, 4096, 0 };
    static const size_t wbufs[8] = { 0, 0, 1, 2, 7, 16, 255, 4096 };
    static const int end_errs[4] = { 0, ECONNRESET, EAGAIN, 0 };
    fuzz_in in = { data, size };

    if (rd.fd < 0) {
        int sv[2];
        FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        close(sv[1]);
        rd.fd = sv[0];
    }

    uint8_t b_rbuf = fuzz_byte(&in), b_wbuf = fuzz_byte(&in);
    uint8_t flags = fuzz_byte(&in), fail_at = fuzz_byte(&in);
    rd.end_errno = end_errs[flags & 3];
    rd.eintr = (flags & 4) != 0;
    rd.eintr_due = false;
    rd.send_fail_at = (flags & 8) ? (size_t)fail_at * 16 : SIZE_MAX;
    rd.send_errno = (flags & 16) ? EAGAIN : EPIPE;

    size_t nops = fuzz_byte(&in) % 65;
    size_t opbytes = nops * 2;
    const uint8_t *ops = fuzz_bytes(&in, &opbytes);
    nops = opbytes / 2;
    rd.npieces = fuzz_byte(&in) % 16;
    rd.pieces = fuzz_bytes(&in, &rd.npieces);
    rd.rpi = rd.spi = rd.left = 0;
    rd.len = in.n;
    rd.data = fuzz_bytes(&in, &rd.len);
    rd.pos = 0;
    rd.sent_len = 0;

    /* A server and request just real enough for sks_stream_setup. */
    static sks_server srv;
    srv.address.u.sa.sa_family = AF_UNIX;
    struct sks_request *req = calloc(1, sizeof(*req));
    FUZZ_CHECK(req != NULL);
    req->fd = rd.fd;
    sks_handler_class cls = {
        .setup = sks_stream_setup,
        .finish = sks_stream_finish,
        .rbufsize = rbufs[b_rbuf % 16],
        .wbufsize = wbufs[b_wbuf % 8],
    };
    sks_handler h = { .server = &srv, .request = req, .cls = &cls };
    sks__wait_use(&rd_backend);
    FUZZ_CHECK(sks_stream_setup(&h) == 0);
    sks_rfile *r = sks_handler_rfile(&h);
    sks_wfile *w = sks_handler_wfile(&h);
    FUZZ_CHECK(r != NULL && w != NULL);
    FUZZ_CHECK(sks_wfile_fileno(w) == rd.fd);

    int end_err = rd.end_errno == 0 ? 0
                  : rd.end_errno == EAGAIN ? -ETIMEDOUT : -rd.end_errno;
    fuzz_model m = { .data = rd.data, .len = rd.len, .end_err = end_err,
                     .rbufsize = cls.rbufsize ? cls.rbufsize : 8192 };
    rd_written wr = { 0 };

    for (size_t i = 0; i < nops; i++) {
        uint8_t op = ops[2 * i], arg = ops[2 * i + 1];
        switch (op % 6) {
        case 4:
            rd_write_op(w, &wr, cls.wbufsize, arg);
            break;
        case 5:
            rd_flush_op(w, &wr);
            break;
        default:
            fuzz_reader_op(r, &m, op % 6, arg);
            break;
        }
    }
    /* Whatever is left arrives whole: read_all with no bound. */
    fuzz_reader_op(r, &m, 3, 255);
    if (!m.lost)
        FUZZ_CHECK(m.pos == m.len);

    /* finish flushes (ignoring a failure, as Python) and frees both. */
    FUZZ_CHECK(sks_stream_finish(&h) == 0);
    FUZZ_CHECK(sks_handler_rfile(&h) == NULL && sks_handler_wfile(&h) == NULL);
    if (rd.sent_len < rd.send_fail_at) /* no send failed: all went out */
        FUZZ_CHECK(rd.sent_len == wr.len);
    FUZZ_CHECK(rd.sent_len <= wr.len);
    FUZZ_CHECK(rd.sent_len == 0 || memcmp(rd.sent, wr.buf, rd.sent_len) == 0);
    free(wr.buf);
    free(req);
    sks__wait_use(NULL);
    return 0;
}

/* For the replay test: release what the first input set up. */
void fuzz_reader_cleanup(void);
void fuzz_reader_cleanup(void)
{
    if (rd.fd >= 0)
        close(rd.fd);
    rd.fd = -1;
    free(rd.sent);
    rd.sent = NULL;
    rd.sent_cap = 0;
}
