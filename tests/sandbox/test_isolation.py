"""Hostile runs: each must end with the right flags, and the next run must find the container as
a fresh one would be. Every test runs in both pool modes (reuse and single-use)."""

from __future__ import annotations

import json

import pytest

from app.sandbox.pool import ContainerPool
from tests.sandbox.conftest import assert_clean, run

pytestmark = pytest.mark.docker

SECRET = "warmbox-secret-7f3a9c"


def _created(pool: ContainerPool) -> int:
    return pool.counters.created


def _assert_same_container_if_reused(pool: ContainerPool, created_before: int) -> None:
    """In reuse mode the hostile run and the check ran in one container (none was replaced)."""
    if pool.settings.pool_mode.value == "reuse":
        assert pool.counters.created == created_before
        assert pool.counters.reset_failures == 0
    assert pool.health().status in ("healthy", "degraded")


class TestRunawayRuns:
    def test_infinite_loop_times_out_and_next_run_is_clean(self, shared_pool):
        before = _created(shared_pool)
        result = run(shared_pool, "while True:\n    pass", timeout_s=1.0)
        assert result.timed_out
        assert result.exit_code == 137
        assert 1.0 <= result.duration_s < 2.0
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_sleep_times_out_with_partial_output_kept(self, shared_pool):
        before = _created(shared_pool)
        result = run(shared_pool, "import time\nprint('started')\ntime.sleep(60)", timeout_s=1.0)
        assert result.timed_out
        assert result.stdout == "started\n"
        assert not result.success
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_memory_bomb_is_killed_and_flagged(self, shared_pool):
        before = _created(shared_pool)
        code = "hog = []\nwhile True:\n    hog.append(b'x' * 10_000_000)"
        result = run(shared_pool, code, timeout_s=10.0)
        assert result.memory_exceeded
        assert result.exit_code == 137
        assert not result.timed_out
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_fork_bomb_is_contained(self, shared_pool):
        before = _created(shared_pool)
        code = (
            "import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n"
        )
        result = run(shared_pool, code, timeout_s=2.0)
        assert result.timed_out or result.exit_code != 0
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_output_flood_is_cut_and_flagged(self, shared_pool):
        before = _created(shared_pool)
        result = run(shared_pool, "while True:\n    print('x' * 1000)", timeout_s=1.0)
        assert result.output_truncated
        assert result.timed_out
        assert len(result.stdout.encode()) <= shared_pool.settings.run_output_limit_bytes
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_large_single_write_is_cut_without_timeout(self, shared_pool):
        result = run(shared_pool, "import sys\nsys.stdout.write('y' * 5_000_000)")
        assert result.output_truncated
        assert result.exit_code == 0
        assert len(result.stdout) == shared_pool.settings.run_output_limit_bytes


class TestFilesystem:
    def test_nothing_outside_scratch_is_writable(self, shared_pool):
        code = r"""
import json, os
outcome = {}
for path in ["/x", "/dev/shm/x", "/var/tmp/x", "/run/lock/x", "/etc/x", "/opt/warmbox/x",
             "/usr/lib/x", "/dev/x", "/root/x", "/home/x", "/proc/sys/kernel/x",
             "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]:
    try:
        with open(path, "a") as handle:
            handle.write("x")
        outcome[path] = "written"
    except OSError as error:
        outcome[path] = error.__class__.__name__
print(json.dumps(outcome))
"""
        result = run(shared_pool, code)
        outcome = json.loads(result.stdout)
        assert "written" not in outcome.values(), outcome
        assert_clean(shared_pool)

    def test_filling_scratch_fails_cleanly_and_is_emptied(self, shared_pool):
        before = _created(shared_pool)
        code = r"""
import os
written = 0
try:
    for index in range(100):
        with open(f"/tmp/fill-{index}", "wb") as handle:
            for _ in range(8):
                handle.write(b"z" * 1024 * 1024)
                written += 1
except OSError as error:
    print("stopped", error.errno, written)
"""
        result = run(shared_pool, code, timeout_s=10.0)
        assert result.stdout.startswith("stopped 28"), result  # ENOSPC
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_file_over_the_size_limit_is_refused(self, shared_pool):
        code = (
            "import signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "try:\n"
            "    with open('/tmp/big', 'wb') as f:\n"
            "        f.write(b'a' * (17 * 1024 * 1024))\n"
            "except OSError as error:\n"
            "    print('refused', error.errno)\n"
        )
        result = run(shared_pool, code, timeout_s=10.0)
        assert result.stdout == "refused 27\n"  # EFBIG: the fsize ulimit holds
        assert_clean(shared_pool)


