"""Exit notices (sandbox_images/agent/protocol.py, EXIT_NOTICES), through the real engine.

A runner that says it has ended is answered before the kernel has torn it down, with the output,
exit code and usage a wait for its exit would give. Whatever else a run does (a thread or a child
left, a signal, a listener that exits, a fatal exception) ends it at the exit, as before. A notice
a program forges ends only its own run, and the FIFO carries nothing from one run to the next.
"""

from __future__ import annotations

import time

import pytest

from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest, RunResult
from sandbox_images.agent import protocol
from tests.sandbox.conftest import PoolFactory, assert_clean, run

# The runner's token, as the script can find it: in the globals of the runner's frame that runs it.
FIND_TOKEN = "import sys\ntoken = sys._getframe(1).f_globals['_notice_token']\n"


def forge(status: int, then: str) -> str:
    return (
        FIND_TOKEN
        + "import os\n"
        + f"fd = os.open({protocol.EXIT_NOTICES!r}, os.O_WRONLY | os.O_NONBLOCK)\n"
        + f"os.write(fd, token + b' {status}\\n')\n"
        + then
    )


@pytest.mark.parametrize(
    ("code", "exit_code", "stdout", "stderr"),
    [
        ("print('hi')", 0, "hi\n", ""),
        ("import sys\nprint('x')\nsys.exit(3)", 3, "x\n", ""),
        ("import sys\nsys.exit(300)", 300 & 0xFF, "", ""),
        ("raise ValueError('boom')", 1, "", "ValueError: boom"),
        ("import sys\nsys.exit('bye')", 1, "", "bye"),
        ("import atexit\natexit.register(print, 'late')\nprint('early')", 0, "early\nlate\n", ""),
        ("import sys\nsys.stdout.write('y' * 50000)", 0, "y" * 50000, ""),
        ("import threading\nthreading.Thread(target=print, args=('t',)).start()", 0, "t\n", ""),
    ],
)
def test_a_python_run_that_ends_is_answered_on_its_notice(
    shared_pool: ContainerPool, code: str, exit_code: int, stdout: str, stderr: str
) -> None:
    result = run(shared_pool, code)
    assert result.exit_noticed, result
    assert (result.exit_code, result.stdout) == (exit_code, stdout)
    assert stderr in result.stderr
    assert_clean(shared_pool)


@pytest.mark.parametrize(
    ("code", "exit_code", "stdout"),
    [
        # a daemon thread runs until the exit itself: no notice
        (
            "import threading, time\n"
            "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\nprint('d')",
            0,
            "d\n",
        ),
        ("import subprocess\nsubprocess.run(['true'])\nprint('s')", 0, "s\n"),  # a child it had
        ("import os, time\nif os.fork() == 0:\n    time.sleep(5)\nprint('f')", 0, "f\n"),  # left
        ("import os\nprint('o', flush=True)\nos._exit(5)", 5, "o\n"),  # ends without a notice
        # a child the script forks ends through the runner's code too: its end is not the run's
        (
            "import os, sys\nif os.fork() == 0:\n    print('child', flush=True)\n    sys.exit(3)\n"
            "os.wait()\nprint('parent')",
            0,
            "child\nparent\n",
        ),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", 137, ""),
    ],
)
def test_a_python_run_with_more_than_its_runner_ends_at_the_exit(
    shared_pool: ContainerPool, code: str, exit_code: int, stdout: str
) -> None:
    result = run(shared_pool, code)
    assert not result.exit_noticed, result
    assert (result.exit_code, result.stdout) == (exit_code, stdout), result
    assert_clean(shared_pool)


def assert_measured_on_notice(result: RunResult, peak_mb: int, cpu_ms: float) -> None:
    """Usage a noticed run reports is measured by the agent, not told by the runner: the peak of
    what the program touched, its CPU at least the loop's and at most the wall time."""
    assert result.exit_noticed
    assert result.usage is not None
    assert result.usage.peak_memory_kb >= peak_mb * 1024
    assert cpu_ms <= result.usage.cpu_time_ms <= result.usage.wall_time_ms + 20, result.usage


