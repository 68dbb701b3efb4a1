"""What a run can leave behind beyond files and processes: the agent's inherited attributes, the
network namespace's sockets, scratch trees built to break the wipe, and name resolution.

Each test runs in both pool modes on a pool of one container. In reuse mode the next run lands
in the same container unless the proof of clean refused it; either way it must see exactly what
a run in a fresh container sees.
"""

from __future__ import annotations

import json
import time

import pytest

from app.sandbox.pool import ContainerPool
from tests.sandbox.conftest import assert_clean, run

pytestmark = pytest.mark.docker

# What every runner inherits from the agent and a run could weaken on PID 1 with the same uid.
ATTRIBUTES = r"""
import ctypes, json, os, resource
libc = ctypes.CDLL(None, use_errno=True)
names = [n for n in dir(resource) if n.startswith("RLIMIT_")]
with open("/proc/self/status") as status:
    umask = [line.split()[1] for line in status if line.startswith("Umask:")][0]
with open("/proc/self/oom_score_adj") as adj:
    oom = adj.read().strip()
print(json.dumps({
    "rlimits": {n: resource.getrlimit(getattr(resource, n)) for n in sorted(names)},
    "nice": os.getpriority(os.PRIO_PROCESS, 0),
    "policy": os.sched_getscheduler(0),
    "affinity": sorted(os.sched_getaffinity(0)),
    "ioprio": libc.syscall(252, 1, 0),  # ioprio_get(IOPRIO_WHO_PROCESS, self), x86_64
    "umask": umask,
    "oom_score_adj": oom,
}))
"""

WEAKEN_PID_1 = r"""
import ctypes, os, resource
libc = ctypes.CDLL(None, use_errno=True)
resource.prlimit(1, resource.RLIMIT_NOFILE, (40, 40))
resource.prlimit(1, resource.RLIMIT_FSIZE, (200_000, 200_000))
resource.prlimit(1, resource.RLIMIT_CPU, (3, 3))
resource.prlimit(1, resource.RLIMIT_STACK, (1 << 20, 1 << 20))
os.setpriority(os.PRIO_PROCESS, 1, 19)
os.sched_setaffinity(1, {min(os.sched_getaffinity(1))})
print(libc.syscall(251, 1, 1, 3 << 13))  # ioprio_set(pid 1, IOPRIO_CLASS_IDLE)
os.sched_setscheduler(1, os.SCHED_IDLE, os.sched_param(0))
print("weakened")
"""


def attributes(pool: ContainerPool) -> dict:
    result = run(pool, ATTRIBUTES)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def replaced_since(pool: ContainerPool, failures_before: int) -> bool:
    return pool.counters.reset_failures > failures_before


def assert_wiped_in_place(pool: ContainerPool, failures_before: int) -> None:
    """The agent cleaned up and proved it: in reuse mode the container was not replaced."""
    if pool.settings.pool_mode.value == "reuse":
        assert not replaced_since(pool, failures_before)


class TestInheritedAttributes:
    def test_run_that_weakens_pid_1_cannot_weaken_the_next_run(self, shared_pool):
        fresh = attributes(shared_pool)
        failures = shared_pool.counters.reset_failures
        result = run(shared_pool, WEAKEN_PID_1)
        assert result.stdout == "0\nweakened\n", result
        assert attributes(shared_pool) == fresh
        legit = run(shared_pool, "open('/tmp/big', 'wb').write(b'x' * 1_000_000)\nprint('ok')")
        assert legit.stdout == "ok\n", legit
        if shared_pool.settings.pool_mode.value == "reuse":
            assert replaced_since(shared_pool, failures)  # the proof saw it: not reused
        assert_clean(shared_pool)


