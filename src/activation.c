/*
 * activation.c - servers on inherited sockets: adopting a bound socket by
 * its descriptor, and systemd's socket-activation protocol (LISTEN_PID,
 * LISTEN_FDS, LISTEN_FDNAMES; descriptors from 3), read directly as
 * sd_listen_fds_with_names() does, without libsystemd.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Adopting a descriptor                                                     */

static bool family_suits(const sks_server_ops *ops, int family)
{
    if (ops->address_family == AF_UNIX)
        return family == AF_UNIX;
    return family == AF_INET || family == AF_INET6;
}

/* A datagram socket that never bound has no address to be reached at. */
static bool is_named(const sks_addr *a)
{
    switch (a->u.sa.sa_family) {
    case AF_INET:
        return a->u.in.sin_port != 0;
    case AF_INET6:
        return a->u.in6.sin6_port != 0;
    default:
        return a->len > sizeof(sa_family_t);
    }
}

/* Checks fd against ops without changing it; fills its address. */
static int check_socket(const sks_server_ops *ops, int fd, sks_addr *bound)
{
    int type, listening;
    socklen_t len;

    int domain = sks__socket_family(fd);
    if (domain < 0)
        return domain; /* EBADF, ENOTSOCK */
    len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
        return -errno;
    if (!family_suits(ops, domain))
        return -EAFNOSUPPORT;
    if (type != ops->socket_type)
        return -EPROTOTYPE;
    bound->len = sizeof(bound->u.ss);
    if (getsockname(fd, &bound->u.sa, &bound->len) != 0)
        return -errno;
    if (type == SOCK_STREAM) {
        len = sizeof(listening);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0)
            return -errno;
        if (!listening)
            return -EINVAL;
    } else if (!is_named(bound)) {
        return -EINVAL;
    }
    return 0;
}

/* The descriptor flags of the library's own sockets: close-on-exec; a
 * stream listener non-blocking (see sks_server_new), a datagram socket
 * blocking (its replies may wait for buffer room). */
static int set_flags(int fd, int socket_type)
{
    int fdflags = fcntl(fd, F_GETFD);
    if (fdflags < 0 || fcntl(fd, F_SETFD, fdflags | FD_CLOEXEC) != 0)
        return -errno;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    int want = socket_type == SOCK_STREAM ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
    if (want != fl && fcntl(fd, F_SETFL, want) != 0)
        return -errno;
    return 0;
}

int sks_server_new_from_fd(sks_server **out, const sks_server_ops *ops,
                           int fd, const sks_handler_class *handler,
                           void *user)
{
    sks_addr bound;
    int err;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    if (ops == NULL || handler == NULL)
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    err = check_socket(ops, fd, &bound);
    if (err == 0)
        err = set_flags(fd, ops->socket_type);
    if (err != 0)
        return err;
    return sks__server_make(out, ops, &bound, handler, user, fd);
}

/* ------------------------------------------------------------------------ */
/* Socket activation                                                         */

/*
 * The sockets passed to this process, remembered when
 * sks_server_new_activated reads the variables (and clears them), so that
 * several servers can each adopt one.  sks_listen_fds hands its
 * descriptors to the caller instead, who may close them: it does not
 * remember them.  Beyond MAX_PASSED, descriptors are still made
 * close-on-exec but cannot be adopted.
 */
#define MAX_PASSED 64
#define MAX_NAME 255 /* systemd's limit for FileDescriptorName= */

static pthread_mutex_t passed_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    int fd;
    bool adopted;
    char name[MAX_NAME + 1];
} passed[MAX_PASSED];
static size_t npassed;

/* A decimal number 0..max, the whole string. */
static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

/* The i-th colon-separated field of s, copied (truncated) into buf. */
static void field(const char *s, size_t i, char *buf, size_t cap)
{
    for (; i > 0; i--) {
        const char *colon = strchr(s, ':');
        if (colon == NULL) {
            buf[0] = '\0';
            return;
        }
        s = colon + 1;
    }
    size_t n = strcspn(s, ":");
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
}

static void free_names(char **names)
{
    if (names == NULL)
        return;
    for (char **p = names; *p != NULL; p++)
        free(*p);
    free(names);
}

/* sd_listen_fds_with_names(), remembering the descriptors when asked to;
 * the caller holds passed_lock. */
