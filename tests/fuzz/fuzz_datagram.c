/*
 * fuzz_datagram.c - libFuzzer target: a datagram request's whole path,
 * over real sockets.
 *
 * Two synchronous servers live for the whole run, a UnixDatagramServer on
 * an abstract name and a UDPServer on 127.0.0.1, each with a client.  Per
 * input, a client sends one datagram (any bytes, any length, maybe longer
 * than the server's max_packet_size), sks_server_handle_request() takes it
 * (recvmsg, truncation), and the handler runs a script from the input over
 * the Datagram flavour: reads checked against the packet by the model in
 * fuzz.h, writes collected and sent by finish as one reply, which the
 * client must receive byte for byte.  Handler failures and replies to an
 * unnamed Unix peer (-EDESTADDRREQ) must reach handle_error exactly once.
 *
 * Input: flags (transport, unnamed peer), max_packet_size, up to 64
 * operations, then the datagram.
 */
#define _GNU_SOURCE
#include "fuzz.h"
#include "../../src/compat.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    bool ready;
    sks_server *srv[2];           /* Unix datagram, UDP */
    int client[2];                /* bound clients */
    int unnamed;                  /* an unbound Unix client */
    sks_server_ops ops[2];
    /* the current input's script and expectations */
    const uint8_t *ops_script;
    size_t nops;
    const uint8_t *packet;
    size_t packet_len, max_packet;
    bool fail;                    /* the handler returns SKS_EHANDLER */
    uint8_t *written;
    size_t written_len, written_cap;
    bool handled;
    int errors, last_err;
} dg;

static void dg_handle_error(sks_server *srv, sks_request *req, int err)
{
    (void)srv;
    (void)req;
    dg.errors++;
    dg.last_err = err;
}

static int dg_handle(sks_handler *h)
{
    sks_request *req = sks_handler_request(h);
    size_t got_len = 0;
    const void *pkt = sks_request_packet(req, &got_len);
    size_t want = dg.packet_len < dg.max_packet ? dg.packet_len
                                                : dg.max_packet;

    dg.handled = true;
    FUZZ_CHECK(pkt != NULL);
    FUZZ_CHECK(got_len == want);
    FUZZ_CHECK(want == 0 || memcmp(pkt, dg.packet, want) == 0);
    FUZZ_CHECK(sks_request_truncated(req) == (dg.packet_len > dg.max_packet));

    /* The reader over the packet: a stream that ends after it. */
    fuzz_model m = { .data = dg.packet, .len = want,
                     .rbufsize = want ? want : 1 };
    sks_rfile *r = sks_handler_rfile(h);
    sks_wfile *w = sks_handler_wfile(h);
    FUZZ_CHECK(r != NULL && w != NULL);
    for (size_t i = 0; i < dg.nops; i++) {
        uint8_t op = dg.ops_script[2 * i], arg = dg.ops_script[2 * i + 1];
        if (op % 6 < 4) {
            fuzz_reader_op(r, &m, op % 6, arg);
        } else if (op % 6 == 4) {
            size_t n = arg;
            uint8_t chunk[256];
            for (size_t k = 0; k < n; k++)
                chunk[k] = (uint8_t)((dg.written_len + k) * 13 + 5);
            FUZZ_CHECK(sks_wfile_write(w, chunk, n) == (ssize_t)n);
            if (dg.written_len + n > dg.written_cap) {
                dg.written_cap = (dg.written_len + n) * 2;
                dg.written = realloc(dg.written, dg.written_cap);
                FUZZ_CHECK(dg.written != NULL);
            }
            if (n > 0)
                memcpy(dg.written + dg.written_len, chunk, n);
            dg.written_len += n;
        } else {
            /* A no-op: the reply leaves in finish, whole. */
            FUZZ_CHECK(sks_wfile_flush(w) == 0);
        }
    }
    return dg.fail ? SKS_EHANDLER : 0;
}

static const sks_handler_class dg_class = {
    .setup = sks_datagram_setup,
    .handle = dg_handle,
    .finish = sks_datagram_finish,
};

