"""A warm run ends as `python3 main.py` in a cold container of the same image does, even when the
script replaces what the runner itself needs after it (os._exit, sys.exit, sys.stdout, atexit,
threading, sys.excepthook, builtins)."""

from __future__ import annotations

import docker
import pytest

from app.sandbox.engine import SANDBOX_USER
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


def cold_python(client: docker.DockerClient, image: str, code: str) -> tuple[str, str, int]:
    """`python3 /tmp/main.py` in a fresh container of the same image: what CPython itself does."""
    container = client.containers.create(
        image,
        entrypoint=["sh", "-c", 'printf %s "$1" > /tmp/main.py && exec python3 /tmp/main.py'],
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
    cold = cold_python(docker_client, shared_pool.image, code)
    assert (warm.stdout, warm.stderr, warm.exit_code) == cold
