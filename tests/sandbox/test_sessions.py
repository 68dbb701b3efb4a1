"""Sessions in the real engine: a lent container's warm runner keeps state from cell to cell,
returns figures, survives or honestly restarts after a runaway cell, confines file operations to
its scratch, and goes back to the pool only through the proof of clean."""

from __future__ import annotations

import base64

import pytest

from app.core.errors import SandboxError
from app.sandbox.pool import ContainerPool
from app.sandbox.session import SandboxSession, SessionFileError, SessionFileNotFoundError
from app.sandbox.types import RunRequest
from tests.sandbox.conftest import PoolFactory, assert_clean

LIMITS = {"max_file_bytes": 1024 * 1024, "max_files": 8}


def cell(session: SandboxSession, code: str, timeout_s: float = 5.0, **kwargs: object):
    return session.execute(RunRequest(code=code, timeout_s=timeout_s, **kwargs))


@pytest.fixture
def session(make_pool: PoolFactory):
    pool = make_pool()
    lent = pool.lend(**LIMITS)
    yield lent
    lent.close()


def test_variables_imports_and_files_persist_from_cell_to_cell(session):
    first = cell(session, "import json\nx = 41\nopen('kept.txt', 'w').write('hi')")
    assert first.run.exit_code == 0, first.run.stderr
    second = cell(session, "print(json.dumps(x + 1), open('kept.txt').read())")
    assert second.run.stdout == "42 hi\n"
    assert not second.restarted


def test_last_expression_is_shown_and_errors_keep_the_session(session):
    assert cell(session, "y = 2\ny * 21").run.stdout == "42\n"
    failed = cell(session, "1 / 0")
    assert failed.run.exit_code == 1
    assert "ZeroDivisionError" in failed.run.stderr
    assert "<cell" in failed.run.stderr
    assert cell(session, "print(y)").run.stdout == "2\n"


def test_cell_gets_its_own_stdin_and_output_limit(session):
    echoed = cell(session, "print(input()[::-1])", stdin="abc\n")
    assert echoed.run.stdout == "cba\n"
    flood = cell(session, "print('x' * 100000)", output_limit_bytes=1024)
    assert flood.run.output_truncated
    assert len(flood.run.stdout) == 1024


def test_figures_come_back_as_png_with_their_size_and_are_closed(session):
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.figure(figsize=(6.4, 4.8), dpi=100); plt.plot([1, 2, 3])\n"
        "plt.figure(); plt.plot([3, 2, 1])\n"
    )
    result = cell(session, code, timeout_s=20.0)
    assert result.run.exit_code == 0, result.run.stderr
    assert len(result.artifacts) == 2
    png = base64.b64decode(result.artifacts[0].data_base64)
    assert png.startswith(b"\x89PNG")
    assert (result.artifacts[0].width, result.artifacts[0].height) == (640, 480)
    assert result.artifacts[0].size_bytes == len(png)
    assert cell(session, "print(len(plt.get_fignums()))").run.stdout == "0\n"
    assert cell(session, "x = 1").artifacts == ()


def test_timed_out_cell_is_interrupted_and_the_state_kept(session):
    cell(session, "kept = 'yes'")
    result = cell(session, "import time\nprint('before', flush=True)\ntime.sleep(30)", 1.0)
    assert result.run.timed_out
    assert result.interrupted
    assert not result.restarted
    assert "before" in result.run.stdout
    assert "KeyboardInterrupt" in result.run.stderr
    assert cell(session, "print(kept)").run.stdout == "yes\n"


def test_cell_that_ignores_the_interrupt_restarts_the_kernel_and_says_so(session):
    cell(session, "lost = 1\nopen('file.txt', 'w').write('kept')")
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass"
    result = cell(session, code, 1.0)
    assert result.run.timed_out
    assert result.restarted
    after = cell(session, "print('lost' in dir(), open('file.txt').read())")
    assert after.run.stdout == "False kept\n"
    assert not after.restarted


