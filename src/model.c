/*
 * model.c - the concurrency models a server runs: which ones a table
 * names, attaching them at creation, and the core's walk over them (limit,
 * stats, cut, done, close, free).  Nothing here knows any model's state.
 *
 * A table names its models along its `parent` chain: each table's own
 * `model` (version 2), or, for a table without one, the library's model
 * whose process_request or serve_forever it carries.  A server runs at
 * most one model that runs requests and one that runs the loop; with none
 * that runs requests it is synchronous (BaseServer's process_request).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

/* Longer parent chains are refused: one that long is a cycle. */
#define MAX_DEPTH 8

static const sks_model *const library_models[] = {
    &sks__threading_model,
    &sks__forking_model,
    &sks__pool_model,
    &sks__prefork_model,
};

/* The models table t itself adds: up to one per role. */
static size_t models_of(const sks_server_ops *t, const sks_model *out[2])
{
    if (t->version >= 2 && t->model != NULL) {
        out[0] = t->model;
        return 1;
    }
    size_t n = 0;
    for (size_t i = 0; i < sizeof(library_models) / sizeof(*library_models);
         i++) {
        const sks_model *m = library_models[i];
        if ((m->process_request != NULL &&
             t->process_request == m->process_request) ||
            (m->serve_forever != NULL && t->serve_forever == m->serve_forever))
            out[n++] = m;
    }
    return n;
}

/* The roles the models along base's chain take; -EINVAL for a table too
 * new or a chain too long. */
static int chain_roles(const sks_server_ops *base, unsigned *roles)
{
    size_t depth = 0;
    *roles = 0;
    for (const sks_server_ops *t = base; t != NULL; t = t->parent) {
        const sks_model *m[2];
        if (++depth > MAX_DEPTH || t->version > SKS_OPS_VERSION)
            return -EINVAL;
        for (size_t i = models_of(t, m); i-- > 0;)
            *roles |= m[i]->roles;
    }
    return 0;
}

static bool names(const sks_server_ops *t, const sks_model *m)
{
    const sks_model *found[2];
    for (size_t i = models_of(t, found); i-- > 0;)
        if (found[i] == m)
            return true;
    return false;
}

/* The table model m, named by t, wrapped: the parent of the deepest table
 * in t's chain that names m.  A hand-built "subclass" of a mixed table
 * (parent: sks_threading_tcp_ops, process_request: threading's) names the
 * model twice; its super is still the transport, never a table whose
 * hooks are m's own, which would call themselves. */
static const sks_server_ops *super_of(const sks_server_ops *t,
                                      const sks_model *m)
{
    const sks_server_ops *super = t->parent;
    size_t depth = 0;
    for (const sks_server_ops *p = t->parent; p != NULL && ++depth <= MAX_DEPTH;
         p = p->parent)
        if (p->version <= SKS_OPS_VERSION && names(p, m))
            super = p->parent;
    return super;
}

static int add(sks_server *srv, const sks_model *m, const sks_server_ops *t)
{
    for (size_t i = 0; i < srv->nmodels; i++) {
        if (srv->models[i].model == m)
            return 0; /* named again further down the chain */
        if (srv->models[i].model->roles & m->roles)
            return -EINVAL;
    }
    if (srv->nmodels == SKS__MAX_MODELS)
        return -EINVAL;
    struct sks__slot *s = &srv->models[srv->nmodels];
    /* The model's "super": the table it wrapped, or the transport's. */
    const sks_server_ops *super = super_of(t, m);
    int err = sks__table_fill(&s->wrapped, super != NULL
                                               ? super
                                               : sks__transport_table(srv));
    if (err != 0)
        return err;
    s->model = m;
    s->state = NULL;
    srv->nmodels++;
    return 0;
}

int sks__models_attach(sks_server *srv)
{
    size_t depth = 0;
    int err = 0;
    for (const sks_server_ops *t = srv->given; t != NULL && err == 0;
         t = t->parent) {
        const sks_model *m[2];
        if (++depth > MAX_DEPTH || t->version > SKS_OPS_VERSION)
            return -EINVAL;
        size_t n = models_of(t, m);
        for (size_t i = 0; i < n && err == 0; i++)
            err = add(srv, m[i], t);
    }
    for (size_t i = 0; i < srv->nmodels && err == 0; i++) {
        struct sks__slot *s = &srv->models[i];
        if (s->model->attach != NULL)
            err = s->model->attach(srv, &s->state);
    }
    return err;
}

static const struct sks__slot *slot_of(const sks_server *srv,
                                       const sks_model *m)
{
    for (size_t i = 0; i < srv->nmodels; i++)
        if (srv->models[i].model == m)
            return &srv->models[i];
    return NULL;
}

void *sks__model_state(const sks_server *srv, const sks_model *m)
{
    const struct sks__slot *s = slot_of(srv, m);
    return s != NULL ? s->state : NULL;
}

const sks_server_ops *sks__model_super(const sks_server *srv,
                                       const sks_model *m)
{
    const struct sks__slot *s = slot_of(srv, m);
    return s != NULL ? &s->wrapped : sks__transport_table(srv);
}

size_t sks__models_limit(const sks_server *srv)
{
    size_t lim = 0;
    for (size_t i = 0; i < srv->nmodels; i++) {
        const struct sks__slot *s = &srv->models[i];
        size_t l = s->model->limit != NULL ? s->model->limit(s->state) : 0;
        if (l != 0 && (lim == 0 || l < lim))
            lim = l;
    }
    return lim;
}

void sks__models_stats(const sks_server *srv, sks_stats *out)
{
    for (size_t i = 0; i < srv->nmodels; i++) {
        const struct sks__slot *s = &srv->models[i];
        if (s->model->stats != NULL)
            s->model->stats(s->state, out);
    }
}

size_t sks__models_cut(sks_server *srv, int sig)
{
    size_t n = 0;
    for (size_t i = 0; i < srv->nmodels; i++) {
        struct sks__slot *s = &srv->models[i];
        if (s->model->cut != NULL)
            n += s->model->cut(s->state, sig);
    }
    return n;
}

bool sks__models_done(sks_server *srv)
{
    for (size_t i = 0; i < srv->nmodels; i++) {
        struct sks__slot *s = &srv->models[i];
        if (s->model->done != NULL && s->model->done(srv, s->state))
            return true;
    }
    return false;
}

void sks__models_close(sks_server *srv)
{
    for (size_t i = 0; i < srv->nmodels; i++) {
        struct sks__slot *s = &srv->models[i];
        if (s->model->close != NULL)
            s->model->close(srv, s->state);
    }
}

void sks__models_free(sks_server *srv)
{
    for (size_t i = 0; i < srv->nmodels; i++) {
        struct sks__slot *s = &srv->models[i];
        if (s->model->free != NULL && s->state != NULL)
            s->model->free(s->state);
        s->state = NULL;
    }
    srv->nmodels = 0;
}

int sks__mixin_wrap(sks_server_ops *out, const sks_server_ops *base,
                    const sks_model *m)
{
    sks_server_ops copy;
    unsigned taken;
    if (out == NULL || base == NULL || out == base)
        return -EINVAL;
    int err = chain_roles(base, &taken);
    /* Two models that run requests, or two loops, would each take every
     * request (or the loop) from the other: refused, not guessed at. */
    if (err == 0 && (taken & m->roles) != 0)
        err = -EINVAL;
    if (err == 0)
        err = sks__table_copy(&copy, base);
    if (err != 0)
        return err;
    copy.version = SKS_OPS_VERSION;
    copy.parent = base;
    copy.model = m;
    *out = copy;
    return 0;
}
