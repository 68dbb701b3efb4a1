"""What a caller gets back from ordinary runs: output, exit codes, stdin, errors, limits."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import run

pytestmark = pytest.mark.docker


class TestOrdinaryRuns:
    def test_hello_world(self, shared_pool):
        result = run(shared_pool, "print('hello')")
        assert (result.stdout, result.stderr, result.exit_code) == ("hello\n", "", 0)
        assert result.success
        assert not (result.timed_out)
        assert not (result.memory_exceeded)
        assert not (result.output_truncated)
        assert 0 < result.duration_s < 5

    def test_stdout_and_stderr_are_separate(self, shared_pool):
        result = run(shared_pool, "import sys\nprint('out')\nprint('err', file=sys.stderr)")
        assert result.stdout == "out\n"
        assert result.stderr == "err\n"

    def test_exit_code_is_the_scripts_own(self, shared_pool):
        result = run(shared_pool, "import sys\nsys.exit(3)")
        assert result.exit_code == 3
        assert not result.success

    def test_uncaught_exception_shows_only_the_scripts_frames(self, shared_pool):
        result = run(shared_pool, "def f():\n    return 1 / 0\n\nf()")
        assert result.exit_code == 1
        assert result.stderr.startswith("Traceback (most recent call last):\n")
        assert 'File "/tmp/main.py", line 4, in <module>' in result.stderr
        assert "ZeroDivisionError: division by zero" in result.stderr
        assert "runner.py" not in result.stderr

    def test_syntax_error_is_reported_like_python_does(self, shared_pool):
        result = run(shared_pool, "print('unclosed'")
        assert result.exit_code == 1
        assert "SyntaxError" in result.stderr
        assert "runner.py" not in result.stderr

    def test_stdin_is_delivered(self, shared_pool):
        code = "import sys\nfor line in sys.stdin:\n    print(int(line) * 2)"
        assert run(shared_pool, code, stdin="1\n2\n3\n").stdout == "2\n4\n6\n"

    def test_large_stdin_is_delivered_whole(self, shared_pool):
        data = "x" * 200_000
        result = run(shared_pool, "import sys\nprint(len(sys.stdin.read()))", stdin=data)
        assert result.stdout == "200000\n"

    def test_unread_stdin_does_not_block(self, shared_pool):
        assert run(shared_pool, "print('ignored')", stdin="y" * 500_000).stdout == "ignored\n"

    def test_unicode_round_trips(self, shared_pool):
        assert run(shared_pool, "print('héllo ✓ 日本')").stdout == "héllo ✓ 日本\n"

    def test_script_is_main_and_argv_names_it(self, shared_pool):
        code = "import sys\nprint(__name__, sys.argv, __file__)"
        assert run(shared_pool, code).stdout == "__main__ ['/tmp/main.py'] /tmp/main.py\n"

    def test_threads_are_joined_before_the_run_ends(self, shared_pool):
        code = (
            "import threading, time\n"
            "def late():\n    time.sleep(0.2)\n    print('thread done')\n"
            "threading.Thread(target=late).start()\nprint('main done')"
        )
        assert run(shared_pool, code).stdout == "main done\nthread done\n"

    def test_atexit_handlers_run_and_their_output_is_kept(self, shared_pool):
        code = "import atexit\natexit.register(print, 'bye')\nprint('hi')"
        assert run(shared_pool, code).stdout == "hi\nbye\n"

    def test_sys_exit_with_a_message_prints_it_and_exits_1(self, shared_pool):
        result = run(shared_pool, "import sys\nsys.exit('fatal: no input')")
        assert (result.exit_code, result.stderr) == (1, "fatal: no input\n")

    def test_exit_from_an_atexit_handler_is_ignored_as_python_does(self, shared_pool):
        code = "import atexit, sys\natexit.register(sys.exit, 4)\nprint('done')"
        result = run(shared_pool, code)
        assert (result.stdout, result.exit_code) == ("done\n", 0)
        assert "Exception ignored in atexit callback" in result.stderr