def test_cell_that_ends_the_kernel_restarts_it(session):
    result = cell(session, "import os\nos._exit(3)")
    assert result.restarted
    assert result.run.exit_code == 3
    assert cell(session, "print('back')").run.stdout == "back\n"


def test_cell_cannot_speak_for_the_kernel_on_its_report_pipe(session):
    """Garbage written on the kernel's private report descriptor ends that kernel, not the
    agent: the result says restarted and the session goes on."""
    code = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try: os.write(fd, b'{not json}\\n')\n"
        "    except OSError: pass"
    )
    result = cell(session, code)
    assert result.restarted
    assert cell(session, "print(1)").run.stdout == "1\n"


def test_files_round_trip_and_are_listed(session):
    session.put_file("data/in.csv", b"a,b\n1,2\n")
    assert cell(session, "print(open('data/in.csv').read().split()[1])").run.stdout == "1,2\n"
    cell(session, "open('out.bin', 'wb').write(bytes(range(256)))")
    assert session.get_file("out.bin") == bytes(range(256))
    listed = {item.path: item.size_bytes for item in session.list_files()}
    assert listed == {"data/in.csv": 8, "out.bin": 256}
    session.delete_file("out.bin")
    with pytest.raises(SessionFileNotFoundError):
        session.get_file("out.bin")


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../x", "", "a\x01b"])
def test_paths_outside_the_scratch_are_refused(session, path):
    with pytest.raises(SessionFileError):
        session.get_file(path)
    with pytest.raises(SessionFileError):
        session.put_file(path, b"x")


def test_symlinks_planted_by_a_cell_do_not_lead_out_of_the_scratch(session):
    cell(session, "import os\nos.symlink('/etc', 'etc')\nos.symlink('/etc/passwd', 'pw')")
    for path in ("etc/passwd", "pw"):
        with pytest.raises(SessionFileError, match=r"link|not a plain|regular"):
            session.get_file(path)
    with pytest.raises(SessionFileError):
        session.put_file("etc/evil", b"x")
    with pytest.raises(SessionFileError):
        session.put_file("pw", b"x")  # O_NOFOLLOW: never written through the link
    session.delete_file("pw")  # removes the link itself
    assert cell(session, "print(open('/etc/passwd').read().startswith('root'))").run.stdout == (
        "True\n"
    )


def test_file_size_and_count_are_limited(session):
    with pytest.raises(SessionFileError, match="over"):
        session.put_file("big", b"x" * (LIMITS["max_file_bytes"] + 1))
    for number in range(LIMITS["max_files"]):
        session.put_file(f"f{number}", b"x")
    with pytest.raises(SessionFileError, match="already holds"):
        session.put_file("one-more", b"x")
    session.put_file("f0", b"overwrite is fine")
    cell(session, "open('big.out', 'wb').write(b'x' * (2 * 1024 * 1024))")
    with pytest.raises(SessionFileError, match="over"):
        session.get_file("big.out")


def test_session_leftovers_never_reach_the_next_user(shared_pool: ContainerPool):
    """A cell leaves a daemon and files; the session ends; the next run in that pool (the same
    container in reuse mode, a fresh one in single-use mode) finds a clean container."""
    lent = shared_pool.lend(**LIMITS)
    daemon = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            open('/tmp/daemon.txt', 'a').write('x'); time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "open('/tmp/secret.txt', 'w').write('s'); open('/exec/left', 'w').write('s')\n"
    )
    assert cell(lent, daemon).run.exit_code == 0
    alive = cell(lent, "time.sleep(0.3)\nprint(os.path.getsize('/tmp/daemon.txt') > 0)")
    assert alive.run.stdout == "True\n"
    lent.close()
    assert_clean(shared_pool)
    if shared_pool.settings.pool_mode.value == "reuse":
        assert shared_pool.stats()["destroyed"] == 0, "a clean container is reused"
    else:
        assert shared_pool.stats()["destroyed"] >= 1


def test_closed_session_refuses_more_cells(session):
    session.close()
    with pytest.raises(SandboxError):
        cell(session, "print(1)")
