"""A graded submission's cases in one container lease (the GRADE frame): every case still a fresh
process on a freshly wiped scratch, the reset and proof once at the end, a case that leaves what
cannot be cleaned ends the lease, a cancel stops it. Real engine, real image, real pool."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from app.sandbox.pool import ContainerPool
from app.sandbox.types import GradeCase, GradeRequest, GradeResult, RunResult
from app.submissions.grader import Case, Grader, Program
from app.submissions.models import CompareMode
from tests.sandbox.conftest import PROBE, assert_clean
from tests.sandbox.test_reuse import replaced_since

pytestmark = pytest.mark.docker

# "leave" leaves something in every place a run can write or keep alive; "look" prints what a
# run sees (PROBE) plus its own pid, and whether the leftovers are there.
LEAVER = (
    r"""
import os, subprocess, sys, builtins
if input().strip() == "leave":
    for path in ("/tmp/left.txt", "/exec/left.txt", "main_left.txt"):
        open(path, "w").write("secret")
    os.makedirs("/tmp/dir/sub")
    subprocess.Popen(["sleep", "300"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.system("ipcmk -M 4096 >/dev/null 2>&1")
    builtins.LEFT = "secret"
    print("left", os.getpid())
    raise SystemExit(0)
"""
    + PROBE
    + r"""
print(json.dumps({"pid": os.getpid(), "exec": sorted(os.listdir("/exec")),
                  "left": hasattr(__import__("builtins"), "LEFT")}))
"""
)


def grade(pool: ContainerPool, code: str, cases: list[GradeCase], **kwargs: Any) -> GradeResult:
    request = GradeRequest(code=code, cases=tuple(cases), **kwargs)
    with pool.borrowed(request.run_id) as container:
        return container.grade(request)


def look(result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
    state, extra = (json.loads(line) for line in result.stdout.splitlines())
    state.pop("env")
    return state, extra


def test_one_lease_grades_every_case_in_a_fresh_process_on_a_fresh_scratch(make_pool) -> None:
    pool = make_pool()
    leases, resets = pool.counters.executions, pool.counters.resets
    cases = [GradeCase(stdin=mode) for mode in ("leave", "look", "leave", "look")]

    graded = grade(pool, LEAVER, cases)

    assert graded.error is None
    assert len(graded.results) == 4
    assert all(result.exit_code == 0 for result in graded.results), graded.results
    pids = []
    for result in graded.results[1::2]:
        state, extra = look(result)
        assert state["pids"] == ["fork server"]  # no sleeper, no runner of the case before
        assert state["tmp"] == ["main.py"]
        assert state["ipc"] == [0, 0, 0]
        assert extra["exec"] == []
        assert extra["left"] is False
        pids.append(extra["pid"])
    pids += [int(result.stdout.split()[1]) for result in graded.results[0::2]]
    assert len(set(pids)) == 4  # four cases, four processes
    assert pool.counters.executions == leases + 1  # one lease for the four cases
    deadline = time.monotonic() + 20
    while pool.counters.resets == resets:  # the one reset after the lease
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert_clean(pool)


TIME_WAIT = r"""
import socket
if input().strip() == "leave":
    server = socket.create_server(("127.0.0.1", 8767))
    client = socket.create_connection(("127.0.0.1", 8767))
    connection, _ = server.accept()
    connection.close()  # the server closes first: its side waits in TIME_WAIT for a minute
    client.close()
    server.close()
    print("left")
else:
    server = socket.create_server(("127.0.0.1", 8767))
    print("bound")
"""


def test_a_case_that_leaves_what_cannot_be_cleaned_ends_the_lease(make_pool) -> None:
    """A TIME_WAIT socket survives every sweep: the agent cannot prove the scratch fresh for the
    next case, so it stops; the container is replaced after its reset (reuse mode), and the
    grader grades the rest in another lease, where the port is free as in a fresh container."""
    pool = make_pool(pool_max_size=2, pool_initial_size=2)
    failures = pool.counters.reset_failures

    graded = grade(pool, TIME_WAIT, [GradeCase(stdin="leave"), GradeCase(stdin="bind")])

    assert [result.stdout for result in graded.results] == ["left\n"]
    assert "clean" in (graded.error or "")
    deadline = time.monotonic() + 20
    while not replaced_since(pool, failures):
        assert time.monotonic() < deadline
        time.sleep(0.02)

    def lease(request: GradeRequest, _user: str, on_case: Any) -> GradeResult:
        with pool.borrowed(request.run_id) as container:
            return container.grade(request, on_case)

    program = Program("time-wait", "tester", "python", TIME_WAIT, (), CompareMode.TRIM,
                      0.0, 0.0, 256, 65536, 4096)  # fmt: skip
    cases = [Case(0, "leave", "left", (), 5.0), Case(1, "bind", "bound", (), 5.0)]
    grading = Grader(lease, should_stop=lambda: False).grade(program, cases)

    assert [outcome.verdict.value for outcome in grading.outcomes] == ["accepted", "accepted"]


def test_a_cancel_stops_the_lease_at_the_running_case(make_pool) -> None:
    pool = make_pool()
    request = GradeRequest(
        code="import time; time.sleep(30)", cases=(GradeCase(timeout_s=40.0),) * 3
    )
    answers: list[GradeResult] = []

    def grade_in_background() -> None:
        with pool.borrowed(request.run_id) as container:
            answers.append(container.grade(request))

    grader = threading.Thread(target=grade_in_background)
    started = time.monotonic()
    grader.start()
    deadline = started + 20
    while not pool.cancel(request.run_id):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grader.join(timeout=20)

    assert time.monotonic() - started < 15
    (graded,) = answers
    assert len(graded.results) <= 1
    assert all(result.cancelled for result in graded.results)
    assert_clean(pool)


def test_a_container_lost_mid_lease_fails_its_case_and_the_rest_go_to_another(make_pool) -> None:
    """The engine removes the container while case 1 runs: case 0 keeps its verdict, case 1 is
    an internal error, case 2 is graded in a fresh lease."""
    pool = make_pool(pool_max_size=2, pool_initial_size=2)
    containers: list[Any] = []

    def lease(request: GradeRequest, _user: str, on_case: Any) -> GradeResult:
        with pool.borrowed(request.run_id) as container:
            containers.append(container)
            return container.grade(request, on_case)

    def destroy_during_the_next_case(outcome: Any) -> None:
        if outcome.number == 0:
            threading.Timer(0.5, containers[0].destroy).start()

    program = Program("lost", "tester", "python", "import time; time.sleep(2); print('ok')", (),
                      CompareMode.TRIM, 0.0, 0.0, 256, 65536, 4096)  # fmt: skip
    cases = [Case(number, "", "ok", (), 10.0) for number in range(3)]
    grading = Grader(lease, should_stop=lambda: False).grade(
        program, cases, on_case=destroy_during_the_next_case
    )

    verdicts = [outcome.verdict.value for outcome in grading.outcomes]
    assert verdicts == ["accepted", "internal_error", "accepted"]
    assert len(containers) == 2
