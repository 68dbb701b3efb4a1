"""Between runs: kill every process, remove IPC objects, wipe scratch, and prove it all.

Imported by agent.py (next to it in /opt/warmbox). The proof of clean covers what a run can
leave and a later run could see or suffer: processes, files, IPC objects and queues, the
agent's own process attributes (which every runner would inherit), and the sockets of the
container's network namespace. Every step reports a failure as a problem instead of raising, so
a run cannot crash the agent with what it leaves; the pool replaces an unclean container.
Standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
import signal
import stat
import time

from protocol import SCRATCHES

MQUEUE_DIR = "/dev/mqueue"
SYSVIPC = {"shm": 0, "msg": 1, "sem": 2}
IPC_RMID = 0
SWEEP_DEADLINE_S = 2.0
WIPE_DEADLINE_S = 3.0  # within the pool's wait for the reset report (5 s)

libc = ctypes.CDLL(None, use_errno=True)


# The fork server of a warm interpreter (zygote.py), when the language has one: it never runs a
# program, so sweeps spare it. It sends the sweep's kill(-1) itself (the kernel spares the caller
# and init, so its one call still reaches every other process atomically); when it cannot (dead,
# stopped, not answering) the agent's own kill(-1) takes it too and a new one is started.
fork_server = None  # a zygote.ForkServer, set by the agent
bare_server = None  # python's second one, without the pre-imports: spared, never the killer
# The next run's runner, started ahead and parked (execution.py): spared by a sweep that finds
# nothing else alive; a sweep that must kill(-1) takes it too (the agent then starts a new one).
parked_pid = 0
# Ready runners that no run has been given yet (python keeps a runner with its pre-imports and a
# bare one, and a run takes one of them): a sweep spares them like the parked runner, the proof of
# clean does not count them, and the agent checks them before they serve (agent.py, _kept).
idle_pids: set[int] = set()


def other_pids() -> list[int]:
    spared = {os.getpid(), parked_pid, *idle_pids}
    spared |= {server.spared_pid() for server in (fork_server, bare_server) if server is not None}
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) not in spared]


# The largest peak resident set (kB) of the processes reap() collected since the last reset: a run's
# usage counts the orphans its sweep collected, not only its main process.
reaped_peak_kb = 0


def reap() -> dict[int, int]:
    """Collect every exited child without blocking; returns pid -> wait status."""
    global reaped_peak_kb
    statuses: dict[int, int] = {}
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status
        reaped_peak_kb = max(reaped_peak_kb, usage.ru_maxrss)


# Runners killed on their exit notice (execution.Runner.end_on_notice) whose teardown the answer
# did not wait for: the sweep waits for them first, so that finding them still alive does not make
# it kill the idle runners beside the run.
dying_pids: set[int] = set()


def _wait_for_dying(deadline: float) -> None:
    while dying_pids and time.monotonic() < deadline:
        reap()  # a zombie stays in /proc until reaped; a reaped pid leaves it
        dying_pids.intersection_update(p for p in list(dying_pids) if os.path.exists(f"/proc/{p}"))
        if dying_pids:
            time.sleep(0.0005)
    dying_pids.clear()  # one that outlived the deadline is the kill(-1) below's


def sweep_processes() -> bool:
    """Kill every process but this one until none is left; False if some survived the deadline."""
    global parked_pid
    deadline = time.monotonic() + SWEEP_DEADLINE_S
    _wait_for_dying(deadline)
    reap()
    if not other_pids():  # nothing alive that could fork: the run's own sweep already did it
        return True
    parked_pid = 0  # the kill(-1) below takes it too, and the idle runners
    idle_pids.clear()
    while True:
        if fork_server is None or not fork_server.kill_others():
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        reap()
        if not other_pids():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)


WIPE_MAX_OPEN_DIRS = 32
WIPE_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class WipeTimeoutError(Exception):
    """The scratch space could not be emptied before the deadline: the container is unclean."""


def wipe_directory(path: str, deadline: float) -> None:
    """Empty `path` without recursion, with at most WIPE_MAX_OPEN_DIRS descriptors open.

    Every step is relative to an open directory descriptor and opens with O_NOFOLLOW, so a
    symlink is removed, never followed, and no path grows past PATH_MAX however deep a run
    nested its directories. A directory deeper than the descriptor budget is renamed up into
    `path` and emptied in a later pass, so a 100,000-deep chain costs time, not descriptors or
    stack. No process of the run is alive any more, so nothing changes under the walk.

    Raises:
        WipeTimeoutError: not empty at the deadline.
        OSError: something could not be removed at all.
    """
    root = os.open(path, WIPE_DIR_FLAGS)
    try:
        while _wipe_pass(root, deadline):
            pass
    finally:
        os.close(root)


def _wipe_pass(root: int, deadline: float) -> bool:
    """Remove what one scan of the top directory finds; False when it found nothing."""
    found = False
    with os.scandir(root) as entries:
        for count, entry in enumerate(entries):
            found = True
            if count % 1024 == 0 and time.monotonic() > deadline:
                raise WipeTimeoutError("scratch wipe passed its deadline")
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(root, entry.name, deadline)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.name, dir_fd=root)
    return found


def _open_writable_dir(parent: int, name: str) -> int:
    """Open a directory the run may have made unreadable or unwritable (same owner: chmod works).

    The entry was seen as a directory (not a symlink) and nothing else runs, so the chmod cannot
    be redirected; O_NOFOLLOW holds the line anyway.
    """
    with contextlib.suppress(OSError):
        os.chmod(name, stat.S_IRWXU, dir_fd=parent)
    return os.open(name, WIPE_DIR_FLAGS, dir_fd=parent)


def _remove_tree(root: int, name: str, deadline: float) -> None:
    """Depth-first removal of root/name with an explicit stack of (descriptor, name) pairs."""
    stack = [(_open_writable_dir(root, name), name)]
    spare = 0
    try:
        while stack:
            if time.monotonic() > deadline:
                raise WipeTimeoutError("scratch wipe passed its deadline")
            directory, _ = stack[-1]
            child = _empty_files_find_dir(directory, deadline)
            if child is None:
                os.close(directory)
                _, own_name = stack.pop()
                os.rmdir(own_name, dir_fd=stack[-1][0] if stack else root)
            elif len(stack) < WIPE_MAX_OPEN_DIRS:
                stack.append((_open_writable_dir(directory, child), child))
            else:  # too deep to hold open: move it up to the top, a later pass empties it
                spare = _move_to_top(directory, child, root, spare)
    finally:
        for directory, _ in stack:
            os.close(directory)


def _empty_files_find_dir(directory: int, deadline: float) -> str | None:
    """Remove every non-directory entry; return the name of one subdirectory, if any is left."""
    with os.scandir(directory) as entries:
        for count, entry in enumerate(entries):
            if count % 1024 == 1023 and time.monotonic() > deadline:
                raise WipeTimeoutError("scratch wipe passed its deadline")
            if entry.is_dir(follow_symlinks=False):
                return entry.name
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.name, dir_fd=directory)
    return None


def _move_to_top(directory: int, name: str, root: int, spare: int) -> int:
    while True:
        spare += 1
        target = f".warmbox-wipe-{spare}"
        try:
            os.stat(target, dir_fd=root, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(name, target, src_dir_fd=directory, dst_dir_fd=root)
            return spare


# ----------------------------------------------------------------- inherited process attributes

# A run has the agent's uid, so it can lower PID 1's resource limits (prlimit), nice, scheduling
# policy, CPU affinity and I/O priority, and every later runner would inherit them. The agent
# records them at start-up, proves them unchanged after every run (a non-root process cannot
# raise a lowered hard limit back, so a difference means a new container) and sets them
# explicitly in every runner it starts.
RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}
IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}  # (ioprio_set, ioprio_get)
IOPRIO_WHO_PROCESS = 1
PR_GET_TIMERSLACK = 30
STATUS_FIELDS = (
    "Umask",
    "SigBlk",
    "SigIgn",
    "NoNewPrivs",
    "Seccomp",
    "CapInh",
    "CapPrm",
    "CapEff",
    "CapBnd",
    "CapAmb",
    "Cpus_allowed_list",
    "Mems_allowed_list",
)


def _ioprio_syscall(index: int, *args: int) -> int:
    numbers = IOPRIO_SYSCALLS.get(os.uname().machine)
    if numbers is None:  # an architecture we do not know: I/O priority is left unchecked
        return 0
    result = libc.syscall(numbers[index], IOPRIO_WHO_PROCESS, 0, *args)
    if result < 0:
        raise OSError(ctypes.get_errno(), "ioprio syscall failed")
    return result


def ioprio_get() -> int | None:
    """The I/O priority, or None where the sandbox's kernel refuses the call (gVisor): there a
    run cannot change it either, so there is nothing to inherit or to compare."""
    try:
        return _ioprio_syscall(1)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOSYS):
            return None
        raise


def ioprio_set(value: int) -> None:
    _ioprio_syscall(0, value)


def _umask() -> int:
    """The umask, read the only portable way (gVisor's /proc status has no Umask line); the agent
    is single-threaded, so setting it back at once is safe."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def process_attributes() -> dict:
    """What a runner inherits from the agent and a run could change from outside (cheap: one
    /proc read and a few syscalls)."""
    with open("/proc/self/status") as status_file:
        status = dict(line.split(":", 1) for line in status_file if ":" in line)
    with open("/proc/self/oom_score_adj") as adj:
        oom_score_adj = adj.read().strip()
    return {
        "rlimits": {name: resource.getrlimit(number) for name, number in RLIMITS.items()},
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "policy": os.sched_getscheduler(0),
        "priority": os.sched_getparam(0).sched_priority,
        "affinity": sorted(os.sched_getaffinity(0)),
        "ioprio": ioprio_get(),
        "timerslack": libc.prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0),
        "oom_score_adj": oom_score_adj,
        "umask": _umask(),
        **{name: status.get(name, "").strip() for name in STATUS_FIELDS},
    }


