/*
 * admission.c - admission and accounting: the concurrency bound in force
 * (the models' and max_connections), admitting or refusing a verified
 * request, the counters, and the list of admitted stream requests a drain
 * cuts.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <sys/socket.h>

size_t sks__active(const sks_server *srv)
{
    sks_server *m = (sks_server *)srv;
    /* Ends first: a request that ends between the two loads then shows as
     * active a moment longer, never as a negative count. */
    size_t ended = atomic_load(&m->completed) + atomic_load(&m->failed);
    return atomic_load(&m->accepted) - ended;
}

/* The bound in force: the models' and max_connections, whichever is
 * lower. */
static size_t limit(const sks_server *srv)
{
    size_t a = sks__models_limit(srv), b = srv->max_connections;
    if (a == 0 || (b != 0 && b < a))
        return b;
    return a;
}

bool sks__at_limit(const sks_server *srv)
{
    size_t l = limit(srv);
    return l != 0 && sks__active(srv) >= l;
}

bool sks__paused(const sks_server *srv)
{
    return srv->overload_policy != SKS_OVERLOAD_REFUSE && sks__at_limit(srv);
}

/*
 * SKS_OVERLOAD_SHED_IDLE: the in-flight connection that makes the least of
 * its slot is shut down, so its handler sees end of input and the slot
 * frees: the one idle the longest (between requests); with none idle, the
 * one whose handler has waited the longest, at least SHED_MIN_WAIT, on its
 * client (a request still trickling in, a response the client does not
 * read).  A client that sent its request at once is being served, not
 * waiting, and is never chosen.
 */
#define SHED_MIN_WAIT 0.1

bool sks__shed_one(sks_server *srv)
{
    sks_request *idle = NULL, *waiting = NULL;
    double idle_since = INFINITY;
    double waiting_since = sks__now() - SHED_MIN_WAIT;
    pthread_mutex_lock(&srv->lock);
    for (sks_request *r = srv->inflight; r != NULL; r = r->next) {
        if (atomic_load(&r->wait.shed))
            continue;
        double i = atomic_load_explicit(&r->wait.idle_since,
                                        memory_order_relaxed);
        double w = atomic_load_explicit(&r->wait.waiting_since,
                                        memory_order_relaxed);
        if (i > 0 && i < idle_since) {
            idle_since = i;
            idle = r;
        } else if (i == 0 && w > 0 && w <= waiting_since) {
            waiting_since = w;
            waiting = r;
        }
    }
    sks_request *victim = idle != NULL ? idle : waiting;
    if (victim != NULL) {
        atomic_store(&victim->wait.shed, true);
        (void)shutdown(victim->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&srv->lock);
    return victim != NULL;
}

static void inflight_add(sks_server *srv, sks_request *req)
{
    pthread_mutex_lock(&srv->lock);
    req->next = srv->inflight;
    if (srv->inflight != NULL)
        srv->inflight->prev = req;
    srv->inflight = req;
    pthread_mutex_unlock(&srv->lock);
}

/* Before the socket is closed, so a drain never shuts down a descriptor
 * number that has been reused. */
void sks__inflight_remove(sks_server *srv, sks_request *req)
{
    pthread_mutex_lock(&srv->lock);
    if (req->prev != NULL)
        req->prev->next = req->next;
    else if (srv->inflight == req)
        srv->inflight = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->prev = req->next = NULL;
    pthread_mutex_unlock(&srv->lock);
}

/* A drain's cut: blocked handlers see end of input, queued ones end at
 * once.  Returns how many connections were shut down. */
size_t sks__inflight_cut(sks_server *srv)
{
    size_t n = 0;
    pthread_mutex_lock(&srv->lock);
    for (sks_request *r = srv->inflight; r != NULL; r = r->next) {
        (void)shutdown(r->fd, SHUT_RDWR);
        n++;
    }
    pthread_mutex_unlock(&srv->lock);
    return n;
}

void sks__count_end(sks_server *srv, bool failed)
{
    bool was_at_limit = sks__at_limit(srv);
    atomic_fetch_add(failed ? &srv->failed : &srv->completed, 1);
    /* The loop may be asleep without the listening socket: reopen it. */
    if (was_at_limit)
        sks__wake(srv);
}

void sks__admit(sks_server *srv, sks_request *req)
{
    req->admitted = true;
    if (!req->datagram)
        inflight_add(srv, req);
    atomic_fetch_add(&srv->accepted, 1);
}

void sks__refuse(sks_server *srv, sks_request *req, bool overload)
{
    atomic_fetch_add(&srv->refused, 1);
    if (overload)
        srv->ops->refuse_request(srv, req);
    sks_server_shutdown_request(srv, req);
}

size_t sks_server_active_requests(const sks_server *srv)
{
    return sks__active(srv);
}

int sks_server_set_max_connections(sks_server *srv, size_t n)
{
    srv->max_connections = n;
    return 0;
}

int sks_server_set_overload_policy(sks_server *srv, int policy)
{
    if (policy != SKS_OVERLOAD_BACKPRESSURE && policy != SKS_OVERLOAD_REFUSE &&
        policy != SKS_OVERLOAD_SHED_IDLE)
        return -EINVAL;
    srv->overload_policy = policy;
    return 0;
}

void sks_server_stats(const sks_server *srv, sks_stats *out)
{
    sks_server *m = (sks_server *)srv;
    /* One moment's counts: when no request ended while accepted was read
     * (the ends read again are unchanged), accepted - ended is exactly
     * what was active then, so active never shows above the bound.  Ends
     * are read first so that it is never negative either; a few tries
     * suffice, and the last is kept if requests keep ending (it can then
     * show a request that has just ended as active). */
    for (int tries = 0; tries < 8; tries++) {
        out->completed = atomic_load(&m->completed);
        out->failed = atomic_load(&m->failed);
        out->accepted = atomic_load(&m->accepted);
        if (atomic_load(&m->completed) == out->completed &&
            atomic_load(&m->failed) == out->failed)
            break;
    }
    out->refused = atomic_load(&m->refused);
    out->timed_out = atomic_load(&m->timed_out);
    out->active = out->accepted - out->completed - out->failed;
    out->queued = 0;
    out->workers = 0;
    sks__models_stats(m, out);
}
