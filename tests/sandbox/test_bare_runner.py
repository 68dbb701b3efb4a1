"""Python's two runners, on the real engine: with pre-imports, a script that names no installed
package runs in a runner forked from a bare fork server, any other in one forked from the fork
server that holds the pre-imports. Both are ready after every reset, so whichever a run does not
take waits beside it through the run: the run has its uid, and must neither read nor trace it,
and whatever it changes in it must not reach the run that later takes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest

from app.sandbox.languages import LANGUAGES
from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest
from tests.sandbox.conftest import run, sandbox_settings

pytestmark = pytest.mark.docker

# The pre-import is numpy alone: the mechanism is the same as with the default list, and a
# container starts in a fraction of the time.
PRELOAD = "numpy"
# A line that names the package, so that the script gets the runner with the pre-imports.
PRELOADED = "# numpy\n"

# Finds, from inside a run, the runner of the other kind that waits beside it: fork servers and
# their runners share a command line (a fork keeps it); the bare one's ends in `--preload=`, and a
# runner is younger than its fork server (a higher pid in a fresh PID namespace).
FIND_IDLE = """
import ctypes, json, os, resource, sys
libc = ctypes.CDLL(None, use_errno=True)
def cmdline(p):
    with open(f"/proc/{p}/cmdline", "rb") as handle:
        return handle.read()
warm = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())
        and cmdline(p).endswith(b"--zygote\\0")]
bare = sorted(p for p in warm if b"--preload=\\0" in cmdline(p))
preloaded = sorted(p for p in warm if b"--preload=\\0" not in cmdline(p))
mine_is_bare = "nu" + "mpy" not in sys.modules
others = preloaded if mine_is_bare else bare
assert len(others) == 2, (bare, preloaded)  # the other kind's fork server and its idle runner
IDLE = others[-1]
"""

OWN_ATTRIBUTES = """
import ctypes, json, os, resource, sys
with open("/proc/self/oom_score_adj") as adj:
    oom = adj.read().strip()
