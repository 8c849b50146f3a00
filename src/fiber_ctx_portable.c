/*
 * fiber_ctx_portable.c - the fiber context switch where there is no
 * hand-written one (another CPU, or macOS, whose Mach-O the assembly files
 * are not written for), and on any architecture with -DSKS_FIBER_PORTABLE
 * (this file alone) or -DSKS_PORTABLE (every fallback: make test-portable
 * runs the fiber model on it), so that it is tested where the others are
 * used.
 *
 * ucontext is used once per fiber, to enter its stack the first time;
 * every later switch is _setjmp/_longjmp, which save no signal mask and
 * make no system call (swapcontext makes two: sigprocmask each way).
 * _setjmp keeps no FP control state, so the switch keeps the rounding
 * mode itself (fegetround/fesetround: the part of it C lets a program
 * change; the GNU feenableexcept trap mask is not kept).  A
 * context is the address of what its switch left on its own stack: the
 * jmp_buf of a switch in progress, or the ucontext of a fiber not entered
 * yet, told apart by `first`.
 */
/* glibc's fortified longjmp (__longjmp_chk) refuses a jump to another
 * stack, which is the whole point here. */
#undef _FORTIFY_SOURCE
#define _GNU_SOURCE /* ucontext: gone from POSIX.1-2008 */
#define _XOPEN_SOURCE 700 /* macOS: its ucontext_t is complete only so */

#include "internal.h"

#if defined(SKS_FIBER_PORTABLE) || defined(SKS_PORTABLE) ||                \
    !defined(__ELF__) || !(defined(__x86_64__) || defined(__aarch64__))

#include <fenv.h>
#include <setjmp.h>
#include <stdint.h>
#include <ucontext.h>

struct saved {
    bool first;
    int round;                 /* the context's rounding mode */
    union {
        jmp_buf jb;            /* !first: a suspended sks__fctx_switch */
        struct {               /* first: a fiber never entered */
            ucontext_t uc;
            void (*entry)(void *);
            void *arg;
        } start;
    } u;
};

/* makecontext passes only ints; the first frame finds its record here. */
static _Thread_local struct saved *starting;

static void first_frame(void)
{
    struct saved *s = starting;

    if (fegetround() != s->round)
        (void)fesetround(s->round);
    s->u.start.entry(s->u.start.arg);
}

void *sks__fctx_make(void *lo, void *top, void (*entry)(void *), void *arg)
{
    struct saved *s = (struct saved *)((uintptr_t)top & ~(uintptr_t)15) - 1;

    s->first = true;
    s->round = fegetround();
    s->u.start.entry = entry;
    s->u.start.arg = arg;
    (void)getcontext(&s->u.start.uc);
    s->u.start.uc.uc_link = NULL;
    s->u.start.uc.uc_stack.ss_sp = lo;
    s->u.start.uc.uc_stack.ss_size = (size_t)((char *)s - (char *)lo);
    makecontext(&s->u.start.uc, first_frame, 0);
    return s;
}

void sks__fctx_switch(void **save, void *load)
{
    struct saved here = { .first = false, .round = fegetround() };
    struct saved *to = load;

    *save = &here;
    if (_setjmp(here.u.jb) == 0) {
        if (to->first) {
            to->first = false;
            starting = to;
            (void)setcontext(&to->u.start.uc);
        }
        _longjmp(to->u.jb, 1);
    }
    if (fegetround() != here.round)
        (void)fesetround(here.round);
}

#endif
