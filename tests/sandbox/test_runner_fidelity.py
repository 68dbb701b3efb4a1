"""A warm run ends as `python3 main.py` in a cold container of the same image does, even when the
script replaces what the runner itself needs after it (os._exit, sys.exit, sys.stdout, atexit,
threading, sys.excepthook, builtins). A warm node run (a runner started from a snapshot, parked,
then given main.js through `Module.runMain`) ends as `node main.js` does: exit codes set every
way, 'exit' and 'beforeExit' listeners, errors after the main module, workers, output."""

from __future__ import annotations

import docker
import pytest

from app.sandbox.engine import SANDBOX_USER
from app.sandbox.types import RunRequest
from tests.sandbox.conftest import run

pytestmark = pytest.mark.docker

SCRIPTS = {
    "os_exit_gone": "import os\nos._exit = None\nprint('hello')",
    "sys_exit_gone": "import sys\nsys.exit = None\nprint('still')",
    "stdout_replaced": "import io, sys\nprint('a')\nsys.stdout = io.StringIO()\nprint('b')",
    "stdout_none": "import sys\nprint('a')\nsys.stdout = None\nprint('b')",
    "atexit_replaced": (
        "import atexit\natexit.register(print, 'bye')\natexit._run_exitfuncs = None\n"
        "atexit.register = None\nprint('main')"
    ),
    "threading_shutdown_gone": "import threading\nthreading._shutdown = None\nprint('t')",
    "builtins_gone": (
        "import builtins\nprint('x')\nfor name in ('print', 'isinstance', 'str', 'getattr', "
        "'type', 'range', 'repr', 'len'):\n    setattr(builtins, name, None)\n"
        "raise SystemExit('bye')"
    ),
    "excepthook_broken": "import sys\nsys.excepthook = None\nprint('before')\n1 / 0",
    "excepthook_replaced": (
        "import sys\nsys.excepthook = lambda *a: print('hooked', a[0].__name__)\nraise KeyError(1)"
    ),
    "exit_code_with_everything_gone": (
        "import atexit, os, sys\nos._exit = sys.exit = atexit._run_exitfuncs = None\nsys.exit = 3\n"
        "raise SystemExit(4)"
    ),
}


def cold_run(
    client: docker.DockerClient, image: str, code: str, command: str = "python3 /tmp/main.py"
) -> tuple[str, str, int]:
    """`python3 /tmp/main.py` (or `command`, its program in the file it names) in a fresh
    container of the same image: what the interpreter itself does."""
    path = command.split()[-1]
    container = client.containers.create(
        image,
        entrypoint=["sh", "-c", f'printf %s "$1" > {path} && exec {command}'],
        command=["sh", code],
        user=SANDBOX_USER,
        network_mode="none",
        tmpfs={"/tmp": "mode=1777"},
        environment={"PYTHONIOENCODING": "utf-8"},
    )
    try:
        container.start()
        status = container.wait(timeout=60)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode()
        err = container.logs(stdout=False, stderr=True).decode()
    finally:
        container.remove(force=True)
    return out, err, status


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_that_replaces_what_the_runner_needs_ends_as_python_does(
    shared_pool, docker_client, name
):
    code = SCRIPTS[name]
    warm = run(shared_pool, code)
    cold = cold_run(docker_client, shared_pool.image, code)
    assert (warm.stdout, warm.stderr, warm.exit_code) == cold


NODE_ENDINGS = {
    "hello": "console.log('hello')",
    "exit_code": "console.log('a'); process.exitCode = 3",
    "exit_code_wraps": "process.exitCode = 300",
    "exit_code_not_a_number": "process.exitCode = '7'",
    "exit_listener_prints_and_sets_the_code": (
        "process.on('exit', (code) => { console.log('bye', code); process.exitCode = 5 });\n"
        "console.log('main')"
    ),
    "tens_of_kilobytes_on_both_streams": (
        "process.stdout.write('x'.repeat(40000) + '\\n'); process.stderr.write('y'.repeat(20000))"
    ),
    "before_exit_schedules_more_work_that_throws": (
        "let n = 0;\nprocess.on('beforeExit', () => {\n  if (n++ < 2) setTimeout(() => {\n"
        "    console.log('tick', n);\n    if (n === 2) throw new Error('late');\n  }, 5);\n});"
    ),
    "process_exit_in_a_timer": "setTimeout(() => process.exit(4), 5); console.log('x')",
    "unhandled_rejection_later": "setTimeout(() => Promise.reject(new Error('rejected')), 1)",
    "error_frozen": "Object.freeze(Error); console.log('frozen')",
    "stack_api_replaced": (
        "Error.stackTraceLimit = 0; Error.prepareStackTrace = () => 'mine';\n"
        "console.log(new Error('e').stack)"
    ),
    "emit_replaced": (
        "const emit = process.emit;\n"
        "process.emit = function (...args) { return emit.apply(this, args); };\n"
        "process.on('exit', () => console.log('exit seen'));"
    ),
    "async_main": (
        "(async () => { await new Promise((r) => setTimeout(r, 10)); console.log('done'); })()"
    ),
    "worker_thread": (
        "const { Worker } = require('worker_threads');\n"
        "const worker = new Worker('console.log(\"from the worker\")', { eval: true });\n"
        "worker.on('exit', () => console.log('worker done'));"
    ),
}


@pytest.mark.parametrize("name", sorted(NODE_ENDINGS))
def test_a_node_script_ends_as_node_main_js_does(javascript_pool, docker_client, name):
    code = NODE_ENDINGS[name]
    for _ in range(2):  # the second run takes the runner parked during the first
        result = javascript_pool.run(RunRequest(code=code, language="javascript", timeout_s=10.0))
        cold = cold_run(docker_client, javascript_pool.image, code, command="node /tmp/main.js")
        assert (result.stdout, result.stderr, result.exit_code) == cold
