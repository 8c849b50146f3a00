/*
 * error.c - names and descriptions of error codes (0 or negative errno,
 * plus the library's SKS_E* codes).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>

#define SKS__OWN_ERRORS(X)                                                   \
    X(SKS_EHANDLER, "request handler failed")                                \
    X(SKS_EADDRESS, "malformed address string")                              \
    X(SKS_ECLOSED, "server is closed")

const char *sks_strerror(int err)
{
    switch (err) {
#define X(code, text) case code: return text;
    SKS__OWN_ERRORS(X)
#undef X
    case 0:
        return "Success";
    default:
        break;
    }
    if (err < 0)
        err = -err;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    /* Thread-safe and never NULL for known codes. */
    const char *s = strerrordesc_np(err);
    return s ? s : "Unknown error";
#else
    return strerror(err);
#endif
}

const char *sks_errname(int err)
{
    switch (err) {
#define X(code, text) case code: return #code;
    SKS__OWN_ERRORS(X)
#undef X
    case 0:
        return "OK";
    default:
        break;
    }
    if (err < 0)
        err = -err;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 32)
    const char *s = strerrorname_np(err);
    return s ? s : "E?";
#else
    return "E?";
#endif
}
