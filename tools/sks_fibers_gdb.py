# tools/sks_fibers_gdb.py - gdb commands for libsockserver's fibers.
#
#   (gdb) source tools/sks_fibers_gdb.py
#   (gdb) sks-fibers [bt]        every fiber of every loop: its state
#                                (running, ready, parked on a descriptor,
#                                asleep), what it runs, and with `bt` the
#                                backtrace of each one not running
#   (gdb) sks-fiber-bt FIBER     backtrace of a parked fiber: FIBER is a
#                                sks__fiber or a pointer to one
#
# The loops are found through each thread's `here` (fiber_loop.c's
# thread-local loop pointer), which needs libthread_db (glibc's); where
# gdb cannot read thread-local variables (musl), through the `l` of the
# thread's sks__floop_run frame.  Either way, a -g build.  The
# fiber that is running is the loop thread's own stack: `thread N` and
# `bt` show it, as the watchdog's sks_server_fiber_last_stall() says.
#
# A parked fiber is not a thread, so gdb's `bt` cannot see it.  Its saved
# context is the frame that sks__fctx_switch left at fiber->sp (see
# src/fiber_ctx_x86_64.S and src/fiber_ctx_aarch64.S for the layout); this
# command points the current thread's registers at that frame, prints the
# backtrace, and puts the registers back.  A backtrace ends at
# sks__fctx_start, the fiber's first frame.  Live processes only: a core
# file's registers cannot be changed.  The portable fallback's contexts
# (jmp_buf, mangled pointers) are not supported.
import gdb

# Saved frame layouts: register -> offset from fiber->sp; "sp" is where
# the stack pointer is once the frame is popped; "pc" the return address.
LAYOUTS = {
    "x86-64": {"pc": 56, "sp": 64, "regs": {"rbp": 48, "rbx": 40, "r12": 32,
                                            "r13": 24, "r14": 16, "r15": 8},
               "pcreg": "rip", "spreg": "rsp"},
    "aarch64": {"pc": 88, "sp": 176, "regs": {"x29": 80, "x30": 88,
                                              "x19": 0, "x20": 8},
                "pcreg": "pc", "spreg": "sp"},
}


def layout():
    # The hand-written switch's first frame: absent, the program runs the
    # portable switch (ucontext, then _setjmp), whose mangled contexts
    # cannot be read back into registers.
    try:
        gdb.parse_and_eval("&sks__fctx_start")
    except gdb.error:
        raise gdb.GdbError("sks-fiber-bt: this program uses the portable "
                           "switch, whose saved contexts are not supported")
    arch = gdb.selected_inferior().architecture().name()
    for key, value in LAYOUTS.items():
        if key in arch:
            return value
    raise gdb.GdbError("sks-fiber-bt: no saved-frame layout for " + arch)


class FiberBacktrace(gdb.Command):
    """sks-fiber-bt FIBER: the backtrace of a parked fiber (sks__fiber or sks__fiber *)."""

    def __init__(self):
        super().__init__("sks-fiber-bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        fib = gdb.parse_and_eval(arg)
        if fib.type.code == gdb.TYPE_CODE_PTR:
            fib = fib.dereference()
        if int(fib["stack"]) == 0 and int(fib["sp"]) == 0:
            raise gdb.GdbError("sks-fiber-bt: not a parked fiber")
        sp = int(fib["sp"])
        lay = layout()
        word = gdb.lookup_type("unsigned long")
        inferior = gdb.selected_inferior()

        def load(off):
            mem = inferior.read_memory(sp + off, word.sizeof)
            return int.from_bytes(bytes(mem), "little")

        gdb.execute("frame 0", to_string=True)
        names = [lay["pcreg"], lay["spreg"]] + list(lay["regs"])
        saved = {r: int(gdb.parse_and_eval("$" + r)) for r in names}
        try:
            for reg, off in lay["regs"].items():
                gdb.execute("set $%s = %d" % (reg, load(off)))
            gdb.execute("set $%s = %d" % (lay["spreg"], sp + lay["sp"]))
            gdb.execute("set $%s = %d" % (lay["pcreg"], load(lay["pc"])))
            gdb.execute("bt")
        finally:
            for reg in names:
                gdb.execute("set $%s = %d" % (reg, saved[reg]))


FiberBacktrace()


def thread_loop():
    """The selected thread's fiber loop (struct sks__floop *), or None."""
    try:
        loop = gdb.parse_and_eval("here")
        return loop if int(loop) != 0 else None
    except gdb.error:
        pass
    frame = gdb.newest_frame()
    while frame is not None:
        if frame.name() == "sks__floop_run":
            try:
                loop = frame.read_var("l")
                return loop if int(loop) != 0 else None
            except (gdb.error, ValueError):
                return None
        frame = frame.older()
    return None


def fiber_state(fib, is_current):
    """What a fiber (struct sks__fib) is doing, in words."""
    if is_current:
        return "running"
    if not bool(fib["parked"]):
        return "ready"
    fd = int(fib["wait_fd"])
    if fd >= 0:
        return "parked on fd %d (%s)" % (fd, "write" if bool(fib["wait_write"]) else "read")
    if int(fib["heap_idx"]) != (1 << 64) - 1 and int(fib["heap_idx"]) != (1 << 32) - 1:
        return "asleep (deadline %.3f)" % float(fib["deadline"])
    return "parked"


class FiberList(gdb.Command):
    """sks-fibers [bt]: every fiber of every loop (with bt: and the backtraces of those not running)."""

    def __init__(self):
        super().__init__("sks-fibers", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        want_bt = arg.strip() == "bt"
        inferior = gdb.selected_inferior()
        start = gdb.selected_thread()
        loops = 0
        try:
            for th in sorted(inferior.threads(), key=lambda t: t.num):
                th.switch()
                loop = thread_loop()
                if loop is None:
                    continue
                loops += 1
                l = loop.dereference()
                current = int(l["current"])
                print("loop %#x on thread %d (LWP %d): %d fibers"
                      % (int(loop), th.num, th.ptid[1], int(l["nfibers"])))
                f = l["all"]
                while int(f) != 0:
                    fib = f.dereference()
                    tag = int(fib["tag"])
                    print("  fiber %#x  %-28s runs %s%s"
                          % (int(f), fiber_state(fib, int(f) == current),
                             fib["f"]["fn"],
                             " handler %s" % fib["tag"] if tag else ""))
                    if want_bt and int(f) != current:
                        try:
                            gdb.execute("sks-fiber-bt (sks__fiber *)%d" % int(fib["f"].address))
                        except gdb.error as e:
                            print("    no backtrace: %s" % e)
                    f = fib["all_next"]
        finally:
            start.switch()
        if loops == 0:
            print("sks-fibers: no fiber loop in this process (or no debug symbols)")


FiberList()
