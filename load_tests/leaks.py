"""Count what a server process holds, to compare before and after a load run.

Threads and open file descriptors come from /proc/<pid>/task and /proc/<pid>/fd of the server
process (found below the given pid, since `uv run` starts it as a child); containers are those
labelled warmbox.managed=true, both the server's own (warmbox.pid=<pid>) and all on the engine
(other engineers' tests share it, so only the server's own count is compared).

    uv run python -m load_tests.leaks --pid 1234 --out before.json
    uv run python -m load_tests.leaks --server-pid 1240 --out stopped.json  # after it exits
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def server_pid(root: int) -> int:
    """The deepest process at or below `root` serving the API (`python -m app.serve`, or uvicorn)
    that is Python, not `uv` itself."""
    best, queue = root, [root]
    while queue:
        pid = queue.pop(0)
        line = _cmdline(pid)
        serves = "app.serve" in line or "uvicorn" in line
        if serves and "python" in line.split(" ")[0]:
            best = pid
        queue += _children(pid)
    return best


def _fd_kind(target: str) -> str:
    data_dir = os.environ.get("DATA_DIR")
    if data_dir and target.startswith(os.path.join(os.path.realpath(data_dir), "")):
        return "database"  # the SQLite connection pool's files: bounded by its size
    for kind in ("socket", "pipe", "anon_inode"):
        if target.startswith(f"{kind}:"):
            return kind
    return "file" if target.startswith("/") else "other"


def process_counts(pid: int) -> dict[str, Any]:
    """Threads (by name), open fds (by kind) and resident memory; empty when the process is gone."""
    base = PROC / str(pid)
    try:
        tasks = list((base / "task").iterdir())
        fds = list((base / "fd").iterdir())
        status = (base / "status").read_text()
    except OSError:
        return {}
    names: Counter[str] = Counter()
    for task in tasks:
        try:
            names[(task / "comm").read_text().strip().rstrip("0123456789_-")] += 1
        except OSError:
            continue
    kinds: Counter[str] = Counter()
    for fd in fds:
        try:
            kinds[_fd_kind(os.readlink(fd))] += 1
        except OSError:
            continue
    rss_kb = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0
    )
    return {
        "threads": len(tasks),
        "threads_by_name": dict(sorted(names.items())),
        "fds": len(fds),
        "fds_by_kind": dict(sorted(kinds.items())),
        "rss_mb": round(rss_kb / 1024, 1),
    }


def count_containers(*labels: str) -> int:
    argv = ["docker", "ps", "--all", "--quiet"]
    for label in labels:
        argv += ["--filter", f"label={label}"]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30)
    return len(result.stdout.split())


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pids_named(name: str) -> list[int]:
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def cpu_snapshot(pid: int) -> dict[str, Any]:
    """Cumulative CPU seconds of the server, the Docker daemons and the whole machine."""
    line = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    jiffies = [int(value) for value in line]
    idle = jiffies[3] + jiffies[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    daemons = [p for name in ("dockerd", "containerd") for p in _pids_named(name)]
    return {
        "wall_s": time.time(),
        "server_cpu_s": _cpu_seconds(pid),
        "docker_daemons_cpu_s": sum(_cpu_seconds(p) or 0.0 for p in daemons),
        "machine_busy_cpu_s": (sum(jiffies[:8]) - idle) / tick,
    }


def snapshot(pid: int) -> dict[str, Any]:
    return {
        "pid": pid,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **process_counts(pid),
        "containers": count_containers("warmbox.managed=true", f"warmbox.pid={pid}"),
        "containers_on_engine": count_containers("warmbox.managed=true"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pid", type=int, help="the server, or the `uv run` above it")
    which.add_argument("--server-pid", type=int, help="exactly this pid (it may be gone)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pid = args.server_pid or server_pid(args.pid)
    counts = snapshot(pid)
    args.out.write_text(json.dumps(counts, indent=2))
    print(
        f"leaks: pid {counts['pid']} threads={counts.get('threads', '-')} "
        f"fds={counts.get('fds', '-')} containers={counts['containers']} "
        f"(all warmbox containers on the engine: {counts['containers_on_engine']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
