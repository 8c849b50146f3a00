/*
 * fiber_ctx_x86_64.S - the fiber context switch for x86-64 (System V).
 *
 * A context is its stack pointer: switching pushes what the ABI says a
 * callee preserves (rbx, rbp, r12-r15, and the control words of MXCSR and
 * the x87 FPU, so a handler's fesetround stays in its fiber, as it would
 * in its thread), stores SP, loads the other SP and pops the same frame;
 * `ret` is the jump to the other context's PC.  Everything else is
 * caller-saved, so the compiler has already spilled what it needs.  No
 * signal mask, no system call.
 *
 * The saved frame, from SP up:
 *     0  MXCSR (4 bytes), x87 control word (2), padding (2)
 *     8  r15, r14, r13, r12, rbx, rbp
 *    56  return address
 * sks__fctx_make writes the same frame on a fresh stack, with rbx = entry,
 * r12 = arg, rbp = 0 (the end of the frame-pointer chain) and a return
 * address of sks__fctx_start.
 */
/* ELF only (Linux, the BSDs): Mach-O (macOS) spells symbols and sections
 * otherwise, and uses fiber_ctx_portable.c. */
#if defined(__x86_64__) && defined(__ELF__) && !defined(SKS_FIBER_PORTABLE) && \
    !defined(SKS_PORTABLE)

        .text

/* void *sks__fctx_make(void *lo, void *top, void (*entry)(void *), void *arg) */
        .globl  sks__fctx_make
        .hidden sks__fctx_make
        .type   sks__fctx_make, @function
        .p2align 4
sks__fctx_make:
        .cfi_startproc
        andq    $-16, %rsi
        /* The return address lands at top - 8, so that after `ret` SP is
         * top, 16-aligned, as a call needs. */
        leaq    -64(%rsi), %rax
        stmxcsr (%rax)
        fnstcw  4(%rax)
        movw    $0, 6(%rax)
        movq    $0, 8(%rax)
        movq    $0, 16(%rax)
        movq    $0, 24(%rax)
        movq    %rcx, 32(%rax)
        movq    %rdx, 40(%rax)
        movq    $0, 48(%rax)
        leaq    sks__fctx_start(%rip), %rcx
        movq    %rcx, 56(%rax)
        ret
        .cfi_endproc
        .size   sks__fctx_make, .-sks__fctx_make

/* void sks__fctx_switch(void **save, void *load) */
        .globl  sks__fctx_switch
        .hidden sks__fctx_switch
        .type   sks__fctx_switch, @function
        .p2align 4
sks__fctx_switch:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset rbp, 0
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset rbx, 0
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset r12, 0
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset r13, 0
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset r14, 0
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset r15, 0
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        movq    %rsp, (%rdi)
        /* The other context's frame has the same layout, so the CFI above
         * stays true across the change of stack. */
        movq    %rsi, %rsp
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %r15
        .cfi_adjust_cfa_offset -8
        .cfi_restore r15
        popq    %r14
        .cfi_adjust_cfa_offset -8
        .cfi_restore r14
        popq    %r13
        .cfi_adjust_cfa_offset -8
        .cfi_restore r13
        popq    %r12
        .cfi_adjust_cfa_offset -8
        .cfi_restore r12
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        .cfi_restore rbx
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .cfi_restore rbp
        ret
        .cfi_endproc
        .size   sks__fctx_switch, .-sks__fctx_switch

/* A fiber's first frame: calls entry(arg).  The return address is marked
 * undefined so that unwinders (gdb, libunwind, backtrace(3)) end a
 * fiber's backtrace here instead of walking off its stack; rbp is 0 for
 * frame-pointer walkers.  entry never returns. */
        .type   sks__fctx_start, @function
        .p2align 4
sks__fctx_start:
        .cfi_startproc
        .cfi_undefined rip
        movq    %r12, %rdi
        callq   *%rbx
        ud2
        .cfi_endproc
        .size   sks__fctx_start, .-sks__fctx_start

#endif
#ifdef __ELF__
        .section .note.GNU-stack, "", @progbits
#endif