class TestSockets:
    CYCLE = r"""
import array, socket
listener = socket.create_server(("127.0.0.1", 8765))
left = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
left.bind(b"\0warmbox-cycle")
right = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
right.connect(b"\0warmbox-cycle")
fds = array.array("i", [listener.fileno(), left.fileno(), right.fileno()])
right.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
print("cycle")
"""
    TIME_WAIT = r"""
import socket
server = socket.create_server(("127.0.0.1", 8766))
client = socket.create_connection(("127.0.0.1", 8766))
connection, _ = server.accept()
connection.close()  # the server closes first: its side waits in TIME_WAIT for a minute
client.close()
server.close()
print("time_wait")
"""
    BIND = r"""
import socket
server = socket.socket()
server.bind(("127.0.0.1", {port}))
server.listen()
with open("/proc/net/tcp") as tcp, open("/proc/net/unix") as unix:
    print(len(tcp.read().splitlines()) - 1, len(unix.read().splitlines()) - 1)
"""

    @pytest.mark.parametrize(
        ("script", "port"), [(CYCLE, 8765), (TIME_WAIT, 8766)], ids=["scm_rights", "time_wait"]
    )
    def test_fixed_port_server_in_the_next_run_starts_as_in_a_fresh_container(
        self, shared_pool, script, port
    ):
        failures = shared_pool.counters.reset_failures
        left = run(shared_pool, script)
        assert left.exit_code == 0, left.stderr
        result = run(shared_pool, self.BIND.format(port=port))
        assert (result.stdout, result.exit_code) == ("1 0\n", 0), result  # only its own listener
        if shared_pool.settings.pool_mode.value == "reuse":
            assert replaced_since(shared_pool, failures)
        assert_clean(shared_pool)


class TestScratchThatBreaksTheWipe:
    DEEP = r"""
import os
os.chdir("/tmp")
for _ in range({depth}):
    os.mkdir("d")
    os.chdir("d")
open("secret", "w").write("x")
print("deep")
"""

    @pytest.mark.parametrize("depth", [2_000, 20_000])
    def test_deep_directory_chain_is_wiped(self, shared_pool, depth):
        failures = shared_pool.counters.reset_failures
        started = time.monotonic()
        result = run(shared_pool, self.DEEP.format(depth=depth), timeout_s=20.0)
        assert result.stdout == "deep\n", result
        assert_clean(shared_pool)
        assert_wiped_in_place(shared_pool, failures)
        assert time.monotonic() - started < 30

    def test_unreadable_dirs_odd_names_and_symlinks_are_wiped_without_following(self, shared_pool):
        failures = shared_pool.counters.reset_failures
        code = r"""
import os
os.makedirs("/tmp/locked/inner")
open("/tmp/locked/inner/f", "w").write("x")
os.chmod("/tmp/locked/inner", 0)
os.chmod("/tmp/locked", 0o100)
os.mkdir(b"/tmp/odd\nname\xff")
open(b"/tmp/odd\nname\xff/\xfe\x01file", "w").write("x")
os.symlink("/opt/warmbox", "/tmp/link-out")
os.symlink("/tmp/locked", "/tmp/link-in")
os.mkdir("/tmp/nowrite")
open("/tmp/nowrite/f", "w").write("x")
os.chmod("/tmp/nowrite", 0o500)
print("planted")
"""
        assert run(shared_pool, code).stdout == "planted\n"
        assert_clean(shared_pool)
        assert_wiped_in_place(shared_pool, failures)

    def test_many_empty_files_are_wiped(self, shared_pool):
        failures = shared_pool.counters.reset_failures
        code = (
            "import os\nfor index in range(50_000):\n"
            "    os.close(os.open(f'/tmp/f{index}', os.O_CREAT | os.O_WRONLY))\nprint('many')"
        )
        result = run(shared_pool, code, timeout_s=30.0)
        assert result.stdout == "many\n", result
        assert_clean(shared_pool)
        assert_wiped_in_place(shared_pool, failures)


class TestNames:
    def test_localhost_resolves_to_loopback(self, shared_pool):
        code = r"""
import socket, threading
server = socket.create_server(("127.0.0.1", 0))
port = server.getsockname()[1]
def serve():
    connection, _ = server.accept()
    connection.sendall(b"hi")
    connection.close()
thread = threading.Thread(target=serve)
thread.start()
with socket.create_connection(("localhost", port), timeout=2) as client:
    print(client.recv(2).decode(), socket.gethostbyname("localhost"))
thread.join()
"""
        result = run(shared_pool, code)
        assert (result.stdout, result.exit_code) == ("hi 127.0.0.1\n", 0), result
        assert_clean(shared_pool)


class TestDeepCheck:
    def test_deep_check_reads_every_socket_table_and_finds_a_fresh_container_clean(self, make_pool):
        pool = make_pool()
        container = pool.acquire()  # taken out of the pool: shutdown removes it
        assert container.deep_check()  # its idle runner is the agent's own, not a leftover