print(json.dumps({
    "bare": "nu" + "mpy" not in sys.modules,
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "policy": os.sched_getscheduler(0),
    "affinity": sorted(os.sched_getaffinity(0)),
    "ioprio": ctypes.CDLL(None).syscall(252, 1, 0),  # ioprio_get(IOPRIO_WHO_PROCESS, self)
    "limits": {n: resource.getrlimit(getattr(resource, n))
               for n in ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CPU", "RLIMIT_AS")},
    "oom": oom,
}))
"""

TAMPERING = {
    "kill": "os.kill(IDLE, 9)",
    "stop": "os.kill(IDLE, 19)",
    "renice": "os.setpriority(os.PRIO_PROCESS, IDLE, 19)",
    "idle_scheduling": "os.sched_setscheduler(IDLE, os.SCHED_IDLE, os.sched_param(0))",
    "prlimit": "resource.prlimit(IDLE, resource.RLIMIT_NOFILE, (32, 32))",
    "prlimit_cpu": "resource.prlimit(IDLE, resource.RLIMIT_CPU, (1, 1))",
    "affinity": "os.sched_setaffinity(IDLE, {min(os.sched_getaffinity(0))})",
    "ioprio": "assert libc.syscall(251, 1, IDLE, (3 << 13)) == 0, ctypes.get_errno()",
}
# Who tampers: a run in the bare runner changes the idle runner with the pre-imports, or the other
# way round. The run after it is of the kind that was tampered with.
SIDES = {"bare_run_tampers_with_preloaded": PRELOADED, "preloaded_run_tampers_with_bare": ""}


@pytest.fixture(scope="module")
def preloaded_pool(docker_client: docker.DockerClient) -> Iterator[ContainerPool]:
    settings = sandbox_settings(sandbox_python_preload=PRELOAD, pool_start_timeout_s=60.0)
    pool = ContainerPool(settings, docker_client, LANGUAGES["python"])
    pool.start()
    yield pool
    pool.shutdown()


def _attributes(pool: ContainerPool, prefix: str) -> dict:
    result = run(pool, prefix + OWN_ATTRIBUTES)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_script_naming_no_installed_package_runs_without_the_pre_imports(
    preloaded_pool: ContainerPool,
):
    listing = "import sys\nprint(sorted(m for m in sys.modules if m.startswith('nu' + 'mpy'))[:1])"
    assert run(preloaded_pool, listing).stdout == "[]\n"
    # Named anywhere (here in a comment), the package is there before the script starts.
    assert run(preloaded_pool, PRELOADED + listing).stdout == "['numpy']\n"
    # Reached in a way the check cannot see, it is imported as `python3 main.py` would.
    dynamic = run(preloaded_pool, "m = __import__('nu' + 'mpy')\nprint(m.arange(4).sum())")
    assert (dynamic.stdout, dynamic.exit_code) == ("6\n", 0), dynamic.stderr
    # The bare runner is a whole interpreter: site's builtins, its own script path and argv.
    ended = run(preloaded_pool, "import sys\nprint(sys.argv, sys.path[0])\nexit(3)")
    assert (ended.stdout, ended.exit_code) == ("['/tmp/main.py'] /tmp\n", 3), ended.stderr


@pytest.mark.parametrize("side", sorted(SIDES))
def test_the_idle_runner_of_the_other_kind_can_be_neither_read_nor_traced(
    preloaded_pool: ContainerPool, side: str
):
    tamperer = "" if SIDES[side] else PRELOADED
    code = (
        tamperer
        + FIND_IDLE
        + """
outcome = {}
for name in ("environ", "mem", "maps"):
    try:
        with open(f"/proc/{IDLE}/{name}", "rb") as handle:
            handle.read(16)
        outcome[name] = "read"
    except OSError as error:
        outcome[name] = error.errno
outcome["ptrace"] = libc.ptrace(16, IDLE, None, None)  # PTRACE_ATTACH
print(json.dumps(outcome))
"""
    )
    result = run(preloaded_pool, code)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"environ": 13, "mem": 13, "maps": 13, "ptrace": -1}


@pytest.mark.parametrize("tampering", sorted(TAMPERING))
@pytest.mark.parametrize("side", sorted(SIDES))
def test_a_run_that_changes_the_idle_runner_leaves_the_run_that_takes_it_untouched(
    preloaded_pool: ContainerPool, side: str, tampering: str
):
    victim = SIDES[side]
    tamperer = "" if victim else PRELOADED
    before = _attributes(preloaded_pool, victim)
    assert before["bare"] is (not victim)
    hostile = run(preloaded_pool, tamperer + FIND_IDLE + TAMPERING[tampering] + "\nprint('done')")
    assert hostile.stdout == "done\n", hostile.stderr
    after = _attributes(preloaded_pool, victim)
    assert after == before  # the agent saw the change and replaced that runner before this run


# Every process a run in the bare runner sees beside it in a clean container: the two fork servers
# and the idle runner with the pre-imports (a fork keeps its fork server's command line).
WARM_ONLY = """
import os
def cmdline(p):
    with open(f"/proc/{p}/cmdline", "rb") as handle:
        return handle.read()
others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid())]
def who(p):
    return "warm" if cmdline(p).endswith(b"--zygote\\0") else cmdline(p).decode()
print(sorted(who(p) for p in others))
"""


def test_a_sessions_kernel_is_not_spared_as_an_idle_runner(preloaded_pool: ContainerPool):
    # The kernel is made from the idle runner with the pre-imports; once it is the session's, the
    # sweeps and the proof at the session's end must take it like any process of a run.
    assert run(preloaded_pool, WARM_ONLY).stdout == "['warm', 'warm', 'warm']\n"
    session = preloaded_pool.lend(max_file_bytes=1024, max_files=4)
    try:
        made = session.execute(RunRequest(code="import os\nkernel = os.getpid()\nprint(kernel)"))
        assert made.run.exit_code == 0, made.run.stderr
    finally:
        session.close()
    kernel = made.run.stdout.strip()
    after = run(preloaded_pool, WARM_ONLY + f"print(os.path.exists('/proc/{kernel}'))")
    assert after.stdout == "['warm', 'warm', 'warm']\nFalse\n", after.stderr