static int dg_client(const sks_addr *server, const char *bind_to)
{
    int fd = socket(server->u.sa.sa_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sks_addr me;
    FUZZ_CHECK(fd >= 0);
    if (bind_to != NULL) {
        FUZZ_CHECK(sks_addr_parse(bind_to, &me) == 0);
        FUZZ_CHECK(bind(fd, &me.u.sa, me.len) == 0);
    }
    FUZZ_CHECK(connect(fd, &server->u.sa, server->len) == 0);
    return fd;
}

/* A Unix name of this process for tag: abstract where there are such
 * names, else a file in /tmp (removed by fuzz_datagram_cleanup). */
static void dg_unix_name(char *buf, size_t cap, const char *tag)
{
    if (sks__abstract_names())
        snprintf(buf, cap, "unix:@sks-fuzz-%s-%ld", tag, (long)getpid());
    else
        snprintf(buf, cap, "unix:/tmp/sks-fuzz-%s-%ld.sock", tag,
                 (long)getpid());
}

static void dg_setup(void)
{
    char name[SKS_ADDRSTRLEN];
    dg.ops[0] = sks_unix_dgram_ops;
    dg.ops[1] = sks_udp_ops;
    for (int i = 0; i < 2; i++) {
        dg.ops[i].handle_error = dg_handle_error;
        if (i == 0)
            dg_unix_name(name, sizeof(name), "dgram");
        else
            snprintf(name, sizeof(name), "127.0.0.1:0");
        FUZZ_CHECK(sks_server_new(&dg.srv[i], &dg.ops[i], name, &dg_class,
                                  NULL, 0) == 0);
        /* Bounded: the datagram is queued before handle_request runs. */
        FUZZ_CHECK(sks_server_set_timeout(dg.srv[i], 5.0) == 0);
    }
    dg_unix_name(name, sizeof(name), "dgram-client");
    dg.client[0] = dg_client(sks_server_address(dg.srv[0]), name);
    dg.client[1] = dg_client(sks_server_address(dg.srv[1]), "127.0.0.1:0");
    dg.unnamed = dg_client(sks_server_address(dg.srv[0]), NULL);
    dg.ready = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[8] = { 1, 2, 3, 7, 16, 100, 1000, 8192 };
    fuzz_in in = { data, size };

    if (!dg.ready)
        dg_setup();
    uint8_t flags = fuzz_byte(&in), b_max = fuzz_byte(&in);
    int t = flags & 1;
    bool unnamed = t == 0 && (flags & 2);
    dg.fail = (flags & 4) != 0;
    dg.max_packet = maxes[b_max % 8];
    FUZZ_CHECK(sks_server_set_max_packet_size(dg.srv[t], dg.max_packet) == 0);
    dg.nops = fuzz_byte(&in) % 65;
    size_t opbytes = dg.nops * 2;
    dg.ops_script = fuzz_bytes(&in, &opbytes);
    dg.nops = opbytes / 2;
    dg.packet_len = in.n;
    dg.packet = fuzz_bytes(&in, &dg.packet_len);
    dg.written_len = 0;
    dg.handled = false;
    dg.errors = 0;
    dg.last_err = 0;

    int c = unnamed ? dg.unnamed : dg.client[t];
    FUZZ_CHECK(send(c, dg.packet, dg.packet_len, MSG_NOSIGNAL) ==
               (ssize_t)dg.packet_len);
    FUZZ_CHECK(sks_server_handle_request(dg.srv[t]) == 0);
    FUZZ_CHECK(dg.handled);

    /* An unnamed peer cannot be answered: finish reports it, and its
     * error wins over the handler's. */
    int want_err = unnamed ? -EDESTADDRREQ : dg.fail ? SKS_EHANDLER : 0;
    FUZZ_CHECK(dg.errors == (want_err != 0));
    FUZZ_CHECK(dg.last_err == want_err);
    if (!unnamed) {
        /* Exactly one reply, even an empty one, holding every write. */
        uint8_t *reply = malloc(dg.written_len + 1);
        FUZZ_CHECK(reply != NULL);
        ssize_t n = recv(c, reply, dg.written_len + 1, MSG_DONTWAIT);
        FUZZ_CHECK(n == (ssize_t)dg.written_len);
        FUZZ_CHECK(n == 0 || memcmp(reply, dg.written, (size_t)n) == 0);
        free(reply);
    }
    char spare;
    FUZZ_CHECK(recv(c, &spare, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);
    return 0;
}

/* For the replay test: close what the first input set up. */
void fuzz_datagram_cleanup(void);
void fuzz_datagram_cleanup(void)
{
    if (!dg.ready)
        return;
    for (int i = 0; i < 2; i++) {
        sks_server_free(dg.srv[i]);
        close(dg.client[i]);
    }
    close(dg.unnamed);
    if (!sks__abstract_names()) {
        char name[SKS_ADDRSTRLEN];
        dg_unix_name(name, sizeof(name), "dgram");
        unlink(name + 5);
        dg_unix_name(name, sizeof(name), "dgram-client");
        unlink(name + 5);
    }
    free(dg.written);
    dg.written = NULL;
    dg.written_cap = 0;
    dg.ready = false;
}
