/*
 * table.c - validated tables: a server calls a filled copy of the table it
 * was given, never the table itself, so that a member the table's version
 * predates or an optional member left NULL runs the base behaviour instead
 * of crashing (SQLite's iVersion discipline).  The same for handler
 * classes.
 */
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

/* The bytes of sks_server_ops each version defines: a table built against
 * an older header is only that long. */
static size_t ops_size(unsigned version)
{
    return version >= 2 ? sizeof(sks_server_ops)
                        : offsetof(sks_server_ops, model);
}

int sks__table_copy(sks_server_ops *out, const sks_server_ops *in)
{
    if (in->version > SKS_OPS_VERSION)
        return -EINVAL; /* members we cannot know of */
    memset(out, 0, sizeof(*out));
    memcpy(out, in, ops_size(in->version));
    return 0;
}

int sks__table_fill(sks_server_ops *out, const sks_server_ops *in)
{
    int err = sks__table_copy(out, in);
    if (err != 0)
        return err;

    /* The transport's own work has no base behaviour to fall back on. */
    if ((out->socket_type != SOCK_STREAM && out->socket_type != SOCK_DGRAM) ||
        out->server_bind == NULL || out->server_activate == NULL ||
        out->get_request == NULL || out->close_request == NULL ||
        out->server_close == NULL)
        return -EINVAL;

    /* Everything else is BaseServer's when left out. */
    if (out->verify_request == NULL)
        out->verify_request = sks_base_verify_request;
    if (out->process_request == NULL)
        out->process_request = sks_base_process_request;
    if (out->finish_request == NULL)
        out->finish_request = sks_base_finish_request;
    if (out->shutdown_request == NULL)
        out->shutdown_request = sks_base_shutdown_request;
    if (out->handle_error == NULL)
        out->handle_error = sks_base_handle_error;
    if (out->handle_timeout == NULL)
        out->handle_timeout = sks_base_handle_timeout;
    if (out->service_actions == NULL)
        out->service_actions = sks_base_service_actions;
    if (out->refuse_request == NULL)
        out->refuse_request = sks_base_refuse_request;
    if (out->serve_forever == NULL)
        out->serve_forever = sks_base_serve_forever;
    out->version = SKS_OPS_VERSION;
    return 0;
}

/* The same for handler classes: version 2 added the deadlines. */
static size_t handler_size(unsigned version)
{
    return version >= 2 ? sizeof(sks_handler_class)
                        : offsetof(sks_handler_class, request_timeout);
}

int sks__handler_fill(sks_handler_class *out, const sks_handler_class *in)
{
    /* Every member is optional (NULL or 0: nothing, or none). */
    if (in->version > SKS_HANDLER_VERSION)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    memcpy(out, in, handler_size(in->version));
    out->version = SKS_HANDLER_VERSION;
    return 0;
}

const sks_server_ops *sks__transport_table(const sks_server *srv)
{
    bool dgram = srv->ops->socket_type == SOCK_DGRAM;
    if (srv->ops->address_family == AF_UNIX)
        return dgram ? &sks_unix_dgram_ops : &sks_unix_stream_ops;
    return dgram ? &sks_udp_ops : &sks_tcp_ops;
}