static int read_environment(bool unset, bool remember, char ***names_out)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *fds_s = getenv("LISTEN_FDS");
    const char *names_s = getenv("LISTEN_FDNAMES");
    char **names = NULL;
    unsigned long pid, n;
    int r = 0;

    if (pid_s == NULL)
        goto finish; /* not activated */
    if (!parse_uint(pid_s, (unsigned long)INT_MAX, &pid) || pid == 0) {
        r = -EINVAL;
        goto finish;
    }
    if ((pid_t)pid != getpid())
        goto finish; /* meant for another process (our parent, say) */
    /* Started by an upgrade: the pipe on which to say "ready". */
    sks__upgrade_inherit();
    if (!parse_uint(fds_s, (unsigned long)(INT_MAX - SKS_LISTEN_FDS_START),
                    &n)) {
        r = -EINVAL;
        goto finish;
    }
    if (names_s != NULL) {
        size_t count = 1;
        for (const char *p = names_s; *p; p++)
            count += *p == ':';
        if (count != n) {
            r = -EINVAL;
            goto finish;
        }
    }
    /* As sd_listen_fds: the passed descriptors must not leak into
     * programs this one executes. */
    for (unsigned long i = 0; i < n; i++) {
        int fd = SKS_LISTEN_FDS_START + (int)i;
        int fl = fcntl(fd, F_GETFD);
        if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) != 0) {
            r = -errno;
            goto finish;
        }
    }
    if (names_out != NULL && n > 0) {
        names = calloc(n + 1, sizeof(*names));
        if (names == NULL) {
            r = -ENOMEM;
            goto finish;
        }
        for (unsigned long i = 0; i < n; i++) {
            char name[MAX_NAME + 1] = "unknown";
            if (names_s != NULL)
                field(names_s, i, name, sizeof(name));
            if ((names[i] = strdup(name)) == NULL) {
                free_names(names);
                names = NULL;
                r = -ENOMEM;
                goto finish;
            }
        }
    }
    if (remember) {
        /* A new activation for this process: what was remembered before
         * belongs to an earlier one. */
        npassed = n < MAX_PASSED ? n : MAX_PASSED;
        for (size_t i = 0; i < npassed; i++) {
            passed[i].fd = SKS_LISTEN_FDS_START + (int)i;
            passed[i].adopted = false;
            if (names_s != NULL)
                field(names_s, i, passed[i].name, sizeof(passed[i].name));
            else
                strcpy(passed[i].name, "unknown");
        }
    }
    r = (int)n;

finish:
    if (unset) {
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        unsetenv(SKS__UPGRADE_FD_ENV);
    }
    if (names_out != NULL)
        *names_out = names;
    return r;
}

int sks_listen_fds(bool unset_environment, char ***names)
{
    pthread_mutex_lock(&passed_lock);
    int r = read_environment(unset_environment, false, names);
    pthread_mutex_unlock(&passed_lock);
    return r;
}

/*
 * After passed[first] became srv, a stream server: the passed listeners
 * of the same name bound to the same address (SO_REUSEPORT siblings: an
 * upgrade passes a server's whole set) join it, so that none is left with
 * a queue nobody accepts from.  The caller holds passed_lock.
 */
static void adopt_siblings(sks_server *srv, const sks_server_ops *ops,
                           size_t first)
{
    if (ops->socket_type != SOCK_STREAM)
        return;
    for (size_t i = first + 1; i < npassed; i++) {
        sks_addr bound;
        if (passed[i].adopted ||
            strcmp(passed[i].name, passed[first].name) != 0 ||
            check_socket(ops, passed[i].fd, &bound) != 0 ||
            bound.len != srv->address.len ||
            memcmp(&bound.u, &srv->address.u, bound.len) != 0 ||
            set_flags(passed[i].fd, ops->socket_type) != 0 ||
            sks__listener_adopt(srv, passed[i].fd) != 0)
            continue;
        passed[i].adopted = true;
    }
}

int sks_server_new_activated(sks_server **out, const sks_server_ops *ops,
                             const char *name,
                             const sks_handler_class *handler, void *user)
{
    int err = -ENOENT;

    if (out == NULL)
        return -EINVAL;
    *out = NULL;
    pthread_mutex_lock(&passed_lock);
    if (getenv("LISTEN_PID") != NULL || getenv("LISTEN_FDS") != NULL) {
        int r = read_environment(true, true, NULL);
        if (r < 0) {
            pthread_mutex_unlock(&passed_lock);
            return r;
        }
    }
    for (size_t i = 0; i < npassed; i++) {
        if (passed[i].adopted ||
            (name != NULL && strcmp(passed[i].name, name) != 0))
            continue;
        int r = sks_server_new_from_fd(out, ops, passed[i].fd, handler, user);
        if (r == 0) {
            /* Passed on by name to a successor (a copy: best effort). */
            (*out)->upgrade.name = strdup(passed[i].name);
            passed[i].adopted = true;
            adopt_siblings(*out, ops, i);
            err = 0;
            break;
        }
        /* Keep looking for one that suits; report the first misfit. */
        if (err == -ENOENT)
            err = r;
    }
    pthread_mutex_unlock(&passed_lock);
    return err;
}
