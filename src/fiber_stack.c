/*
 * fiber_stack.c - fiber stacks: mmap'd, guarded, cached per owner.
 *
 * A stack is one anonymous mapping: a PROT_NONE guard page at the low end
 * (stacks grow down), the stack, and the descriptor in its last bytes.
 * Reserved without swap where the platform can (sks__map_stack), and in
 * any case a 256 KiB stack costs only the pages its fiber touched.  A free stack goes back to its owner's cache (a LIFO
 * list: the most recently used stack has the most pages still resident
 * and cached) until max_free are kept; beyond that it is unmapped.
 */
#include "internal.h"

#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>) && !defined(SKS_NO_TOOL_ANNOTATIONS)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_STACK_REGISTER
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#endif
#ifndef VALGRIND_MAKE_MEM_UNDEFINED
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

#ifdef SKS__ASAN
#include <sanitizer/asan_interface.h>
#endif

/* Stack starts rotate over this many 64-byte steps, so that fibers parked
 * at the same depth do not all map to the same L1 cache sets (PhotonLibOS
 * measured a 13 % L1D miss rate from identically aligned stacks).  Small,
 * so the offset seldom costs a page. */
#define COLOURS 16u
#define COLOUR_STEP 64u

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

void sks__stack_cache_init(struct sks__stack_cache *c, size_t size,
                           unsigned max_free)
{
    size_t page = page_size();

    if (size == 0)
        size = SKS__FIBER_STACK_DEFAULT;
    if (size < SKS__FIBER_STACK_MIN)
        size = SKS__FIBER_STACK_MIN;
    *c = (struct sks__stack_cache){
        .size = (size + page - 1) / page * page,
        .max_free = max_free,
    };
}

static int map_stack(size_t size, struct sks__stack **out)
{
    size_t page = page_size();
    size_t len = page + size;
    char *map = sks__map_stack(len);
    if (map == MAP_FAILED)
        return -errno;
    if (mprotect(map, page, PROT_NONE) != 0) {
        int err = -errno;
        (void)munmap(map, len);
        return err;
    }
    struct sks__stack *s = (struct sks__stack *)(map + len) - 1;
    s->lo = map + page;
    s->map_len = len;
    s->vg_id = VALGRIND_STACK_REGISTER(s->lo, (char *)s);
    *out = s;
    return 0;
}

static void unmap_stack(struct sks__stack *s)
{
    char *map = s->lo - page_size();
    size_t len = s->map_len;

    VALGRIND_STACK_DEREGISTER(s->vg_id);
#ifdef SKS__ASAN
    /* The shadow of an unmapped range keeps its poison, and the next
     * mapping there (a malloc arena, another stack) would inherit it. */
    __asan_unpoison_memory_region(map, len);
#endif
    (void)munmap(map, len);
}

int sks__stack_get(struct sks__stack_cache *c, struct sks__stack **out)
{
    struct sks__stack *s = c->free;

    if (s != NULL) {
        c->free = s->next;
        c->nfree--;
        /* Memcheck marked what lay below its last fiber's stack pointer
         * as unaddressable; the next fiber's first frame may start there
         * (the start offset rotates).  As ASan's poison, on put. */
        VALGRIND_MAKE_MEM_UNDEFINED(s->lo, (size_t)((char *)s - s->lo));
    } else {
        int err = map_stack(c->size, &s);
        if (err != 0)
            return err;
    }
    uintptr_t start = (uintptr_t)s - (c->colour++ % COLOURS) * COLOUR_STEP;
    s->hi = (char *)(start & ~(uintptr_t)15);
    s->next = NULL;
    c->live++;
    *out = s;
    return 0;
}

void sks__stack_put(struct sks__stack_cache *c, struct sks__stack *s)
{
    c->live--;
    if (c->nfree >= c->max_free) {
        unmap_stack(s);
        return;
    }
#ifdef SKS__ASAN
    /* A fiber released while parked leaves its frames' redzones poisoned;
     * the next fiber on this stack must not trip over them. */
    __asan_unpoison_memory_region(s->lo, (size_t)((char *)s - s->lo));
#endif
    s->next = c->free;
    c->free = s;
    c->nfree++;
}

void sks__stack_cache_fini(struct sks__stack_cache *c)
{
    while (c->free != NULL) {
        struct sks__stack *s = c->free;
        c->free = s->next;
        unmap_stack(s);
    }
    c->nfree = 0;
}