def test_usage_on_a_notice_is_the_runners_own(shared_pool: ContainerPool) -> None:
    code = (
        "import time\nblock = bytearray(96 << 20)\n"
        "end = time.process_time() + 0.15\nwhile time.process_time() < end:\n    pass\n"
    )
    assert_measured_on_notice(run(shared_pool, code), peak_mb=96, cpu_ms=150)


def test_lines_without_the_runs_token_change_nothing(shared_pool: ContainerPool) -> None:
    code = (
        "import os, time\n"
        f"fd = os.open({protocol.EXIT_NOTICES!r}, os.O_WRONLY | os.O_NONBLOCK)\n"
        "os.write(fd, b'0' * 32 + b' 0\\n' + b'x' * 5000 + b'\\n\\n 0\\n')\n"
        "os.write(fd, b'f' * 32 + b' 77\\n' + b'%s 1\\n' % os.urandom(16).hex().encode())\n"
        "os.write(fd, b'a line the runners notice must not join')\n"
        "time.sleep(0.3)\nprint('after')\n"
    )
    result = run(shared_pool, code)
    assert (result.exit_code, result.stdout) == (0, "after\n")
    assert result.exit_noticed  # its runner's own notice, at the end, on a line of its own
    assert_clean(shared_pool)


def test_a_forged_notice_ends_only_the_forgers_run(shared_pool: ContainerPool) -> None:
    started = time.monotonic()
    result = run(shared_pool, forge(7, "import time\ntime.sleep(3)\nprint('never')\n"))
    assert (result.exit_code, result.stdout, result.timed_out) == (7, "", False)
    assert time.monotonic() - started < 2.5  # the agent took the notice, not the sleep's end
    assert_clean(shared_pool)
    assert run(shared_pool, "print('next')").stdout == "next\n"


def test_a_forged_notice_with_a_child_alive_ends_the_run_as_an_exit(
    shared_pool: ContainerPool,
) -> None:
    code = forge(
        6,
        "import time\nprint('forged', flush=True)\ntime.sleep(3)\n",
    ).replace("import os\n", "import os, time\nif os.fork() == 0:\n    time.sleep(30)\n", 1)
    result = run(shared_pool, code)
    assert (result.exit_code, result.exit_noticed, result.timed_out) == (6, False, False)
    assert_clean(shared_pool)


def test_nothing_a_run_does_to_the_fifo_reaches_the_next_run(shared_pool: ContainerPool) -> None:
    # Bytes a daemon keeps writing after the run, and the pipe's size (F_SETPIPE_SZ): the agent
    # opens the FIFO afresh after every reset, so the next run finds a new, empty pipe.
    secret = "exit-notice-secret-4711"
    planted = run(
        shared_pool,
        "import fcntl, os, time\n"
        f"fd = os.open({protocol.EXIT_NOTICES!r}, os.O_WRONLY | os.O_NONBLOCK)\n"
        "print(fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096))\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    os.set_blocking(fd, True)\n"
        "    while True:\n"
        f"        os.write(fd, b'{secret}\\n')\n"
        "        time.sleep(0.001)\n"
        "time.sleep(0.2)\n",
    )
    assert planted.stdout == "4096\n", planted
    search = run(
        shared_pool,
        "import fcntl, os\n"
        f"fd = os.open({protocol.EXIT_NOTICES!r}, os.O_RDONLY | os.O_NONBLOCK)\n"
        "print(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))\n"
        "try:\n    print(os.read(fd, 1 << 16))\nexcept BlockingIOError:\n    print('empty')\n",
    )
    assert search.stdout == "65536\nempty\n", search
    assert_clean(shared_pool)


