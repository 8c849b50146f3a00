/*
 * fiber_switch.c - fibers: a context and a stack, and the switch between
 * them that the sanitizers are told about.
 *
 * The platform file moves registers; this file keeps the tools right.
 * AddressSanitizer tracks which stack is current, to unpoison the right
 * frames and to report with the right bounds: every switch is bracketed
 * by __sanitizer_start_switch_fiber (before leaving, with the stack
 * arrived at) and __sanitizer_finish_switch_fiber (after arriving, which
 * reports the stack left; that is how a thread's own stack bounds become
 * known).  A fiber's last switch passes no fake-stack slot, so ASan frees
 * its fake stack.  ThreadSanitizer keeps a shadow stack and a clock per
 * fiber: __tsan_switch_to_fiber goes immediately before the switch.
 * Valgrind is told of the stacks where they are mapped (fiber_stack.c).
 */
#include "internal.h"

#ifdef SKS__ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef SKS__TSAN
#include <sanitizer/tsan_interface.h>
#endif

static void depart(sks__fiber *from, sks__fiber *to)
{
#ifdef SKS__ASAN
    __sanitizer_start_switch_fiber(from->done ? NULL : &from->asan_fake,
                                   to->asan_bottom, to->asan_size);
#endif
#ifdef SKS__TSAN
    __tsan_switch_to_fiber(to->tsan, 0);
#endif
    (void)from;
    (void)to;
}

/* Running in self again, switched to by self->resumer. */
static void arrive(sks__fiber *self)
{
#ifdef SKS__ASAN
    __sanitizer_finish_switch_fiber(self->asan_fake,
                                    &self->resumer->asan_bottom,
                                    &self->resumer->asan_size);
#endif
    (void)self;
}

void sks__fiber_switch(sks__fiber *from, sks__fiber *to)
{
    to->resumer = from;
    depart(from, to);
    sks__fctx_switch(&from->sp, to->sp);
    arrive(from);
}

static void fiber_main(void *p)
{
    sks__fiber *f = p;

    arrive(f);
    f->fn(f->arg);
    f->done = true;
    sks__fiber_switch(f, f->resumer);
}

void sks__fiber_thread(sks__fiber *f)
{
    *f = (sks__fiber){ 0 };
#ifdef SKS__TSAN
    f->tsan = __tsan_get_current_fiber();
#endif
}

int sks__fiber_make(sks__fiber *f, struct sks__stack_cache *c,
                    void (*fn)(void *), void *arg)
{
    struct sks__stack *s;
    int err = sks__stack_get(c, &s);
    if (err != 0)
        return err;
    *f = (sks__fiber){
        .stack = s,
        .fn = fn,
        .arg = arg,
        .asan_bottom = s->lo,
        .asan_size = (size_t)(s->hi - s->lo),
    };
#ifdef SKS__TSAN
    f->tsan = __tsan_create_fiber(0);
#endif
    f->sp = sks__fctx_make(s->lo, s->hi, fiber_main, f);
    return 0;
}

void sks__fiber_release(sks__fiber *f, struct sks__stack_cache *c)
{
#ifdef SKS__TSAN
    __tsan_destroy_fiber(f->tsan);
    f->tsan = NULL;
#endif
    sks__stack_put(c, f->stack);
    f->stack = NULL;
}