def changed_attributes(recorded: dict, current: dict | None = None) -> list[str]:
    """The names of the attributes that differ from `recorded` (this process's own by default;
    the fork server sends its own for the same comparison)."""
    current = process_attributes() if current is None else current
    changed = [
        key
        for key in recorded
        if key not in ("rlimits", "sockets") and current[key] != recorded[key]
    ]
    changed += [
        name for name, limits in recorded["rlimits"].items() if current["rlimits"][name] != limits
    ]
    return changed


# ------------------------------------------------------------------ what a run may not write

# No process a run has may open anything under /proc or /sys for writing (Landlock: inherited by
# all it starts, never undone). Through its own /proc/self/clear_refs a program could reset its
# peak resident set (VmHWM, and the ru_maxrss its parent reaps) after using memory, and report
# less than it used: a grading memory limit below the container's own would no longer hold. The
# agent forbids it in every process it starts, before execve (execution.py); Python's runner does
# it itself when it starts, after raising its own oom_score_adj while it can (the fork server
# then turns non-dumpable, and its runners inherit both). Pipes and sockets stay writable, as
# does every other place that is writable at all: the rules grant writes beneath every other
# entry of /, whose read-only mounts still refuse them. Where the kernel has no Landlock (gVisor),
# nothing is forbidden, and there no process shows a VmHWM either.
LANDLOCK_SYSCALLS = (444, 445, 446)  # create_ruleset, add_rule, restrict_self: all architectures
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_ACCESS_FS_WRITE_FILE = 1 << 1
LANDLOCK_RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
UNWRITABLE_ROOTS = frozenset({"proc", "sys"})


