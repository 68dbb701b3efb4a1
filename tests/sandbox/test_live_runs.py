"""Live runs through the real pool: output streamed while the program runs (OUTPUT frames) and
input typed into a running program (STDIN frames), within the output limit, in both pool modes."""

from __future__ import annotations

import threading
import time

import pytest

from app.sandbox.container import _run_frame
from app.sandbox.types import RunRequest
from sandbox_images.agent import protocol
from tests.sandbox.conftest import assert_clean, run

pytestmark = pytest.mark.docker


class Collector:
    """An on_output callback that records (stream, text, monotonic time) per chunk."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, str, float]] = []
        self.first = threading.Event()

    def __call__(self, stream: str, text: str) -> None:
        self.chunks.append((stream, text, time.monotonic()))
        self.first.set()

    def text(self, stream: str) -> str:
        return "".join(text for name, text, _ in self.chunks if name == stream)


def live(pool, code: str, collector: Collector, **kwargs) -> object:
    kwargs.setdefault("timeout_s", 10.0)
    return pool.run(RunRequest(code=code, stream=True, **kwargs), collector)


class TestStreaming:
    def test_output_arrives_while_the_program_runs(self, shared_pool):
        collector = Collector()
        code = "import time, sys\nprint('first')\ntime.sleep(1.0)\nprint('oops', file=sys.stderr)"
        started = time.monotonic()
        result = live(shared_pool, code, collector)
        ended = time.monotonic()
        first_at = collector.chunks[0][2]
        assert collector.chunks[0][:2] == ("stdout", "first\n")
        assert ended - first_at >= 0.8, "the first line came only with the result"
        assert first_at - started < ended - started - 0.8
        assert collector.text("stdout") == result.stdout == "first\n"
        assert collector.text("stderr") == result.stderr == "oops\n"
        assert_clean(shared_pool)

    def test_streamed_output_never_exceeds_the_output_limit(self, shared_pool):
        collector = Collector()
        code = "import sys\nsys.stdout.write('x' * 1_000_000)\nsys.stderr.write('é' * 100_000)"
        result = live(shared_pool, code, collector, output_limit_bytes=10_000)
        assert result.output_truncated
        assert len(collector.text("stdout").encode()) == 10_000
        assert len(collector.text("stderr").encode()) <= 10_000
        assert collector.text("stdout") == result.stdout
        assert all(len(text.encode()) <= 16 * 1024 for _, text, _ in collector.chunks)
        assert_clean(shared_pool)

    def test_a_character_split_between_reads_arrives_whole(self, shared_pool):
        collector = Collector()
        code = (
            "import os, time\nos.write(1, 'é'.encode()[:1])\ntime.sleep(0.2)\n"
            "os.write(1, 'é'.encode()[1:] + b'\\n')"
        )
        result = live(shared_pool, code, collector)
        assert collector.text("stdout") == result.stdout == "é\n"

    def test_a_run_without_stream_sends_nothing_live(self, shared_pool):
        collector = Collector()
        result = shared_pool.run(RunRequest(code="print('quiet')", timeout_s=5.0), collector)
        assert result.stdout == "quiet\n"
        assert collector.chunks == []


class TestInteractive:
    def _feed(self, pool, run_id: str, data: str, eof: bool = False) -> None:
        deadline = time.monotonic() + 10
        while not pool.send_stdin(run_id, data, eof):  # not in a container yet
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.01)

    def test_input_reaches_a_running_program_as_it_asks(self, shared_pool):
        collector = Collector()
        request = RunRequest(
            code="name = input('name? ')\nprint('hello', name)\nprint('again', input())",
            stream=True,
            interactive=True,
            timeout_s=10.0,
        )
        results = []
        worker = threading.Thread(
            target=lambda: results.append(shared_pool.run(request, collector))
        )
        worker.start()
        assert collector.first.wait(10), "the prompt never arrived"
        assert collector.text("stdout") == "name? "
        self._feed(shared_pool, request.run_id, "ada\n")
        deadline = time.monotonic() + 5
        while "hello ada" not in collector.text("stdout"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        self._feed(shared_pool, request.run_id, "bob\n", eof=True)
        worker.join(10)
        (result,) = results
        assert result.exit_code == 0, result.stderr
        assert result.stdout == "name? hello ada\nagain bob\n"
        assert_clean(shared_pool)

    def test_eof_ends_the_programs_input(self, shared_pool):
        request = RunRequest(
            code="import sys\nprint(len(sys.stdin.read()))",
            stdin="abc",
            interactive=True,
            timeout_s=10.0,
        )
        results = []
        worker = threading.Thread(target=lambda: results.append(shared_pool.run(request)))
        worker.start()
        self._feed(shared_pool, request.run_id, "de", eof=True)
        worker.join(10)
        assert results[0].stdout == "5\n"

    def test_an_interactive_run_waiting_for_input_times_out(self, shared_pool):
        result = shared_pool.run(
            RunRequest(code="input()", interactive=True, timeout_s=1.0), Collector()
        )
        assert result.timed_out
        assert 0.9 < result.duration_s < 3
        assert_clean(shared_pool)

    def test_stdin_for_a_run_that_ended_changes_nothing(self, shared_pool):
        request = RunRequest(code="print('done')", interactive=True, timeout_s=5.0)
        assert shared_pool.run(request).stdout == "done\n"
        assert not shared_pool.send_stdin(request.run_id, "late\n")
        assert run(shared_pool, "print('next')").stdout == "next\n"
        assert_clean(shared_pool)

    def test_a_late_stdin_frame_does_not_spoil_the_reset(self, make_pool):
        """A STDIN frame racing the run's end reaches the agent after its RESULT: it is ignored,
        not answered with an error that the pool would take for a failed reset."""
        pool = make_pool()
        container = pool.acquire()
        request = RunRequest(code="print('done')", interactive=True, timeout_s=5.0)
        assert container.run(request).stdout == "done\n"
        container.channel.send({"type": "stdin", "id": request.run_id, "data": "x", "eof": True})
        report = container.await_reset()
        assert report.clean, report.problems
        assert container.ping()


class TestFramesInOneRead:
    """A client types at once: its STDIN (or CANCEL) frame can reach the agent in the same read
    as the RUN frame; the agent must not leave it in its buffer until more bytes come."""

    def _send_together(self, container, request: RunRequest, second: dict) -> dict:
        container.current_run_id = request.run_id
        container.channel._sock.sendall(
            protocol.encode(_run_frame(request)) + protocol.encode(second)
        )
        return container._receive(protocol.RESULT, 10)

    def test_stdin_in_the_same_read_as_the_run_reaches_the_program(self, make_pool):
        container = make_pool().acquire()
        request = RunRequest(code="print(input())", interactive=True, timeout_s=5.0)
        second = {"type": "stdin", "id": request.run_id, "data": "same read\n", "eof": True}
        result = self._send_together(container, request, second)
        assert (result["stdout"], result["timed_out"]) == ("same read\n", False)

    def test_a_cancel_in_the_same_read_as_the_run_stops_it(self, make_pool):
        container = make_pool().acquire()
        request = RunRequest(code="import time\ntime.sleep(5)", timeout_s=8.0)
        started = time.monotonic()
        result = self._send_together(container, request, {"type": "cancel", "id": request.run_id})
        assert result["cancelled"]
        assert time.monotonic() - started < 3
