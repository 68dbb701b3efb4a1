"""Turn one Locust run into load_tests/results/<date>-<cores>cores-<profile>.md and .json.

Reads Locust's CSV files, the locustfile's outcome counts, the leak snapshots and the run's
metadata (all written by run_load.sh into one work directory), checks the profile's targets,
prints PASS/FAIL per target and exits 0 only when every target passed.

    uv run python -m load_tests.summarize --work-dir /tmp/warmbox-load.X --results-dir DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.db import SQLITE_POOL_OVERFLOW, SQLITE_POOL_SIZE
from app.sandbox.engine import client_pool_size
from app.sandbox.stats import percentile

HELLO_EXECUTE = "POST /code/execute [hello]"
HEALTH_PROBE = "GET /health [probe]"
HELLO_P95_MS = 150.0
BURST_HELLO_P95_MS = 100.0
HEALTH_MAX_MS = 50.0
PERCENTILES = ("50%", "95%", "99%")


@dataclass(frozen=True)
class Target:
    name: str
    passed: bool
    measured: str


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def read_stats(path: Path) -> list[dict[str, Any]]:
    """Locust's per-endpoint rows (and the Aggregated one) with numbers parsed."""
    rows = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows.append(
                {
                    "type": row["Type"],
                    "name": row["Name"],
                    "requests": int(row["Request Count"]),
                    "failures": int(row["Failure Count"]),
                    "rps": round(float(row["Requests/s"]), 2),
                    "avg_ms": round(float(row["Average Response Time"]), 1),
                    "max_ms": round(float(row["Max Response Time"]), 1),
                    **{f"p{key[:-1]}_ms": _number(row[key]) for key in PERCENTILES},
                }
            )
    return rows


_WRAPPED = re.compile(r"^\w+\((['\"])(?P<message>.*)\1\)$")


def read_failures(path: Path) -> list[dict[str, Any]]:
    """Failures grouped by endpoint and kind (the message the locustfile gave the failure)."""
    if not path.exists():
        return []
    kinds = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            match = _WRAPPED.match(row["Error"])
            kind = match.group("message") if match else row["Error"]
            kinds.append({"name": row["Name"], "kind": kind, "count": int(row["Occurrences"])})
    return sorted(kinds, key=lambda item: -item["count"])