class TestSecretsDoNotCross:
    PLANT = rf"""
import ctypes, os
secret = "{SECRET}"
os.makedirs("/tmp/.hidden/deeper", exist_ok=True)
for path in ("/tmp/secret.txt", "/tmp/.hidden/deeper/secret", "/tmp/.s"):
    with open(path, "w") as handle:
        handle.write(secret)
os.chmod("/tmp/.hidden/deeper", 0)
os.chmod("/tmp/.hidden", 0o500)
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shm = libc.shmget(0x5EC, 4096, 0o1000 | 0o666)
address = libc.shmat(shm, None, 0)
ctypes.memmove(address, secret.encode(), len(secret))
msq = libc.msgget(0x5ED, 0o1000 | 0o666)
sem = libc.semget(0x5EE, 1, 0o1000 | 0o666)
mq = libc.mq_open(b"/warmbox-secret", 0o100 | 0o2, 0o666, None)
print(shm >= 0, msq >= 0, sem >= 0, mq)
"""
    SEARCH = rf"""
import ctypes, os
secret = "{SECRET}"
found = []
for root, dirs, files in os.walk("/tmp"):
    for name in files:
        path = os.path.join(root, name)
        try:
            with open(path, errors="replace") as handle:
                if secret in handle.read():
                    found.append(path)
        except OSError:
            pass
for pid in os.listdir("/proc"):
    if pid.isdigit() and int(pid) != os.getpid():
        for part in ("cmdline", "environ"):
            try:
                with open(f"/proc/{{pid}}/{{part}}", "rb") as handle:
                    if secret.encode() in handle.read():
                        found.append(f"/proc/{{pid}}/{{part}}")
            except OSError:
                pass
libc = ctypes.CDLL(None, use_errno=True)
for key in (0x5EC, 0x5ED, 0x5EE):
    if libc.shmget(key, 0, 0) >= 0 or libc.msgget(key, 0) >= 0 or libc.semget(key, 0, 0) >= 0:
        found.append(f"ipc key {{key}}")
if libc.mq_open(b"/warmbox-secret", 0) >= 0:
    found.append("mqueue")
print(found)
"""

    def test_secret_left_anywhere_writable_is_gone_for_the_next_run(self, shared_pool):
        before = _created(shared_pool)
        planted = run(shared_pool, self.PLANT)
        assert planted.stdout.startswith("True True True"), planted
        assert planted.stdout.strip().endswith("-1")  # POSIX queues cannot even be created
        search = run(shared_pool, self.SEARCH.replace(SECRET, SECRET[:8] + '" + "' + SECRET[8:]))
        assert search.stdout == "[]\n", search
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)


class TestProcesses:
    def test_detached_background_process_cannot_reach_the_next_run(self, shared_pool):
        before = _created(shared_pool)
        spy = r"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with open("/tmp/main.py") as stolen, open("/tmp/stolen", "a") as out:
                    out.write(stolen.read())
            except OSError:
                pass
            try:
                os.kill(-1, 9)
            except OSError:
                pass
            time.sleep(0.001)
    os._exit(0)
print("planted")
"""
        result = run(shared_pool, spy)
        assert result.stdout == "planted\n"
        victim = run(shared_pool, "import time\ntime.sleep(0.3)\nprint('victim ok')")
        assert victim.stdout == "victim ok\n"
        assert victim.exit_code == 0
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_run_that_kills_every_process_it_can_cannot_touch_the_agent(self, shared_pool):
        before = _created(shared_pool)
        code = (
            "import os, signal, subprocess, sys\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "os.kill(-1, signal.SIGKILL)  # everything but itself and PID 1\n"
            "print('child', child.wait())\n"
            "os.kill(1, signal.SIGKILL)\n"
            "print('agent survives')"
        )
        result = run(shared_pool, code)
        assert result.stdout == "child -9\nagent survives\n"
        assert result.exit_code == 0
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_agent_cannot_be_killed_stopped_traced_or_read(self, shared_pool):
        before = _created(shared_pool)
        code = r"""
import ctypes, json, os, signal
outcome = {}
for name in ("environ", "mem", "maps"):
    try:
        with open(f"/proc/1/{name}", "rb") as handle:
            handle.read(16)
        outcome[name] = "read"
    except OSError as error:
        outcome[name] = error.errno
try:
    outcome["fd"] = os.listdir("/proc/1/fd")
except OSError as error:
    outcome["fd"] = error.errno
libc = ctypes.CDLL(None, use_errno=True)
outcome["ptrace"] = libc.ptrace(16, 1, None, None)  # PTRACE_ATTACH
for sig in (signal.SIGSTOP, signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
    os.kill(1, sig)
print(json.dumps(outcome))
"""
        result = run(shared_pool, code)
        outcome = json.loads(result.stdout)
        assert outcome == {"environ": 13, "mem": 13, "maps": 13, "fd": 13, "ptrace": -1}
        assert_clean(shared_pool)
        _assert_same_container_if_reused(shared_pool, before)

    def test_changed_environment_and_directory_do_not_carry_over(self, shared_pool):
        code = (
            "import os\nos.environ['LEAK'] = 'yes'\nos.putenv('LEAK2', 'yes')\n"
            "os.chdir('/')\nos.umask(0)\nprint(os.getcwd())"
        )
        assert run(shared_pool, code).stdout == "/\n"
        assert_clean(shared_pool)


class TestNetwork:
    def test_sandbox_has_no_network_but_loopback(self, shared_pool):
        code = (
            "import os\nprint(sorted(os.listdir('/sys/class/net')))\n"
            "with open('/proc/net/route') as routes:\n    print(len(routes.read().splitlines()))"
        )
        result = run(shared_pool, code)
        assert result.stdout == "['lo']\n1\n"  # only the header line: no route anywhere

    def test_name_resolution_fails(self, shared_pool):
        code = (
            "import socket\ntry:\n    socket.getaddrinfo('example.com', 80)\n"
            "    print('resolved')\nexcept OSError as error:\n    print('failed')"
        )
        assert run(shared_pool, code, timeout_s=10.0).stdout == "failed\n"
