"""The next run's runner, started ahead and parked beside a run (agent/execution.py), through the
real engine: the run beside it can neither read nor trace it, and whatever it does to it from
outside (signals, nice, the inspector's signal) costs only speed: the next run gets a runner as
a fresh container gives it."""

from __future__ import annotations

import json
import time

import pytest

from app.sandbox.pool import ContainerPool
from app.sandbox.types import RunRequest, RunResult

# The parked runner: a child of the agent (PID 1) started from the runner's snapshot.
FIND_PARKED = (
    "const fs = require('fs');\n"
    "const parked = fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p)).filter((p) => {\n"
    "  if (p === '1' || p === String(process.pid)) return false;\n"
    "  const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');\n"
    "  const line = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8');\n"
    "  return stat[1] === '1' && line.includes('/opt/warmbox/runner');\n"
    "});\n"
)
READ_PARKED = FIND_PARKED + (
    "const tries = {};\n"
    "for (const name of ['environ', 'mem', 'maps', 'fd']) {\n"
    "  try {\n"
    "    if (name === 'fd') fs.readdirSync(`/proc/${parked[0]}/fd`);\n"
    "    else fs.closeSync(fs.openSync(`/proc/${parked[0]}/${name}`, 'r'));\n"
    "    tries[name] = 'opened';\n"
    "  } catch (error) { tries[name] = error.code; }\n"
    "}\n"
    "console.log(JSON.stringify({ parked: parked.length, tries }));\n"
)
TAMPER = FIND_PARKED + (
    "const os = require('os');\n"
    "for (const pid of parked) {\n"
    "  process.kill(Number(pid), 'SIGUSR1');\n"  # node's inspector, if it could start
    "  os.setPriority(Number(pid), 19);\n"
    "  process.kill(Number(pid), 'SIGSTOP');\n"
    "}\n"
    "console.log(parked.length);\n"
)
FRESH_VIEW = (
    "console.log(JSON.stringify({ nice: require('os').getPriority(), "
    "argv: process.argv.slice(1), execArgv: process.execArgv }));"
)


def run(pool: ContainerPool, code: str, park_delay_ms: object = 0) -> RunResult:
    return pool.run(
        RunRequest(code=code, language="javascript", timeout_s=10.0, park_delay_ms=park_delay_ms)  # type: ignore[arg-type]
    )


def wait_parked(pool: ContainerPool) -> None:
    """Until the container's parked runner exists (it is started right after each reset)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = run(pool, FIND_PARKED + "console.log(parked.length);")
        if result.stdout.strip() == "1":
            return
        time.sleep(0.5)
    pytest.fail("no parked runner appeared")


def test_run_cannot_read_or_trace_the_parked_runner(javascript_pool: ContainerPool) -> None:
    wait_parked(javascript_pool)
    result = run(javascript_pool, READ_PARKED)
    assert result.exit_code == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["parked"] == 1
    # Non-dumpable: ptrace access is refused, and its /proc entries are root's.
    assert seen["tries"] == dict.fromkeys(("environ", "mem", "maps", "fd"), "EACCES")


def test_tampering_with_the_parked_runner_costs_only_speed(javascript_pool: ContainerPool) -> None:
    wait_parked(javascript_pool)
    tamper = run(javascript_pool, TAMPER)
    assert tamper.stdout.strip() == "1", tamper.stderr
    after = run(javascript_pool, FRESH_VIEW)
    assert after.exit_code == 0
    assert after.stderr == ""  # no inspector message, no output of the tampered runner
    assert json.loads(after.stdout) == {"nice": 0, "argv": ["/tmp/main.js"], "execArgv": []}
    stats = javascript_pool.stats()
    assert stats["reset_failures"] == 0  # refusing a parked runner is no container failure


# The parked runner's age in milliseconds, from its start time in /proc (clock ticks since boot).
PARKED_AGE_MS = FIND_PARKED + (
    "const ticks = Number(fs.readFileSync(`/proc/${parked[0]}/stat`, 'utf8')\n"
    "  .split(') ')[1].split(' ')[19]);\n"
    "const uptime = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);\n"
    "console.log(JSON.stringify({ parked: parked.length, age_ms: uptime * 1000 - ticks * 10 }));\n"
)


def parked_age_after(pool: ContainerPool, park_delay_ms: object, pause_s: float) -> float:
    """Run hello with `park_delay_ms`, wait `pause_s`, and return how old the parked runner is
    when the next run looks at it."""
    wait_parked(pool)
    time.sleep(0.5)  # the parked runner ready: the run's reset takes it without waiting
    first = run(pool, "console.log('hi')", park_delay_ms=park_delay_ms)
    assert first.stdout == "hi\n"
    time.sleep(pause_s)
    seen = run(pool, PARKED_AGE_MS)
    assert seen.exit_code == 0, seen.stderr
    report = json.loads(seen.stdout)
    assert report["parked"] == 1
    return float(report["age_ms"])


def test_a_waited_for_run_parks_the_next_runner_at_the_next_frame(
    javascript_pool: ContainerPool,
) -> None:
    """With a park delay, the runtime for the run after next starts when the next frame comes
    (here the next run, 150 ms later), not while the run's answer is on its way out."""
    age_ms = parked_age_after(javascript_pool, park_delay_ms=200, pause_s=0.15)
    assert age_ms < 80  # parked at once after the run it would be 150 ms old or more


def test_a_park_delay_ends_on_its_own(javascript_pool: ContainerPool) -> None:
    """No frame comes: the runner is parked once the delay has passed, not later, not at once."""
    age_ms = parked_age_after(javascript_pool, park_delay_ms=200, pause_s=1.0)
    assert 650 < age_ms < 930  # started about 200 ms after the run, 1,000 ms before the look


def test_without_a_park_delay_the_runner_parks_at_once(javascript_pool: ContainerPool) -> None:
    age_ms = parked_age_after(javascript_pool, park_delay_ms=0, pause_s=0.3)
    assert age_ms > 250


@pytest.mark.parametrize("delay", [10**9, -5, "soon", None, float("nan")])
def test_a_hostile_park_delay_is_bounded_or_ignored(
    javascript_pool: ContainerPool, delay: object
) -> None:
    """The agent takes at most PARK_DELAY_MAX_MS (200 ms) of any value, and 0 of a nonsense one:
    the container serves on, and a runner is parked within that bound."""
    # Looked at 600 ms later, past the bound: parked on its own, not held until the look's frame.
    assert parked_age_after(javascript_pool, park_delay_ms=delay, pause_s=0.6) > 250