def read_exceptions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {"count": int(row["Count"]), "message": row["Message"]}
            for row in csv.DictReader(handle)
        ]


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def health_windows(series: list[list[float]], width_s: float = 10.0) -> list[dict[str, Any]]:
    """The probe's worst answer in each window of the run: 'within 50 ms throughout'."""
    windows: dict[int, list[float]] = {}
    for at, latency in series:
        windows.setdefault(int(at // width_s), []).append(latency)
    return [
        {
            "from_s": index * width_s,
            "probes": len(values),
            "max_ms": max(values),
            "p50_ms": percentile(values, 50),
        }
        for index, values in sorted(windows.items())
    ]


def _row(stats: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((row for row in stats if row["name"] == name), None)


# ---------------------------------------------------------------------------- targets


def _unexpected_failures(report: dict[str, Any]) -> Target:
    failures = sum(item["count"] for item in report["failures"])
    errors = sum(item["count"] for item in report["exceptions"])
    # Sign-ins fail before a measured window starts, so the window's stats cannot show them.
    meta = report["meta"]
    sign_ins = meta.get("failed_sign_ins", 0) if "measured_s" in meta else 0
    measured = f"{failures} failures, {errors} errors, {sign_ins} failed sign-ins at ramp-up"
    return Target("0 unexpected failures", failures + errors + sign_ins == 0, measured)


def _hello_p95(report: dict[str, Any]) -> Target:
    row = _row(report["endpoints"], HELLO_EXECUTE)
    p95 = row["p95_ms"] if row else None
    passed = p95 is not None and p95 <= HELLO_P95_MS
    return Target(f"hello-world execute p95 <= {HELLO_P95_MS:.0f} ms", passed, f"p95 {p95} ms")


def _burst_hello_p95(report: dict[str, Any]) -> Target:
    """Issue 12: grading must not starve interactive use."""
    row = _row(report["endpoints"], HELLO_EXECUTE)
    p95 = row["p95_ms"] if row else None
    passed = p95 is not None and p95 < BURST_HELLO_P95_MS
    name = f"hello-world execute p95 < {BURST_HELLO_P95_MS:.0f} ms during the burst"
    return Target(name, passed, f"p95 {p95} ms")


def _health_max(report: dict[str, Any]) -> Target:
    row = _row(report["endpoints"], HEALTH_PROBE)
    worst = row["max_ms"] if row else None
    passed = worst is not None and worst <= HEALTH_MAX_MS and row["failures"] == 0
    measured = f"max {worst} ms, p99 {row['p99_ms'] if row else None} ms over "
    measured += f"{row['requests'] if row else 0} probes"
    return Target(f"/health answers within {HEALTH_MAX_MS:.0f} ms throughout", passed, measured)


def _no_container_leak(report: dict[str, Any]) -> Target:
    leaks = report["leaks"]
    before = leaks.get("before", {}).get("containers")
    after = leaks.get("after", {}).get("containers")
    stopped = leaks.get("stopped", {}).get("containers")
    passed = before is not None and after == before and stopped == 0
    measured = f"before {before}, after {after}, after shutdown {stopped}"
    return Target("no container leak", passed, measured)


def _no_process_leak(key: str, label: str) -> Callable[[dict[str, Any]], Target]:
    """Threads or fds after the run, once settled, may not exceed the warmed-up baseline."""

    def check(report: dict[str, Any]) -> Target:
        before = report["leaks"].get("before", {}).get(key)
        after = report["leaks"].get("after", {}).get(key)
        passed = before is not None and after is not None and after <= before
        return Target(f"no {label} leak", passed, f"before {before}, after {after}")

    return check


def _rate_limited(report: dict[str, Any]) -> Target:
    refusals = sum(counts.get("http_429", 0) for counts in report["outcomes"].values())
    return Target("the limiter answers 429 under abuse", refusals > 0, f"{refusals} x 429")


def _no_server_errors(report: dict[str, Any]) -> Target:
    errors = sum(
        row["count"]
        for row in report["failures"]
        if "server error" in row["kind"] or row["kind"].startswith("HTTP 5")
    )
    return Target("no 5xx", errors == 0, f"{errors} x 5xx")


# Two bounded caches hold descriptors that a busier moment may add, and that stay for reuse:
# - SQLite: each open connection holds the database and its WAL file (one -shm is shared). When a
#   connection closes while others hold locks on the file, SQLite's unix VFS keeps its descriptor
#   for the next open instead of closing it (closing would drop the process's POSIX locks), so
#   the count follows the peak of simultaneous connections, at most pool + overflow.
# - Docker: the client keeps up to its pool size of connections to the engine, opened on demand.
DATABASE_FD_BOUND = 2 * (SQLITE_POOL_SIZE + SQLITE_POOL_OVERFLOW) + 1
BOUNDED_GROWTH = {"database": None, "socket": None}


def _no_fd_leak(report: dict[str, Any]) -> Target:
    """Database descriptors stay within the SQLite bound, sockets may grow only within the Docker
    client's pool, and every other kind may not exceed the warmed-up baseline."""
    before = report["leaks"].get("before", {})
    after = report["leaks"].get("after", {})
    if "fds" not in before or "fds" not in after:
        return Target("no file-descriptor leak", False, "counts missing")
    kinds_before = before.get("fds_by_kind", {})
    kinds_after = after.get("fds_by_kind", {})
    socket_bound = kinds_before.get("socket", 0) + client_pool_size(int(report["meta"]["pool_max"]))
    others = set(kinds_before) | set(kinds_after)
    grown = [
        kind
        for kind in sorted(others - set(BOUNDED_GROWTH))
        if kinds_after.get(kind, 0) > kinds_before.get(kind, 0)
    ]
    passed = (
        not grown
        and kinds_after.get("database", 0) <= DATABASE_FD_BOUND
        and kinds_after.get("socket", 0) <= socket_bound
    )
    measured = (
        f"before {before['fds']}, after {after['fds']}; database {kinds_before.get('database', 0)}"
        f" -> {kinds_after.get('database', 0)} (bound {DATABASE_FD_BOUND}), sockets "
        f"{kinds_before.get('socket', 0)} -> {kinds_after.get('socket', 0)} (bound "
        f"{socket_bound}), grown elsewhere: {', '.join(grown) or 'none'}"
    )
    return Target("no file-descriptor leak", passed, measured)


TARGETS: dict[str, list[Callable[[dict[str, Any]], Target]]] = {
    "normal": [
        _unexpected_failures,
        _hello_p95,
        _health_max,
        _no_container_leak,
        _no_process_leak("threads", "thread"),
        _no_fd_leak,
    ],
    "abuse": [_rate_limited, _no_server_errors, _unexpected_failures, _no_container_leak],
    "smoke": [_unexpected_failures, _no_container_leak],
    "burst": [_unexpected_failures, _burst_hello_p95, _no_container_leak],
}


# ---------------------------------------------------------------------------- report


def build_report(work_dir: Path) -> dict[str, Any]:
    meta = _load_json(work_dir / "meta.json")
    outcomes = _load_json(work_dir / "outcomes.json")
    durations = outcomes.get("durations_s", {})
    warmup_stats = work_dir / "warmup_stats.csv"
    report: dict[str, Any] = {
        "meta": {**meta, **outcomes.get("meta", {})},
        "endpoints": [
            row for row in read_stats(work_dir / "locust_stats.csv") if row["requests"] > 0
        ],
        "warmup_sign_in": [
            row
            for row in (read_stats(warmup_stats) if warmup_stats.exists() else [])
            if "/auth/login" in row["name"]
        ],
        "failures": read_failures(work_dir / "locust_failures.csv"),
        "exceptions": read_exceptions(work_dir / "locust_exceptions.csv"),
        "outcomes": outcomes.get("counts", {}),
        "flows": {
            name: {
                "count": len(values),
                "p50_ms": round((percentile(values, 50) or 0) * 1000, 1),
                "p95_ms": round((percentile(values, 95) or 0) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
            }
            for name, values in durations.items()
            if values
        },
        "health_windows": health_windows(outcomes.get("series", {}).get(HEALTH_PROBE, [])),
        "leaks": {
            moment: _load_json(work_dir / f"leaks_{moment}.json")
            for moment in ("before", "after", "stopped")
        },
    }
    targets = [check(report) for check in TARGETS.get(meta.get("profile", "normal"), [])]
    report["targets"] = [target.__dict__ for target in targets]
    report["passed"] = all(target.passed for target in targets)
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return lines


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    return [
        f"- date: {meta.get('date')}; machine: {meta.get('cores')} cores, "
        f"{meta.get('memory_gb')} GB RAM; git {meta.get('git_commit')}",
        f"- profile `{meta.get('profile')}`: {meta.get('users')} users (+1 health probe), "
        f"spawn rate {meta.get('spawn_rate')}/s, {meta.get('duration')} after a "
        f"{meta.get('warmup')} warm-up; pool max "
        f"{meta.get('pool_max')} (initial {meta.get('pool_initial')}, min {meta.get('pool_min')})",
        (
            f"- measured window: {meta['measured_s']:g} s, starting once all "
            f"{meta.get('users_ready_at_start')} users (probe included) had signed in, "
            f"{meta.get('ramp_up_s')} s after the start"
            if "measured_s" in meta
            else "- measured: the whole run, ramp-up and sign-ins included"
        ),
        f"- machine load (1/5/15 min) before: {meta.get('load_before')}; "
        f"after: {meta.get('load_after')} (other work on the machine counts in these)",
        f"- CPU cores used during the window: {json.dumps(meta.get('cpu_cores_used', '-'))} "
        "(machine = everything: server, Locust, Docker, sandboxes, other processes)",
        f"- command: `{meta.get('command')}`",
    ]


def _leak_lines(leaks: dict[str, Any]) -> list[str]:
    rows = []
    for moment in ("before", "after", "stopped"):
        snap = leaks.get(moment, {})
        rows.append(
            [
                moment,
                snap.get("containers"),
                snap.get("threads"),
                snap.get("fds"),
                snap.get("rss_mb"),
                json.dumps(snap.get("threads_by_name", {})),
                json.dumps(snap.get("fds_by_kind", {})),
            ]
        )
    headers = ["when", "containers", "threads", "fds", "RSS MB", "threads by name", "fds by kind"]
    return _table(headers, rows)


def render_markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [f"# Load test: {meta.get('profile')} profile, {meta.get('date')}", ""]
    lines += [*_meta_lines(meta), "", "## Targets", ""]
    lines += _table(
        ["target", "measured", "result"],
        [[t["name"], t["measured"], "PASS" if t["passed"] else "FAIL"] for t in report["targets"]],
    )
    lines += ["", "## Endpoints (ms; Locust rounds above 100 ms to 2 significant digits)", ""]
    lines += _table(
        ["endpoint", "requests", "failures", "req/s", "p50", "p95", "p99", "max"],
        [
            [
                row["name"] if row["type"] else f"**{row['name']}**",
                row["requests"],
                row["failures"],
                row["rps"],
                row["p50_ms"],
                row["p95_ms"],
                row["p99_ms"],
                row["max_ms"],
            ]
            for row in report["endpoints"]
        ],
    )
    if report["warmup_sign_in"]:
        lines += ["", "## Sign-in during the warm-up ramp-up (argon2; not in the window)", ""]
        lines += _table(
            ["endpoint", "requests", "failures", "p50", "p95", "max"],
            [
                [r["name"], r["requests"], r["failures"], r["p50_ms"], r["p95_ms"], r["max_ms"]]
                for r in report["warmup_sign_in"]
            ],
        )
    lines += ["", "## Failures by kind", ""]
    if report["failures"] or report["exceptions"]:
        lines += _table(
            ["endpoint", "kind", "count"],
            [[f["name"], f["kind"], f["count"]] for f in report["failures"]]
            + [["(locustfile error)", e["message"], e["count"]] for e in report["exceptions"]],
        )
    else:
        lines.append("None.")
    lines += ["", "## Outcomes (expected results, counted)", ""]
    lines += _table(
        ["request", "outcomes"],
        [[name, json.dumps(counts, sort_keys=True)] for name, counts in report["outcomes"].items()],
    )
    if report["flows"]:
        lines += ["", "## Job flows (client side, ms; first poll 0.3 s after submission)", ""]
        lines += _table(
            ["flow", "count", "p50", "p95", "max"],
            [
                [n, f["count"], f["p50_ms"], f["p95_ms"], f["max_ms"]]
                for n, f in report["flows"].items()
            ],
        )
    lines += ["", "## /health probe over time (10 s windows, ms)", ""]
    lines += _table(
        ["from s", "probes", "p50", "max"],
        [[w["from_s"], w["probes"], w["p50_ms"], w["max_ms"]] for w in report["health_windows"]],
    )
    lines += ["", "## Server process and containers", ""]
    lines += _leak_lines(report["leaks"])
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--results-dir", type=Path, required=True)
    args = parser.parse_args()
    report = build_report(args.work_dir)
    meta = report["meta"]
    stem = f"{meta['date']}-{meta['cores']}cores-{meta['profile']}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.results_dir / f"{stem}.md").write_text(render_markdown(report))
    for target in report["targets"]:
        verdict = "PASS" if target["passed"] else "FAIL"
        print(f"{verdict}  {target['name']}: {target['measured']}")
    print(f"summary: {args.results_dir / stem}.md ({'PASS' if report['passed'] else 'FAIL'})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
