"""Pre-spawned Python runner: waits for the go on fd 3, then runs /tmp/main.py as `python main.py`.

Started as a fork server (`--zygote`, sandbox_images/agent/zygote.py) whose forks are the
runners, or, with the fork server off, once per run. With pre-imports there are two fork servers:
one with them, for scripts that name an installed package, and a bare one for every other script.

The interpreter is already started when the run arrives, and the modules named by `--preload`
(numpy, pandas, matplotlib by default, from language.json or SANDBOX_PYTHON_PRELOAD) are already
imported, which is what makes a warm run cost a few milliseconds instead of an interpreter
start-up and half a second of imports. The script runs as `__main__` in a fresh module,
with its own directory on sys.path, and with tracebacks that show only its own frames.

It ends as the interpreter would (non-daemon threads joined, atexit handlers run, streams
flushed, the same exit status) but skips the interpreter's teardown, about 4 ms that nothing can
observe: the agent wipes the scratch space after every run anyway.
"""

import _signal
import _thread
import atexit
import os
import sys
import types

CODE_PATH = "/tmp/main.py"
EXIT_NOTICES = "/opt/warmbox/exits"  # protocol.EXIT_NOTICES
NOTICE_WAIT_S = 1.0  # protocol.NOTICE_WAIT_S

# Everything the runner needs once the script has run, bound before it runs: a script may
# replace os._exit, atexit, sys.excepthook, sys.stdout or any builtin, and the interpreter
# it imitates does not depend on those names either.
_exit_now = os._exit
_open, _write_fd, _close = os.open, os.write, os.close
_NOTICE_FLAGS = os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
_threads_alive = _thread._count
_allocate_lock = _thread.allocate_lock
_getpid = os.getpid
_block_signals, _SIG_BLOCK = _signal.pthread_sigmask, _signal.SIG_BLOCK
_ALL_SIGNALS = _signal.valid_signals()
_run_exitfuncs = atexit._run_exitfuncs
_modules = sys.modules
_original_excepthook = sys.__excepthook__
_isinstance = isinstance
_str = str
_type = type
_Exception = Exception
_SystemExit = SystemExit
_BaseException = BaseException
_getattr = getattr
_range = range
_repr = repr
_missing = object()

# A forked runner is non-dumpable, as its fork server is, until its go: it may wait beside a run
# of the other fork server's runner, which has its uid and could otherwise trace it or write its
# memory. At the go it becomes an ordinary, dumpable process.
PR_SET_DUMPABLE = 4
_prctl = None
_guarded = False
_warmed: list = []  # the preload names whose warm-ups ran (a zygote with the pre-imports)
_copied_pages: tuple = ()  # what a warm-up run copies of the zygote's memory (see _learn_copies)
_notice_token = b""  # the go's token for this run's exit notice (see _notice_exit)
_notice_pid = 0  # the runner's pid: a process the script forks never sends the notice


def _set_dumpable(value: int) -> None:
    global _prctl
    if _prctl is None:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    if _prctl(PR_SET_DUMPABLE, value, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE) failed")


def _preload(argv: list) -> None:
    """Import the modules the descriptor names while idle. matplotlib's font cache was built into
    the image; it is copied into a fresh config dir (the scratch is wiped after every run), read
    at import, and the dir removed again so the run finds /tmp as empty as a fresh one."""
    names = [n for a in argv if a.startswith("--preload=") for n in a[10:].split(",") if n]
    config = os.environ.get("MPLCONFIGDIR")
    if config and any(name.startswith("matplotlib") for name in names):
        import shutil

        shutil.copytree("/opt/warmbox/matplotlib", config)
    for name in names:
        try:  # noqa: SIM105  (the runner keeps its own imports few)
            __import__(name)
        except ImportError:
            pass  # a module missing from this image: the script will see the same error itself
    if "--zygote" in argv:
        _warm_up(names)
        _warmed.extend(names)
    if config and os.path.isdir(config):
        import shutil

        shutil.rmtree(config, ignore_errors=True)