class _LandlockRuleset(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _LandlockPathBeneath(ctypes.Structure):
    _pack_ = 1  # packed in the kernel's header: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def proc_write_ruleset() -> int:
    """A Landlock ruleset that allows writes beneath every entry of / but proc and sys (its
    descriptor, close-on-exec), or -1 where the kernel has no Landlock. Raises OSError when
    Landlock is there but refuses the rules."""
    create, add_rule, _ = LANDLOCK_SYSCALLS
    if libc.syscall(create, None, 0, LANDLOCK_CREATE_RULESET_VERSION) < 1:
        return -1  # ENOSYS, EOPNOTSUPP (not enabled), or refused by a seccomp profile
    handled = _LandlockRuleset(LANDLOCK_ACCESS_FS_WRITE_FILE)
    ruleset = libc.syscall(create, ctypes.byref(handled), ctypes.sizeof(handled), 0)
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    try:
        for name in sorted(os.listdir("/")):
            if name in UNWRITABLE_ROOTS:
                continue
            try:
                beneath = os.open(f"/{name}", os.O_PATH | os.O_CLOEXEC)
            except OSError:  # a dangling link: nothing to write beneath
                continue
            try:
                rule = ctypes.byref(_LandlockPathBeneath(LANDLOCK_ACCESS_FS_WRITE_FILE, beneath))
                if libc.syscall(add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0):
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule /{name} failed")
            finally:
                os.close(beneath)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def restrict_to(ruleset: int) -> None:
    """Put this process, and all it starts, under `ruleset` (two system calls)."""
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # the container's own setting; needed here
    if libc.syscall(LANDLOCK_SYSCALLS[2], ruleset, 0):
        raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")


def forbid_proc_writes() -> bool:
    """Refuse this process and all it starts any open for writing under /proc and /sys; False where
    the kernel has no Landlock."""
    ruleset = proc_write_ruleset()
    if ruleset < 0:
        return False
    try:
        restrict_to(ruleset)
    finally:
        os.close(ruleset)
    return True


# The agent's ruleset, made once at its start (agent.py): every child it starts is put under it
# just before execve (execution.py), which costs that child two system calls instead of the rules'
# 40 or so (about 0.6 ms).
proc_ruleset = -1


def apply_attributes(recorded: dict) -> None:
    """Set a freshly forked runner's attributes to the recorded ones instead of inheriting them."""
    for name, limits in recorded["rlimits"].items():
        # Only what differs: gVisor refuses even an equal hard limit as "raising" it.
        if resource.getrlimit(RLIMITS[name]) != tuple(limits):  # a list when it came as JSON
            resource.setrlimit(RLIMITS[name], limits)
    os.setpriority(os.PRIO_PROCESS, 0, recorded["nice"])
    os.sched_setscheduler(0, recorded["policy"], os.sched_param(recorded["priority"]))
    os.sched_setaffinity(0, recorded["affinity"])
    if recorded["ioprio"] is not None and ioprio_get() != recorded["ioprio"]:
        ioprio_set(recorded["ioprio"])
    os.umask(recorded["umask"])
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # the interpreter ignores these for itself
        signal.signal(signum, signal.SIG_DFL)


# --------------------------------------------------------------------------- the network namespace

# The agent holds no socket, so after a clean reset the container's network namespace has none
# either; a socket kept alive in flight (an SCM_RIGHTS cycle), a listener or a TIME_WAIT entry
# left by a run must make the container unclean. The namespace's own counters in sockstat
# (sockets in use, TCP/UDP/RAW in use, TCP time-wait) cover every family for about 0.05 ms and
# are compared with their values at start-up; the cheap per-namespace tables are read as well.
# /proc/net/tcp and udp walk the host's whole hash tables (about 1-2 ms each), so they are read
# only by the deeper health check.
SOCKSTAT_FILES = ("/proc/net/sockstat", "/proc/net/sockstat6")
GLOBAL_COUNTERS = frozenset({"orphan", "alloc", "mem", "memory"})  # host-wide, not ours
CHEAP_TABLES = ("unix", "packet", "raw", "raw6", "icmp", "icmp6")
HASH_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6")


def socket_counters() -> dict[str, int]:
    counters = {}
    for path in SOCKSTAT_FILES:
        with contextlib.suppress(FileNotFoundError), open(path) as sockstat:
            for line in sockstat:
                family, _, values = line.partition(":")
                fields = values.split()
                for name, value in zip(fields[::2], fields[1::2], strict=False):
                    if name not in GLOBAL_COUNTERS:
                        counters[f"{family}.{name}"] = int(value)
    return counters


def sockets_left(recorded_counters: dict[str, int], *, thorough: bool = False) -> dict[str, int]:
    left = {
        name: value
        for name, value in socket_counters().items()
        if value != recorded_counters.get(name, 0)
    }
    for table in CHEAP_TABLES + (HASH_TABLES if thorough else ()):
        try:
            with open(f"/proc/net/{table}") as rows:
                count = sum(1 for row in rows if row.strip()) - 1
        except FileNotFoundError:
            continue
        if count > 0:
            left[table] = count
    return left


def sysv_ipc_ids() -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for kind in SYSVIPC:
        try:
            with open(f"/proc/sysvipc/{kind}") as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            rows = []
        ids[kind] = [int(row.split()[1]) for row in rows if row.strip()]
    return ids


def remove_sysv_ipc() -> None:
    removers = {"shm": libc.shmctl, "msg": libc.msgctl, "sem": libc.semctl}
    for kind, ipc_ids in sysv_ipc_ids().items():
        for ipc_id in ipc_ids:
            if kind == "sem":
                removers[kind](ipc_id, 0, IPC_RMID)
            else:
                removers[kind](ipc_id, IPC_RMID, None)


def remove_message_queues() -> None:
    if os.path.isdir(MQUEUE_DIR):
        for name in os.listdir(MQUEUE_DIR):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(MQUEUE_DIR, name))


