"""The Python fork server (zygote) against hostile runs, on the real engine, in both pool modes.

A run has the zygote's uid, so it can kill, stop, renice, prlimit, re-affine or re-prioritise
it; the next run must find a zygote as a fresh container has it (the agent compared it and
replaced it) and a runner with the container's own attributes. A run can never read or trace it.
In single-use mode the next run is in another container anyway; the tests hold there too.
"""

from __future__ import annotations

import json

import pytest

from app.sandbox.pool import ContainerPool
from tests.sandbox.conftest import assert_clean, run

pytestmark = pytest.mark.docker

FIND_ZYGOTE = """
import ctypes, json, os, resource
libc = ctypes.CDLL(None, use_errno=True)
zygotes = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()
           and open(f"/proc/{p}/cmdline", "rb").read().endswith(b"--zygote\\0")]
assert len(zygotes) == 1, zygotes
ZYGOTE = zygotes[0]
"""

# What a run can see of a process's inheritable attributes without tracing it.
ATTRIBUTES = (
    FIND_ZYGOTE
    + """
def attributes(pid):
    with open(f"/proc/{pid}/stat") as stat:
        state = stat.read().rpartition(")")[2].split()[0]
    return {
        "state": "stopped" if state in "Tt" else "running",
        "nice": os.getpriority(os.PRIO_PROCESS, pid),
        "policy": os.sched_getscheduler(pid),
        "affinity": sorted(os.sched_getaffinity(pid)),
        "ioprio": libc.syscall(252, 1, pid),
        "limits": {n: resource.prlimit(pid, getattr(resource, n))
                   for n in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_AS")},
    }
me = attributes(os.getpid())
me["state"] = "running"
print(json.dumps({"zygote": attributes(ZYGOTE), "runner": me}))
"""
)

TAMPERING = {
    "kill": "os.kill(ZYGOTE, 9)",
    "terminate": "os.kill(ZYGOTE, 15)",
    "stop": "os.kill(ZYGOTE, 19)",
    "renice": "os.setpriority(os.PRIO_PROCESS, ZYGOTE, 19)",
    "idle_scheduling": "os.sched_setscheduler(ZYGOTE, os.SCHED_IDLE, os.sched_param(0))",
    "prlimit": "resource.prlimit(ZYGOTE, resource.RLIMIT_NOFILE, (32, 32))",
    "prlimit_cpu": "resource.prlimit(ZYGOTE, resource.RLIMIT_CPU, (1, 1))",
    "affinity": "os.sched_setaffinity(ZYGOTE, {min(os.sched_getaffinity(0))})",
    "ioprio": "assert libc.syscall(251, 1, ZYGOTE, (3 << 13)) == 0, ctypes.get_errno()",
}


def _attributes(pool: ContainerPool) -> dict:
    result = run(pool, ATTRIBUTES)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
def test_a_run_that_changes_the_zygote_leaves_the_next_run_untouched(
    shared_pool: ContainerPool, tampering: str
):
    before = _attributes(shared_pool)
    assert before["zygote"] == before["runner"]  # the zygote has the container's attributes
    hostile = run(shared_pool, FIND_ZYGOTE + TAMPERING[tampering] + "\nprint('done')")
    assert hostile.stdout == "done\n", hostile.stderr
    after = _attributes(shared_pool)
    assert after == before  # the agent noticed and replaced the zygote before this run
    assert_clean(shared_pool)


def test_the_zygote_cannot_be_traced_or_read(shared_pool: ContainerPool):
    code = (
        FIND_ZYGOTE
        + """
outcome = {}
for name in ("environ", "mem", "maps"):
    try:
        with open(f"/proc/{ZYGOTE}/{name}", "rb") as handle:
            handle.read(16)
        outcome[name] = "read"
    except OSError as error:
        outcome[name] = error.errno
try:
    outcome["fd"] = os.listdir(f"/proc/{ZYGOTE}/fd")
except OSError as error:
    outcome["fd"] = error.errno
outcome["ptrace"] = libc.ptrace(16, ZYGOTE, None, None)  # PTRACE_ATTACH
print(json.dumps(outcome))
"""
    )
    result = run(shared_pool, code)
    assert json.loads(result.stdout) == {
        "environ": 13,
        "mem": 13,
        "maps": 13,
        "fd": 13,
        "ptrace": -1,
    }, result.stderr
    assert_clean(shared_pool)


def test_a_forked_runner_is_an_ordinary_dumpable_process_with_fresh_random_state(
    shared_pool: ContainerPool,
):
    code = (
        "import json, os, random\n"
        "print(json.dumps({'fds': sorted(os.listdir('/proc/self/fd')), "
        "'ppid': os.getppid(), 'sid': os.getsid(0) == os.getpid(), "
        "'random': random.random(), "
        "'oom': open('/proc/self/oom_score_adj').read().strip()}))"
    )
    first, second = (json.loads(run(shared_pool, code).stdout) for _ in range(2))
    for seen in (first, second):
        assert seen["fds"] == ["0", "1", "2", "3"]  # stdio and the listing's own descriptor
        assert seen["ppid"] == 1  # the agent's child, as an exec'd runner is
        assert seen["sid"] is True
        assert seen["oom"] == "1000"  # the OOM killer takes the run, not the zygote
    assert first["random"] != second["random"]


def test_numpy_random_state_is_fresh_in_every_forked_runner(make_pool):
    # numpy's global generator is seeded at import, in the zygote; every runner reseeds it.
    pool = make_pool(sandbox_python_preload="numpy", pool_start_timeout_s=60.0)
    code = "import numpy\nprint(numpy.random.randint(1 << 30))"
    values = {run(pool, code).stdout for _ in range(3)}
    assert len(values) == 3
