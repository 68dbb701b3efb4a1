"""A Python session's kernel: the warm runner, told by its go to keep state, runs cells until the
agent ends the session (issue 13).

The runner becomes the kernel when its go's mode is `session` (the hook in runner.py); whether
it was spawned directly or forked from a fork server makes no difference here. From then on:
- cells arrive on fd 0 as JSON lines `{"code", "stdin", "artifacts_max", "artifacts_max_bytes"}`
  (fd 0 is then moved away and replaced by /dev/null, so the cell's own processes never read the
  control channel); each cell runs in one persistent `__main__` namespace, cwd the scratch, so
  variables, imports and files persist from cell to cell;
- a cell's output goes to the runner's stdout/stderr pipes as a script's would; once it ends the
  kernel flushes them and answers on fd 4 (also moved to a private descriptor) with one JSON
  line: the exit code, whether SIGINT interrupted it, and the matplotlib figures it left open
  (PNG, base64, closed afterwards);
- SIGINT interrupts a running cell (KeyboardInterrupt) and is ignored between cells; a cell the
  signal cannot stop is the agent's to kill: it then replaces the kernel and says so.
The last expression of a cell is shown as the interactive interpreter shows it. Standard
library only, besides what the cell itself imports; the cell can break only its own session.
"""

import ast
import base64
import io
import json
import linecache
import os
import signal
import struct
import sys
import traceback
import types

SCRATCH = "/tmp"
MAX_CELL_LINE = 32 * 1024 * 1024
_in_cell = [False]


def _on_sigint(signum: int, frame: object) -> None:
    if _in_cell[0]:
        raise KeyboardInterrupt


def _private(fd: int) -> int:
    """Move `fd` above the cell's usual descriptors, close-on-exec, so a subprocess of a cell
    never inherits the control channel."""
    moved = os.dup(fd)
    os.set_inheritable(moved, False)
    os.close(fd)
    return moved


def _take_channels() -> tuple[io.BufferedReader, int]:
    control = os.fdopen(_private(0), "rb", buffering=1 << 16)
    null = os.open(os.devnull, os.O_RDONLY)
    if null != 0:
        os.dup2(null, 0)
        os.close(null)
    return control, _private(4)


def _main_module() -> dict:
    module = types.ModuleType("__main__")
    module.__builtins__ = __builtins__
    module.__spec__ = None
    sys.modules["__main__"] = module
    return module.__dict__


def _compiled(source: str, name: str) -> tuple[types.CodeType | None, types.CodeType | None]:
    """The cell's body, and its last expression compiled to be displayed (or None)."""
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    tree = ast.parse(source, name)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = compile(ast.Interactive([tree.body.pop()]), name, "single")
    return compile(tree, name, "exec"), last


def _status_of(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _show(error: BaseException) -> None:
    """The traceback without the kernel's own frame, through the cell's excepthook if any."""
    tb = error.__traceback__.tb_next if error.__traceback__ else None
    if isinstance(error, SyntaxError):
        tb = None
    try:
        sys.excepthook(type(error), error, tb)
    except BaseException:  # (a broken hook must not take the kernel down)
        traceback.print_exception(type(error), error, tb)


def run_cell(namespace: dict, cell: dict, number: int) -> dict:
    """Run one cell; returns its exit code and whether SIGINT interrupted it."""
    stdin = str(cell.get("stdin") or "").encode()
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    status, interrupted = 0, False
    _in_cell[0] = True
    try:
        body, last = _compiled(str(cell.get("code", "")), f"<cell {number}>")
        exec(body, namespace)  # noqa: S102  (running the user's cell is the point)
        if last is not None:
            exec(last, namespace)  # noqa: S102
    except SystemExit as exit_request:
        status = _status_of(exit_request.code)
    except KeyboardInterrupt as error:
        interrupted, status = True, 130
        _show(error)
    except BaseException as error:  # (as the interpreter would: print it)
        status = 1
        _show(error)
    finally:
        _in_cell[0] = False
    return {"exit_code": status & 0xFF if status >= 0 else 255, "interrupted": interrupted}


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk: the pixels actually sent."""
    return struct.unpack(">II", data[16:24]) if len(data) >= 24 else (0, 0)


def collect_figures(limit: int, limit_bytes: int) -> tuple[list[dict], int]:
    """Every open matplotlib figure as PNG, then all closed; (artifacts, how many dropped)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return [], 0
    artifacts: list[dict] = []
    dropped = total = 0
    for number in pyplot.get_fignums():
        buffer = io.BytesIO()
        try:
            pyplot.figure(number).savefig(buffer, format="png")
        except Exception as error:  # (a broken figure is the cell's problem)
            print(f"warmbox: figure {number} could not be saved: {error}", file=sys.stderr)
            dropped += 1
            continue
        data = buffer.getvalue()
        if len(artifacts) >= limit or total + len(data) > limit_bytes:
            dropped += 1
            continue
        total += len(data)
        width, height = _png_size(data)
        artifacts.append(
            {
                "type": "image/png",
                "data": base64.b64encode(data).decode(),
                "width": width,
                "height": height,
                "bytes": len(data),
            }
        )
    pyplot.close("all")
    return artifacts, dropped


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:  # noqa: SIM105
            stream.flush()
        except Exception:  # noqa: S110  (a cell may have closed or replaced a stream)
            pass


def serve() -> None:
    """Cells until the agent closes the control channel; never returns."""
    control, report = _take_channels()
    signal.signal(signal.SIGINT, _on_sigint)
    os.chdir(SCRATCH)
    sys.argv = [""]
    sys.path[0] = SCRATCH
    sys.stdout.reconfigure(line_buffering=True)
    namespace = _main_module()
    number = 0
    while True:
        line = control.readline(MAX_CELL_LINE)
        if not line:
            os._exit(0)
        number += 1
        try:
            cell = json.loads(line)
        except ValueError:
            cell = {"code": "raise SystemExit('warmbox: unreadable cell')"}
        answer = run_cell(namespace, cell, number)
        limits = int(cell.get("artifacts_max", 16)), int(cell.get("artifacts_max_bytes", 1 << 22))
        answer["artifacts"], answer["artifacts_dropped"] = collect_figures(*limits)
        _flush()
        view = memoryview(json.dumps(answer).encode() + b"\n")
        while view:
            view = view[os.write(report, view) :]


serve()
