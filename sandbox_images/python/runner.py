"""Pre-spawned Python runner: waits for the go on fd 3, then runs /tmp/main.py as `python main.py`.

The interpreter is already started when the run arrives, which is what makes a warm run cost a few
milliseconds instead of an interpreter start-up. The script runs as `__main__` in a fresh module,
with its own directory on sys.path, and with tracebacks that show only its own frames.
"""

import json
import os
import sys
import types

CODE_PATH = "/tmp/main.py"


def _wait_for_go() -> dict:
    with os.fdopen(3, "rb") as control:
        return json.loads(control.read() or b"{}")


def _prefer_me_for_oom_kills() -> None:
    """If the container runs out of memory, the kernel should take the script, not the agent."""
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


def main() -> None:
    _wait_for_go()
    _prefer_me_for_oom_kills()
    with open(CODE_PATH, "rb") as code_file:
        source = code_file.read()
    sys.argv = [CODE_PATH]
    sys.path[0] = os.path.dirname(CODE_PATH)
    sys.stdout.reconfigure(line_buffering=True)
    try:
        code = compile(source, CODE_PATH, "exec")
    except (SyntaxError, ValueError) as error:
        sys.excepthook(type(error), error.with_traceback(None), None)
        sys.exit(1)
    module = _fresh_main_module()
    try:
        exec(code, module.__dict__)  # noqa: S102  (running the user's script is the point)
    except SystemExit:
        raise
    except BaseException as error:  # as the interpreter would: print it, exit 1
        tb = error.__traceback__.tb_next if error.__traceback__ else None
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        sys.exit(1)


main()