def test_a_forked_runner_with_the_pre_imports_ends_on_its_notice(make_pool: PoolFactory) -> None:
    pool = make_pool(sandbox_python_preload="numpy,pandas", pool_start_timeout_s=60.0)
    code = "import pandas\nprint(pandas.DataFrame({'a': range(100)}).describe().loc['max', 'a'])"
    results = [run(pool, code) for _ in range(2)]
    assert [(r.stdout, r.exit_noticed) for r in results] == [("99.0\n", True)] * 2
    assert all(r.usage is not None and r.usage.peak_memory_kb > 20_000 for r in results)


def test_an_execd_runner_ends_on_its_notice_too(make_pool: PoolFactory) -> None:
    pool = make_pool(sandbox_python_fork_server=False)
    result = run(pool, "import sys\nprint('e')\nsys.exit(2)")
    assert (result.stdout, result.exit_code, result.exit_noticed) == ("e\n", 2, True)


def node(pool: ContainerPool, code: str, language: str = "javascript") -> RunResult:
    return pool.run(RunRequest(code=code, language=language, timeout_s=10.0))


@pytest.mark.parametrize(
    ("code", "exit_code", "stdout", "noticed"),
    [
        ("console.log('hi')", 0, "hi\n", True),
        ("process.exitCode = 4; console.log('x')", 4, "x\n", True),
        ("console.log('x'); process.exit(300)", 300 & 0xFF, "x\n", True),
        # with an 'exit' listener node may still run what it queues: no notice
        (
            "process.on('exit', (c) => console.log('bye', c)); setTimeout(() => {}, 20)",
            0,
            "bye 0\n",
            False,
        ),
        (
            "process.on('exit', () => Promise.resolve().then(() => {\n"
            "  console.log('micro'); process.exitCode = 7; }))",
            7,
            "micro\n",
            False,
        ),
        ("process.emit('exit'); console.log('on')", 0, "on\n", True),  # not node's exit
        (
            "process.on('uncaughtException', () => console.log('caught')); null.x",
            0,
            "caught\n",
            True,
        ),
        ("process.on('exit', () => process.exit(9))", 9, "", False),  # a listener exits
        ("process.exitCode = '3'", 3, "", False),  # node reads a string: we leave it to node
    ],
)
def test_a_node_run_is_answered_on_its_notice_where_node_only_exits_after_it(
    javascript_pool: ContainerPool, code: str, exit_code: int, stdout: str, noticed: bool
) -> None:
    result = node(javascript_pool, code)
    assert (result.exit_code, result.stdout, result.exit_noticed) == (exit_code, stdout, noticed)


@pytest.mark.parametrize(
    ("code", "printed"),
    [
        ("throw new Error('boom')", "Error: boom"),
        ("Promise.reject(new Error('later'))", "Error: later"),
    ],
)
def test_a_fatal_node_exception_is_printed_whole(
    javascript_pool: ContainerPool, code: str, printed: str
) -> None:
    # node emits 'exit' before it prints the error: no notice, the run ends at the exit
    result = node(javascript_pool, code)
    assert (result.exit_code, result.exit_noticed) == (1, False)
    assert printed in result.stderr
    assert "Node.js v" in result.stderr


def test_node_usage_on_a_notice(javascript_pool: ContainerPool) -> None:
    code = (
        "const block = Buffer.alloc(64 << 20, 1);\n"
        "const end = process.cpuUsage().user + 150000;\n"
        "while (process.cpuUsage().user < end) {}\n"
        "console.log(block.length);\n"
    )
    assert_measured_on_notice(node(javascript_pool, code), peak_mb=64, cpu_ms=150)


def test_notices_turned_off_end_every_run_at_its_exit(make_pool: PoolFactory) -> None:
    pool = make_pool(sandbox_exit_notices=False)
    assert pool.limits.agent_environment["WARMBOX_EXIT_NOTICES"] == "0"
    result = run(pool, "import sys\nprint('off')\nsys.exit(4)")
    assert (result.stdout, result.exit_code, result.exit_noticed) == ("off\n", 4, False)
    # the go still carries the token's field, empty: the arguments after it are the script's
    argv = run(pool, "import sys\nprint(sys.argv[1:])", args=["a", "b"])
    assert argv.stdout == "['a', 'b']\n"
