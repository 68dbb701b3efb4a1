"""A real HAProxy (the Debian package `scripts/setup.sh` installs) in front of test nodes, with
the health check `scripts/cluster.sh` configures: GET /health/ready every second, a node that
fails two checks gets no more requests, a refused connection is sent to another node."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cluster.nodes import Node, free_port

CONFIG = """global
    maxconn 1024

defaults
    mode http
    option forwardfor
    timeout connect 2s
    retries 2
    option redispatch 1
    timeout client 75s
    timeout server 75s

frontend warmbox
    bind 127.0.0.1:{port}
    default_backend nodes

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /stats

backend nodes
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 1s fall 2 rise 2
{servers}
"""


@dataclass
class Balancer:
    url: str
    stats_url: str
    process: subprocess.Popen[bytes]

    def states(self) -> dict[str, str]:
        """{server name: UP, DOWN, ...} of the nodes backend, from HAProxy's own CSV stats."""
        text = httpx.get(f"{self.stats_url};csv", timeout=5).text.lstrip("# ")
        return {
            row["svname"]: row["status"].split()[0]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "nodes" and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def wait_for(self, name: str, state: str, timeout_s: float) -> float:
        """Seconds until HAProxy reports `name` in `state` (fails the test at the timeout)."""
        started = time.monotonic()
        while (seen := self.states().get(name)) != state:
            assert time.monotonic() - started < timeout_s, f"{name} is {seen}, not {state}"
            time.sleep(0.05)
        return time.monotonic() - started


@contextmanager
def haproxy(nodes: list[Node], directory: Path) -> Iterator[Balancer]:
    """HAProxy in the foreground before `nodes`, every node UP before it is handed out."""
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.fail("haproxy is not installed (bash scripts/setup.sh installs it)")
    port, stats_port = free_port(), free_port()
    servers = "\n".join(
        f"    server {node.name} {node.url.removeprefix('http://')} check" for node in nodes
    )
    config = directory / "haproxy.cfg"
    config.write_text(CONFIG.format(port=port, stats_port=stats_port, servers=servers))
    subprocess.run([binary, "-c", "-q", "-f", str(config)], check=True)
    process = subprocess.Popen([binary, "-db", "-f", str(config)])
    balancer = Balancer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stats_port}/stats", process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if set(balancer.states().values()) == {"UP"}:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, "haproxy exited at start-up"
            assert time.monotonic() < deadline, "HAProxy never saw every node UP"
            time.sleep(0.1)
        yield balancer
    finally:
        process.terminate()
        process.wait(timeout=10)
