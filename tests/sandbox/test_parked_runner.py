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


def run(pool: ContainerPool, code: str) -> RunResult:
    return pool.run(RunRequest(code=code, language="javascript", timeout_s=10.0))


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