def leftovers(recorded: dict, *, thorough: bool = False) -> list[str]:
    """Everything that would let one run reach the next; empty means provably clean.

    The idle runners the agent started after the last proof (`idle_pids`) are not leftovers:
    a health check made while the container waits spares them as a sweep does.
    """
    problems = []
    changed = changed_attributes(recorded)
    if changed:
        problems.append(f"agent attributes changed: {changed}")
    sockets = sockets_left(recorded["sockets"], thorough=thorough)
    if sockets:
        problems.append(f"sockets left: {sockets}")
    pids = other_pids()
    if pids:
        problems.append(f"processes alive: {pids[:10]}")
    for path in SCRATCHES:
        scratch = os.listdir(path)
        if scratch:
            problems.append(f"scratch {path} not empty: {sorted(scratch)[:10]}")
    if os.path.isdir(MQUEUE_DIR) and os.listdir(MQUEUE_DIR):
        problems.append("message queues left")
    ipc = {kind: ids for kind, ids in sysv_ipc_ids().items() if ids}
    if ipc:
        problems.append(f"sysv ipc left: {ipc}")
    return problems


def clean_container(attributes: dict) -> list[str]:
    """Kill, remove, wipe, then prove; every failure is a problem reported, never a crash."""
    if not sweep_processes():
        return ["processes survived the sweep"]
    problems = []
    for step in (remove_sysv_ipc, remove_message_queues):
        try:
            step()
        except Exception as exc:
            problems.append(f"{step.__name__} failed: {exc!r}")
    deadline = time.monotonic() + WIPE_DEADLINE_S
    for path in SCRATCHES:  # /tmp and the exec scratch alike
        try:
            wipe_directory(path, deadline)
        except (OSError, WipeTimeoutError) as exc:
            problems.append(f"scratch {path} wipe failed: {exc!r}"[:500])
    try:
        return problems + leftovers(attributes)
    except Exception as exc:
        return [*problems, f"proof of clean failed: {exc!r}"]
