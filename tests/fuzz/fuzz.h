/*
 * fuzz.h - what the libFuzzer targets share: the oracle check, and a model
 * of the reader (rfile) that says what each read must return.
 *
 * Each target is built two ways: with libFuzzer (make fuzz), where a failed
 * check aborts so libFuzzer saves the input; and inside the cmocka test
 * tests/test_fuzz_corpus.c, which replays the committed corpus under make
 * test / asan / tsan / valgrind and defines FUZZ_FAIL as a cmocka failure.
 */
#ifndef SKS_FUZZ_H
#define SKS_FUZZ_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "sockserver.h"

#ifndef FUZZ_FAIL
#define FUZZ_FAIL(what)                                                      \
    (fprintf(stderr, "fuzz oracle failed: %s (%s:%d)\n", what, __FILE__,     \
             __LINE__),                                                      \
     abort())
#endif
#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond))                                                         \
            FUZZ_FAIL(#cond);                                                \
    } while (0)

/* Consumes the input front to back; reads past the end give zeros. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static inline uint8_t fuzz_byte(fuzz_in *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t *len)
{
    const uint8_t *p = in->p;
    if (*len > in->n)
        *len = in->n;
    in->p += *len;
    in->n -= *len;
    return p;
}

/*
 * The reader model: the stream's whole content `data`, how much of it the
 * reader has returned (`pos`), and how the stream ends after the content:
 * end of input (end_err == 0) or an error (end_err, e.g. -ECONNRESET) on
 * every later read.  `lost` is set once a call may have consumed bytes it
 * did not return (read_all failing), after which only bounds are checked.
 */
typedef struct fuzz_model {
    const uint8_t *data;
    size_t len, pos;
    int end_err;
    size_t rbufsize;
    bool lost;
} fuzz_model;

/* The readline answer over the rest, when the stream ends (or not) right
 * after the data: *complete is false when the answer depends on reaching
 * the end and the end is an error. */
static inline size_t fuzz_model_line(const fuzz_model *m, size_t cap,
                                     bool *complete)
{
    size_t rest = m->len - m->pos;
    size_t upto = rest < cap ? rest : cap;
    const uint8_t *nl = memchr(m->data + m->pos, '\n', upto);
    *complete = true;
    if (nl != NULL)
        return (size_t)(nl - (m->data + m->pos)) + 1;
    if (rest >= cap)
        return cap;
    *complete = m->end_err == 0;
    return rest;
}

/*
 * Checks a readline-like result r (bytes at `got`) for a request of at most
 * cap bytes.  partial_ok: the call may return a short piece before an
 * error end (readline does; readline_view never does).
 */
static inline void fuzz_model_check_line(fuzz_model *m, ssize_t r,
                                         const void *got, size_t cap,
                                         bool partial_ok)
{
    bool complete;
    size_t want = fuzz_model_line(m, cap, &complete);
    FUZZ_CHECK(r <= (ssize_t)cap);
    if (m->lost) {
        FUZZ_CHECK(r >= 0 || (m->end_err != 0 && r == m->end_err));
        return;
    }
    if (complete) {
        FUZZ_CHECK(r == (ssize_t)want);
    } else if (r < 0) {
        /* The stream ends in an error before the line is complete: the
         * error is reported and nothing is consumed. */
        FUZZ_CHECK(r == m->end_err);
        return;
    } else {
        FUZZ_CHECK(partial_ok);
        FUZZ_CHECK(r > 0 && (size_t)r <= want);
    }
    FUZZ_CHECK(r == 0 || memcmp(got, m->data + m->pos, (size_t)r) == 0);
    /* A piece ends in '\n' only if it is a whole line: no '\n' before. */
    FUZZ_CHECK(r == 0 || memchr(got, '\n', (size_t)r - 1) == NULL);
    m->pos += (size_t)r;
}

/* Checks sks_rfile_read(n)'s result. */
static inline void fuzz_model_check_read(fuzz_model *m, ssize_t r,
                                         const void *got, size_t n)
{
    size_t rest = m->len - m->pos;
    FUZZ_CHECK(r <= (ssize_t)n);
    if (m->lost)
        return;
    if (rest >= n || m->end_err == 0) {
        FUZZ_CHECK(r == (ssize_t)(rest < n ? rest : n));
    } else if (r < 0) {
        FUZZ_CHECK(r == m->end_err);
        return;
    } else {
        /* Bytes read before the error are returned first. */
        FUZZ_CHECK(r > 0 && (size_t)r <= rest);
    }
    FUZZ_CHECK(r == 0 || memcmp(got, m->data + m->pos, (size_t)r) == 0);
    m->pos += (size_t)r;
}

/* Checks sks_rfile_read_all(max)'s result (data: the buffer, or NULL). */
static inline void fuzz_model_check_read_all(fuzz_model *m, ssize_t r,
                                             const void *data, size_t max)
{
    size_t rest = m->len - m->pos;
    if (r < 0)
        FUZZ_CHECK(data == NULL);
    if (m->lost)
        return;
    if (rest > max) {
        /* It reads max + 1 bytes to know there is more, and drops them. */
        FUZZ_CHECK(r == -EMSGSIZE);
        m->lost = true;
        return;
    }
    if (m->end_err != 0) {
        FUZZ_CHECK(r == m->end_err);
        m->lost = true;
        return;
    }
    FUZZ_CHECK(r == (ssize_t)rest);
    FUZZ_CHECK(data != NULL);
    FUZZ_CHECK(rest == 0 || memcmp(data, m->data + m->pos, rest) == 0);
    m->pos = m->len;
}

/*
 * Runs one reader operation chosen by (op, arg) on r and checks it against
 * the model.  Operations: readline, readline_view, read, read_all.  Every
 * buffer is allocated at its exact size so that AddressSanitizer sees any
 * byte written past it.
 */
static inline void fuzz_reader_op(sks_rfile *r, fuzz_model *m, uint8_t op,
                                  uint8_t arg)
{
    switch (op % 4) {
    case 0: { /* readline(cap), cap 1..256: lines at, under and over it */
        size_t cap = (size_t)arg + 1;
        char *buf = malloc(cap);
        FUZZ_CHECK(buf != NULL);
        ssize_t n = sks_rfile_readline(r, buf, cap);
        fuzz_model_check_line(m, n, buf, cap, true);
        free(buf);
        break;
    }
    case 1: { /* readline_view(max): at most min(max, rbufsize) */
        size_t max = arg == 255 ? SIZE_MAX : (size_t)arg + 1;
        size_t limit = max < m->rbufsize ? max : m->rbufsize;
        const char *line = NULL;
        ssize_t n = sks_rfile_readline_view(r, &line, max);
        if (n > 0)
            FUZZ_CHECK(line != NULL);
        fuzz_model_check_line(m, n, line, limit, false);
        break;
    }
    case 2: { /* read(n), small and buffer-bypassing large reads */
        size_t n = arg < 200 ? arg : (size_t)(arg - 199) * 97;
        char *buf = malloc(n ? n : 1);
        FUZZ_CHECK(buf != NULL);
        ssize_t k = sks_rfile_read(r, buf, n);
        fuzz_model_check_read(m, k, buf, n);
        free(buf);
        break;
    }
    default: { /* read_all(max) */
        size_t max = arg == 255 ? SIZE_MAX : (size_t)arg * 8;
        void *data = (void *)1;
        ssize_t k = sks_rfile_read_all(r, &data, max);
        fuzz_model_check_read_all(m, k, data, max);
        free(data);
        break;
    }
    }
}

#endif