# A fork server pays these once per container: pandas and numpy import much of themselves lazily
# on first use (describe(), formatting, percentiles), which every forked runner then inherits.
# What a run would otherwise pay on first use: the random generator's module, describe() on
# integer and float columns, and printing a frame (repr goes through the display options and the
# console-size probe, to_string does not).
WARM_UPS = {
    "numpy": "numpy.random.default_rng(1).random(8).sum()",
    "pandas": (
        "repr(pandas.DataFrame({'a': pandas.RangeIndex(8), 'b': [0.5] * 8}).describe()),"
        " pandas.DataFrame({'a': [1.5, 2.5, 3.5], 'b': [1, 2, 3]}).describe().to_string()"
    ),
}


def _warm_up(names: list) -> None:
    for name, code in WARM_UPS.items():
        if name in names and name in sys.modules:
            try:  # noqa: SIM105  (see above)
                eval(code, {name: sys.modules[name]})  # noqa: S307  (our own fixed expressions)
            except Exception:  # noqa: S110  (a warm-up that fails only costs speed)
                pass


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Bits of a /proc/PID/pagemap entry: the page is present; it is mapped by this process only.
PRESENT, EXCLUSIVE = 1 << 63, 1 << 56


def _private_writable_ranges() -> list:
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            span, perms = line.split(None, 2)[:2]
            if perms.startswith("rw") and perms[3] == "p":
                low, high = span.split("-")
                ranges.append((int(low, 16), int(high, 16)))
    return ranges


