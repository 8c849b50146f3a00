/*
 * fiber_ctx_aarch64.S - the fiber context switch for aarch64 (AAPCS64).
 *
 * A context is its stack pointer: switching stores what the ABI says a
 * callee preserves (x19-x28, the frame pointer x29, the link register x30,
 * the low halves d8-d15 of v8-v15, and FPCR, so a handler's fesetround
 * stays in its fiber, as it would in its thread) in a frame on the
 * running stack, stores SP, loads the other SP and reloads the same
 * frame; `ret` through the reloaded x30 is the jump to the other
 * context's PC.  No signal mask, no system call.
 *
 * The saved frame (176 bytes, SP stays 16-aligned), from SP up:
 *     0  x19 x20 x21 x22 x23 x24 x25 x26 x27 x28 x29 x30
 *    96  d8 .. d15
 *   160  FPCR, padding
 * sks__fctx_make writes the same frame on a fresh stack, with x19 = entry,
 * x20 = arg, x29 = 0 (the end of the frame chain) and x30 =
 * sks__fctx_start.
 */
/* ELF only (Linux, the BSDs): Mach-O (macOS) spells symbols and sections
 * otherwise, and uses fiber_ctx_portable.c. */
#if defined(__aarch64__) && defined(__ELF__) && !defined(SKS_FIBER_PORTABLE) && \
    !defined(SKS_PORTABLE)

        .text

/* void *sks__fctx_make(void *lo, void *top, void (*entry)(void *), void *arg) */
        .globl  sks__fctx_make
        .hidden sks__fctx_make
        .type   sks__fctx_make, %function
        .p2align 4
sks__fctx_make:
        .cfi_startproc
        and     x1, x1, #~15
        sub     x0, x1, #176
        stp     x2, x3, [x0, #0]
        stp     xzr, xzr, [x0, #16]
        stp     xzr, xzr, [x0, #32]
        stp     xzr, xzr, [x0, #48]
        stp     xzr, xzr, [x0, #64]
        adr     x9, sks__fctx_start
        stp     xzr, x9, [x0, #80]
        stp     xzr, xzr, [x0, #96]
        stp     xzr, xzr, [x0, #112]
        stp     xzr, xzr, [x0, #128]
        stp     xzr, xzr, [x0, #144]
        mrs     x9, fpcr
        stp     x9, xzr, [x0, #160]
        ret
        .cfi_endproc
        .size   sks__fctx_make, .-sks__fctx_make

/* void sks__fctx_switch(void **save, void *load) */
        .globl  sks__fctx_switch
        .hidden sks__fctx_switch
        .type   sks__fctx_switch, %function
        .p2align 4
sks__fctx_switch:
        .cfi_startproc
        sub     sp, sp, #176
        .cfi_adjust_cfa_offset 176
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        .cfi_rel_offset x29, 80
        .cfi_rel_offset x30, 88
        stp     d8, d9, [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        mrs     x11, fpcr
        str     x11, [sp, #160]
        mov     x9, sp
        str     x9, [x0]
        /* The other context's frame has the same layout, so the CFI above
         * stays true across the change of stack. */
        mov     sp, x1
        /* Writing FPCR can stall the pipeline; most switches do not
         * change it. */
        ldr     x10, [sp, #160]
        cmp     x10, x11
        b.eq    1f
        msr     fpcr, x10
1:      ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8, d9, [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #176
        .cfi_adjust_cfa_offset -176
        .cfi_restore x29
        .cfi_restore x30
        ret
        .cfi_endproc
        .size   sks__fctx_switch, .-sks__fctx_switch

/* A fiber's first frame: calls entry(arg).  The link register is marked
 * undefined so that unwinders (gdb, libunwind, backtrace(3)) end a
 * fiber's backtrace here instead of walking off its stack; x29 is 0 for
 * frame-pointer walkers.  entry never returns. */
        .type   sks__fctx_start, %function
        .p2align 4
sks__fctx_start:
        .cfi_startproc
        .cfi_undefined x30
        mov     x0, x20
        blr     x19
        brk     #0
        .cfi_endproc
        .size   sks__fctx_start, .-sks__fctx_start

#endif
#ifdef __ELF__
        .section .note.GNU-stack, "", %progbits
#endif
