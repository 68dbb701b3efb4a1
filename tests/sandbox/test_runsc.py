"""The isolation and hardening tests again, with every sandbox under gVisor (SANDBOX_RUNTIME=runsc).

Every test class of test_isolation.py and test_hardening.py is collected here a second time
with runsc pools: the fixtures below replace `shared_pool` and `make_pool` for this module only.
Under gVisor the pool runs single-use (Settings refuses reuse: the agent cannot see System V IPC
objects or POSIX queues there), so each run gets a fresh sandbox kernel. Where gVisor
legitimately shows a run something else, the class is overridden below with the gVisor
expectation and the reason; a new test in those modules runs here unchanged by default.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from app.core.config import Settings
from app.core.errors import SandboxError
from app.sandbox.pool import ContainerPool
from tests.sandbox import conftest, test_hardening, test_isolation
from tests.sandbox.conftest import PYTHON, PoolFactory, assert_clean, run, sandbox_settings
from tests.sandbox.test_hardening import inspected  # noqa: F401  (a fixture TestHostConfig uses)

pytestmark = pytest.mark.docker

RUNSC = {"sandbox_runtime": "runsc", "pool_mode": "single_use"}

# Re-collect every test class of both modules here (the overrides below replace a few).
globals().update(
    {
        name: value
        for module in (test_isolation, test_hardening)
        for name, value in vars(module).items()
        if name.startswith("Test") and isinstance(value, type)
    }
)

# gVisor has its own /proc without /proc/sysvipc, and no /dev/mqueue. A single-use sandbox is a
# fresh gVisor kernel, so IPC objects are counted by their ids instead (gVisor hands them out
# from 1 upwards): IPC_STAT on ids 0-63 of each kind.
GVISOR_PROBE = conftest.PROBE.replace(
    """def ipc(kind):
    with open(f"/proc/sysvipc/{kind}") as table:
        return len([row for row in table.read().splitlines()[1:] if row.strip()])""",
    """import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def ipc(kind):
    buf = ctypes.create_string_buffer(512)
    stat = {"shm": lambda i: libc.shmctl(i, 2, buf), "msg": lambda i: libc.msgctl(i, 2, buf),
            "sem": lambda i: libc.semctl(i, 0, 2, buf)}[kind]
    return len([i for i in range(64) if stat(i) == 0])""",
).replace(
    '"mqueue": sorted(os.listdir("/dev/mqueue")),',
    '"mqueue": sorted(os.listdir("/dev/mqueue")) if os.path.isdir("/dev/mqueue") else [],',
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="module", autouse=True)
def runsc_registered(docker_client: docker.DockerClient) -> None:
    if "runsc" not in docker_client.info().get("Runtimes", {}):
        reason = "the Docker engine has no runsc runtime; run scripts/setup.sh (scripts/gvisor.sh)"
        if _in_ci():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _gvisor_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GVISOR_PROBE != conftest.PROBE, "the probe changed: update GVISOR_PROBE"
    monkeypatch.setattr(conftest, "PROBE", GVISOR_PROBE)


@pytest.fixture(scope="module")
def shared_pool(docker_client: docker.DockerClient) -> Iterator[ContainerPool]:
    pool = ContainerPool(sandbox_settings(**RUNSC), docker_client, PYTHON)
    pool.start()
    yield pool
    pool.shutdown()


@pytest.fixture
def make_pool(docker_client: docker.DockerClient) -> Iterator[PoolFactory]:
    pools: list[ContainerPool] = []

    def factory(**overrides: Any) -> ContainerPool:
        pool = ContainerPool(sandbox_settings(**{**RUNSC, **overrides}), docker_client, PYTHON)
        pools.append(pool)
        pool.start()
        return pool

    yield factory
    for pool in pools:
        pool.shutdown()


def test_settings_refuse_reused_containers_under_runsc() -> None:
    with pytest.raises(ValueError, match="POOL_MODE=single_use"):
        Settings(_env_file=None, sandbox_runtime="runsc", pool_mode="reuse")  # type: ignore[call-arg]


def test_the_containers_really_run_under_gvisor(make_pool: PoolFactory, docker_client) -> None:
    pool = make_pool()
    (container,) = docker_client.containers.list(filters={"label": f"warmbox.pool={pool.pool_id}"})
    assert docker_client.api.inspect_container(container.id)["HostConfig"]["Runtime"] == "runsc"
    # gVisor's own kernel answers the run, not the host's.
    seen = run(pool, "import os; print(os.uname().release)").stdout.strip()
    assert seen != os.uname().release


def test_gvisor_own_threads_leave_the_run_room_under_the_pids_limit(
    make_pool: PoolFactory, docker_client
) -> None:
    # The Sentry's and the gofer's host threads count in the container's pids cgroup: with the
    # limit at SANDBOX_PIDS_LIMIT alone an idle sandbox (agent, fork server, runner) used 63 of
    # 64, and a run that started a child and killed it stopped the whole sandbox now and then.
    pool = make_pool()
    (container,) = docker_client.containers.list(filters={"label": f"warmbox.pool={pool.pool_id}"})
    current = Path(f"/sys/fs/cgroup/pids/docker/{container.id}/pids.current")
    if not current.exists():
        pytest.skip("no cgroup v1 pids controller for docker containers on this host")
    code = (
        "import subprocess, sys, time\n"
        "children = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(2)'])"
        " for _ in range(3)]\ntime.sleep(1)\nprint('ok')"
    )
    answer: list[str] = []
    running = threading.Thread(target=lambda: answer.append(run(pool, code).stdout))
    running.start()
    time.sleep(0.8)
    used = int(current.read_text()) if current.exists() else 0
    running.join()
    limit = docker_client.api.inspect_container(container.id)["HostConfig"]["PidsLimit"]
    assert answer == ["ok\n"]
    assert limit - used >= 24, (used, limit)


# ------------------------------------------------------------ where gVisor legitimately differs
# Each override keeps the original's point (the host is safe, the next run is clean) and states
# what a run sees under gVisor instead. The pool is single-use here, so the "next run" is always
# in a fresh sandbox.

KILLED = "the container stopped or was killed"


class TestRunawayRuns(test_isolation.TestRunawayRuns):
    def test_memory_bomb_is_killed_and_flagged(self, shared_pool):
        # The Sentry holds the sandbox's memory, so the host cgroup's OOM killer ends the whole
        # sandbox: a SANDBOX_ERROR (503) instead of a 200 with memory_exceeded.
        code = "hog = []\nwhile True:\n    hog.append(b'x' * 10_000_000)"
        with pytest.raises(SandboxError, match=KILLED):
            run(shared_pool, code, timeout_s=10.0)
        assert_clean(shared_pool)

    def test_fork_bomb_is_contained(self, shared_pool):
        # pids_limit counts the Sentry's host threads too: the sandbox dies instead of the fork
        # failing inside it.
        code = (
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
        )
        with pytest.raises(SandboxError, match=KILLED):
            run(shared_pool, code, timeout_s=2.0)
        assert_clean(shared_pool)


class TestSecretsDoNotCross(test_isolation.TestSecretsDoNotCross):
    def test_secret_left_anywhere_writable_is_gone_for_the_next_run(self, shared_pool):
        planted = run(shared_pool, self.PLANT)
        # gVisor does not enforce RLIMIT_MSGQUEUE: the POSIX queue is created (a descriptor).
        assert planted.stdout.startswith("True True True "), planted
        search = run(
            shared_pool,
            self.SEARCH.replace(
                test_isolation.SECRET, "warmbox-" + '" + "' + test_isolation.SECRET[8:]
            ),
        )
        assert search.stdout == "[]\n", search
        assert_clean(shared_pool)


class TestProcesses(test_isolation.TestProcesses):
    def test_run_that_kills_every_process_it_can_cannot_touch_the_agent(self, shared_pool):
        # gVisor delivers SIGKILL to the container's init from inside: the run ends its own
        # single-use sandbox (SANDBOX_ERROR); kill(-1) still spares the agent.
        code = (
            "import os, signal, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "os.kill(-1, signal.SIGKILL)\n"
            "print('child', child.wait())\n"
        )
        assert run(shared_pool, code).stdout == "child -9\n"
        with pytest.raises(SandboxError, match=KILLED):
            run(shared_pool, "import os\nos.kill(1, 9)\nimport time\ntime.sleep(5)")
        assert_clean(shared_pool)

    def test_agent_cannot_be_killed_stopped_traced_or_read(self, shared_pool):
        # gVisor's /proc ignores PR_SET_DUMPABLE for environ, maps and fd (mem and ptrace stay
        # refused); the agent holds nothing of another run, since every sandbox is single-use.
        code = (
            "import ctypes, json, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "try:\n    open('/proc/1/mem', 'rb').read(16)\n    mem = 'read'\n"
            "except OSError as error:\n    mem = error.errno\n"
            "print(json.dumps([mem, libc.ptrace(16, 1, None, None)]))"
        )
        assert json.loads(run(shared_pool, code).stdout) == [13, -1]
        with pytest.raises(SandboxError, match=KILLED):
            run(shared_pool, "import os\nos.kill(1, 9)\nimport time\ntime.sleep(5)")
        assert_clean(shared_pool)


class TestSeenFromInside(test_hardening.TestSeenFromInside):
    def test_status_shows_no_capabilities_no_new_privs_and_seccomp(self, shared_pool):
        # gVisor's status has no NoNewPrivs line and shows Seccomp 0: Docker's profile is not
        # loaded inside the sandbox (runsc --oci-seccomp would, but then posix_spawn fails
        # here); the Sentry's own seccomp filter guards the host. no-new-privileges and the
        # seccomp option are still set on the container (TestHostConfig).
        code = (
            "fields = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
            "names = ('CapEff', 'CapBnd', 'NoNewPrivs', 'Seccomp')\n"
            "print(*(fields.get(name, '-').strip() for name in names))"
        )
        assert run(shared_pool, code).stdout.split() == [
            "0000000000000000",
            "0000000000000000",
            "-",
            "0",
        ]