def _page_flags(ranges: list) -> dict:
    """Page address -> whether this process alone maps it, for every present page of `ranges`."""
    import struct

    flags = {}
    with open("/proc/self/pagemap", "rb") as pagemap:
        for low, high in ranges:
            pagemap.seek(low // PAGE_BYTES * 8)
            data = pagemap.read((high - low) // PAGE_BYTES * 8)
            for index, (entry,) in enumerate(struct.iter_unpack("<Q", data)):
                if entry & PRESENT:
                    flags[low + index * PAGE_BYTES] = bool(entry & EXCLUSIVE)
    return flags


def _learn_copies() -> tuple:
    """The zygote's pages a forked runner copies when it runs the warm-ups again (pandas'
    describe() and printing, numpy's generator): learned once per zygote in a child that runs
    them and compares its page map before and after (present and shared before, its own after:
    copied on write). A runner forked later writes those pages before its go (_copy_ahead), so a
    script using these packages does not pay the copies (a fault and a 4 KiB copy each, about
    1,400 of them, 4-8 ms) on its own time. Empty when the page map cannot tell (gVisor)."""
    import struct

    read_end, write_end = os.pipe()
    try:
        child = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        return ()
    if child == 0:
        try:
            os.close(read_end)
            # Its own page map is root's while it is non-dumpable (as the zygote is). It runs only
            # the fixed warm-ups, at the zygote's start, when no run is in the container.
            _set_dumpable(1)
            ranges = _private_writable_ranges()
            before = _page_flags(ranges)
            _warm_up(_warmed)
            after = _page_flags(ranges)
            copied = [a for a, mine in after.items() if mine and before.get(a) is False]
            view = memoryview(struct.pack(f"<{len(copied)}Q", *copied))
            while view:
                view = view[os.write(write_end, view) :]
        except _BaseException:  # nothing learned only costs speed
            pass
        _exit_now(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 1 << 20):
        data += chunk
    os.close(read_end)
    os.waitpid(child, 0)
    usable = len(data) // 8 * 8
    return struct.unpack(f"<{usable // 8}Q", data[:usable])


def _copy_ahead(pages: tuple) -> None:
    """Write each learned page that is still private and writable here (its byte back as it was:
    the runner is single-threaded until its go), so the kernel copies it now, off the run's time."""
    import bisect
    import ctypes

    ranges = _private_writable_ranges()
    lows = [low for low, _ in ranges]
    for address in pages:
        index = bisect.bisect_right(lows, address) - 1
        if index >= 0 and address < ranges[index][1]:
            byte = ctypes.c_char.from_address(address)
            byte.value = byte.value


def _say_ready() -> None:
    """One byte on fd 4: the agent sends the go only once the runner is this far, so the run's
    own time never includes an interpreter start or the pre-imports."""
    os.write(4, b"R")


KERNEL_PATH = "/opt/warmbox/kernel.py"
_KERNEL_CODE: types.CodeType | None = None


def _kernel_code() -> types.CodeType:
    """kernel.py compiled: once in the fork server (every runner forked from it inherits the code
    object), else now. Compiling it when a session opens cost 8-17 ms of its first cell."""
    global _KERNEL_CODE
    if _KERNEL_CODE is None:
        with open(KERNEL_PATH, "rb") as source:
            _KERNEL_CODE = compile(source.read(), KERNEL_PATH, "exec")
    return _KERNEL_CODE


def _wait_for_go() -> list:
    """The agent writes the mode, the exit notice's token and the arguments, NUL-separated, on
    fd 3 and closes it: end of file is the go. Both control descriptors are closed before the
    script runs. Returns the arguments."""
    chunks = []
    while True:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(3)
    if _guarded:
        _set_dumpable(1)
    fields = b"".join(chunks).split(b"\0")[:-1]
    if fields[:1] == [b"session"]:  # issue 13: become a session's kernel (kernel.py), keep state
        kernel = {"__name__": "__kernel__", "__file__": KERNEL_PATH, "__builtins__": __builtins__}
        exec(_kernel_code(), kernel)  # noqa: S102  (our own kernel; never returns)
    os.close(4)
    global _notice_token, _notice_pid
    _notice_token = fields[1] if len(fields) > 1 else b""  # the mode, the token, the arguments
    _notice_pid = os.getpid()
    return [field.decode("utf-8", "surrogateescape") for field in fields[2:]]


def _fail(what: str, error: BaseException) -> None:
    """Say on stderr why this runner cannot serve, and end it with 127 (never returns)."""
    try:  # noqa: SIM105  (see above)
        os.write(2, f"warmbox: {what}: {error!r}\n".encode())
    except _Exception:
        pass
    _exit_now(127)


def _prefer_me_for_oom_kills() -> None:
    """If the container runs out of memory, the kernel should take a runner (and the script it
    becomes), not the agent. Inherited by every runner a fork server forks."""
    try:
        with open("/proc/self/oom_score_adj", "w") as adj:
            adj.write("1000")
    except OSError:
        pass


def _fresh_main_module() -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__file__ = CODE_PATH
    module.__builtins__ = __builtins__
    module.__spec__ = None
    sys.modules["__main__"] = module
    return module


def _status_of(exit_code: object, stderr: object) -> int:
    """What the interpreter makes of SystemExit's argument."""
    if exit_code is None:
        return 0
    if _isinstance(exit_code, int):
        return exit_code
    try:  # noqa: SIM105  (contextlib is the script's to replace; the runner must not use it)
        stderr.write(_str(exit_code) + "\n")
    except _Exception:
        pass
    return 1


def _report(error: BaseException, skip_frames: int, stderr: object) -> None:
    """Print an uncaught exception through the script's sys.excepthook, as the interpreter does,
    falling back to the original hook when the script's own is missing or fails."""
    tb = error.__traceback__
    for _ in _range(skip_frames):
        tb = tb.tb_next if tb else None
    error = error.with_traceback(tb)
    hook = _getattr(sys, "excepthook", _missing)
    if hook is _missing:
        _write(stderr, "sys.excepthook is missing\n")
        _original_excepthook(_type(error), error, tb)
        return
    try:
        hook(_type(error), error, tb)
    except _BaseException as hook_error:
        hook_error.__context__ = None  # the interpreter shows it alone, without our frame
        hook_tb = hook_error.__traceback__.tb_next if hook_error.__traceback__ else None
        _write(stderr, "Error in sys.excepthook:\n")
        _original_excepthook(_type(hook_error), hook_error.with_traceback(hook_tb), hook_tb)
        _write(stderr, "\nOriginal exception was:\n")
        _original_excepthook(_type(error), error, tb)


def _write(stream: object, text: str) -> None:
    try:  # noqa: SIM105  (see above)
        stream.write(text)
    except _Exception:
        pass


def _unraisable(culprit: object, error: BaseException, stderr: object) -> None:
    """Report an error the interpreter ignores at exit, in its words and without our frame."""
    tb = error.__traceback__.tb_next if error.__traceback__ else None
    _write(stderr, f"Exception ignored in: {_repr(culprit)}\n")
    _original_excepthook(_type(error), error.with_traceback(tb), tb)


def _finish(status: int, streams: tuple) -> None:
    """End as the interpreter does: join threads, run atexit, flush, exit with the status."""
    threading = _modules.get("threading")
    if threading is not None:
        try:
            threading._shutdown()
        except _BaseException as error:
            _unraisable(threading, error, _getattr(sys, "stderr", None) or streams[1])
    _run_exitfuncs()  # reports and ignores a handler's exception, as the interpreter does
    for stream in (_getattr(sys, "stdout", None), _getattr(sys, "stderr", None), *streams):
        if stream is None:
            continue
        try:
            stream.flush()
        except _Exception:
            status = status or 120  # as the interpreter does when stdout cannot be flushed
    status = status & 0xFF if status >= 0 else 255
    _notice_exit(status)
    _exit_now(status)


def _notice_exit(status: int) -> None:
    """Tell the agent this run has ended (protocol.EXIT_NOTICES) and wait for its kill, so that it
    can answer while the kernel tears the runner down (3-4 ms with the pre-imports). Only in the
    runner itself (not in a child the script forked, which ends through here too) and only when
    nothing of the script can run or write any more: every stream is flushed, no thread of it is
    left (a daemon thread goes on until the exit itself: the run then ends at the exit, as
    before), and signals are blocked, so that no handler runs while it waits."""
    if not _notice_token or _getpid() != _notice_pid or _threads_alive():
        return
    try:
        _block_signals(_SIG_BLOCK, _ALL_SIGNALS)
        fd = _open(EXIT_NOTICES, _NOTICE_FLAGS)
    except _Exception:
        return
    try:
        noticed = _write_fd(fd, b"\n%s %d\n" % (_notice_token, status)) > 0  # own line
    except _Exception:
        noticed = False
    _close(fd)
    if noticed:
        lock = _allocate_lock()
        lock.acquire()
        lock.acquire(timeout=NOTICE_WAIT_S)  # the agent's kill ends it here


# --------------------------------------------------------------------------- the fork server
# Started with --zygote (sandbox_images/agent/zygote.py drives it): after the pre-imports it never
# runs a program; it answers the agent's JSON lines on fd 3 with JSON lines on fd 4: "attributes"
# (its process attributes, compared by the agent after every run), "kill" (the sweep's kill(-1),
# which spares the caller and init) and "fork" (a fresh runner on the FIFOs the agent made).
# The runner's ends of the FIFOs, in the order the agent sends them (its fds 0 to 4).
RUNNER_FIFO_FLAGS = (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY, os.O_RDONLY, os.O_WRONLY)


def _agent_helpers() -> tuple:
    """apply_attributes, process_attributes and forbid_proc_writes from the agent's cleanup.py
    (beside this file),
    without leaving the agent's modules where a run's own `import cleanup` would find them."""
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        import cleanup
    finally:
        del sys.path[0]
    for name in ("cleanup", "protocol"):
        sys.modules.pop(name, None)
    return cleanup.apply_attributes, cleanup.process_attributes, cleanup.forbid_proc_writes


def _answer(message: dict) -> None:
    import json

    view = memoryview(json.dumps(message).encode() + b"\n")
    while view:
        view = view[os.write(4, view) :]


def _serve_forks() -> None:
    """Answer the agent until a "fork" returns in the new runner (the zygote never returns)."""
    import gc
    import json
    import signal

    global _copied_pages
    apply_attributes, process_attributes, _ = _agent_helpers()
    gc.freeze()  # what the pre-imports made stays untouched by a runner's collections: fewer copies
    if _warmed:
        try:
            _copied_pages = _learn_copies()
        except _Exception:
            _copied_pages = ()
    _answer({"attributes": process_attributes()})
    pending = b""
    while True:
        while b"\n" not in pending:
            chunk = os.read(3, 1 << 16)
            if not chunk:  # the agent is gone
                _exit_now(0)
            pending += chunk
        line, _, pending = pending.partition(b"\n")
        request = json.loads(line)
        op = request.get("op")
        if op == "fork":
            pid = _fork_runner(request, apply_attributes)
            if pid == 0:
                return
            _answer({"pid": pid})
        elif op == "kill":
            try:  # noqa: SIM105  (see above)
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _answer({"killed": True})
        elif op == "attributes":
            _answer({"attributes": process_attributes()})
        else:
            _answer({"error": f"unknown op {op!r}"})


def _fork_runner(request: dict, apply_attributes: object) -> int:
    """Fork twice, so the runner's parent is the agent (the middle exits at once); returns the
    runner's pid in the zygote (-1 when it failed), 0 in the runner."""
    fifos = zip(request["fifos"], RUNNER_FIFO_FLAGS, strict=True)
    fds = [os.open(path, flags | os.O_CLOEXEC) for path, flags in fifos]
    pid_r, pid_w = os.pipe2(os.O_CLOEXEC)
    try:
        middle = os.fork()
    except OSError:  # the pids limit: the agent falls back to starting an interpreter
        middle = -1
    if middle == 0:
        try:
            runner = os.fork()
            if runner > 0:
                os.write(pid_w, b"%d" % runner)
        except _BaseException:
            runner = -1
        if runner != 0:
            _exit_now(0)  # the middle ends here, whatever happened
        _become_runner(fds, request, apply_attributes)
        return 0
    for fd in (*fds, pid_w):
        os.close(fd)
    if middle > 0:
        os.waitpid(middle, 0)  # once it is reaped, the runner has been re-parented to the agent
    reported = os.read(pid_r, 32)
    os.close(pid_r)
    return int(reported) if reported else -1


def _become_runner(fds: list, request: dict, apply_attributes: object) -> None:
    """What an exec'd runner gets from the agent, done in the fork: stdio and control pipes on
    fds 0-4 and nothing else, a new session, the recorded attributes, cwd, environment, dumpable
    at its go, fresh random seeds. Any failure ends it with 127 and the agent sees a dead runner."""
    global _guarded
    try:
        import resource
        import signal

        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(len(fds), max(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 256))
        os.setsid()
        apply_attributes(request["attributes"])
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # as the interpreter sets them at start
            signal.signal(signum, signal.SIG_IGN)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        _guarded = True  # non-dumpable like the zygote until the go (see _set_dumpable)
        numpy_random = sys.modules.get("numpy.random")
        if numpy_random is not None:  # `random` reseeds itself at fork; numpy's global state not
            numpy_random.seed()
        if _copied_pages:
            _copy_ahead(_copied_pages)
    except _BaseException as error:
        _fail("runner fork failed", error)


def _run_program(args: list) -> None:
    """Run /tmp/main.py as `python main.py ARGS` would, and end as the interpreter would."""
    with open(CODE_PATH, "rb") as code_file:
        source = code_file.read()
    sys.argv = [CODE_PATH, *args]
    sys.path[0] = os.path.dirname(CODE_PATH)
    sys.stdout.reconfigure(line_buffering=True)
    streams = (sys.stdout, sys.stderr)
    try:
        code = compile(source, CODE_PATH, "exec")
    except (SyntaxError, ValueError) as error:
        _report(error, 99, streams[1])  # a syntax error has no frame of the script to show
        _finish(1, streams)
    module = _fresh_main_module()
    try:
        exec(code, module.__dict__)  # noqa: S102  (running the user's script is the point)
    except _SystemExit as exit_request:
        _finish(_status_of(exit_request.code, _getattr(sys, "stderr", None) or streams[1]), streams)
    except _BaseException as error:  # as the interpreter would: print it, exit 1
        _report(error, 1, _getattr(sys, "stderr", None) or streams[1])
        _finish(1, streams)
    _finish(0, streams)


def main() -> None:
    zygote = "--zygote" in sys.argv
    _prefer_me_for_oom_kills()  # while its /proc entries are still its own
    if zygote:
        _set_dumpable(0)  # before anything else: a run may never read or trace the zygote
    try:  # no run of this runner, or of one it forks, may write under /proc
        _agent_helpers()[2]()
    except _BaseException as error:
        _fail("runner restriction failed", error)
    _preload(sys.argv[1:])
    if zygote:
        if os.path.exists(KERNEL_PATH):
            _kernel_code()
        _serve_forks()  # returns only in a forked runner, its stdio and fds 3/4 in place
    _say_ready()
    _run_program(_wait_for_go())


main()
