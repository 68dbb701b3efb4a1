"""Cluster benchmark: one node against three behind HAProxy, and the failover after a kill -9.

    uv run python -m load_tests.bench_cluster [--seconds 20] [--clients 6] [--containers 6]

Each configuration is a real cluster from `scripts/cluster.sh` (PostgreSQL, Redis, HAProxy on a
free loopback port, the nodes as `python -m app.serve`), in its own state directory, stopped
afterwards. The same number of sandboxes in all (`--containers`: one node holds them all, three
nodes a third each), the same machine: on this 2-core box the figure is the overhead of
clustering (HAProxy's hop, Redis for shares and limits, PostgreSQL for jobs), not a speed-up,
which only more machines give. `--engines N` adds extra Docker engines (default 0: the nodes
share the machine's engine, so an engine's own cost does not hide the nodes').

Measured:
- sync runs/s and e2e p50/p95 of `POST /api/v1/code/execute` (`print('hello')`) through
  HAProxy, `--clients` users sending back to back for `--seconds`;
- failover, with three nodes: jobs that sleep a few seconds are queued through HAProxy, a
  light sync load keeps running, and one node's process group is killed with SIGKILL. Reported:
  the time until HAProxy marks it DOWN (its health check is `/health/ready`, every second,
  two failures), the client errors meanwhile, and the time until every job the dead node held
  has ended (finished, or failed with a reason by the node that recovers its lease).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from app.core.config import REPO_ROOT
from load_tests.benchlib import HELLO, machine, summary_ms, write_result
from load_tests.provision import provision

ADMIN = "bench-admin"
JOB_SLEEP_S = 6
FAILOVER_WAIT_S = 150
SETTLE_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    """A cluster started by scripts/cluster.sh in its own state directory."""

    nodes: int
    engines: int
    containers: int
    password: str
    # short: engine socket paths under it have a length limit
    state: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="wbb-")))
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *args: str) -> str:
        per_node = str(self.per_node)
        env = {
            **os.environ,
            "WARMBOX_CLUSTER_DIR": str(self.state),
            "CLUSTER_PORT": str(self.port),
            "CLUSTER_NODES": str(self.nodes),
            "CLUSTER_ENGINES": str(self.engines),
            "CLUSTER_LANGUAGES": "python",
            "ADMIN_USERNAME": ADMIN,
            "ADMIN_PASSWORD": self.password,
            "RATE_LIMIT_ENABLED": "false",
            "LOG_LEVEL": "WARNING",
            "POOL_MAX_TOTAL": per_node,
            "POOL_MAX_SIZE": per_node,
            "POOL_INITIAL_SIZE": per_node,
            "POOL_MIN_SIZE": per_node,
            "POOL_MIN_WARM": f"python={per_node}",
            "POOL_MAX_RUNS_PER_CONTAINER": "100000",
        }
        done = subprocess.run(
            ["bash", "scripts/cluster.sh", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cluster.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    @property
    def per_node(self) -> int:
        return max(1, self.containers // self.nodes)

    def node_url(self, number: int) -> str:
        return f"http://127.0.0.1:{(self.state / f'node{number}' / 'port').read_text().strip()}"

    def database_url(self) -> str:
        for line in self.script("env").splitlines():
            if "CLUSTER_DATABASE_URL=" in line:
                url = line.split("=", 1)[1].strip().strip("'\"")
                return url.replace("postgresql+psycopg://", "postgresql://", 1)
        return ""

    def node_pid(self, number: int) -> int:
        return int((self.state / f"node{number}" / "pid").read_text())

    def haproxy_state(self, number: int) -> str:
        """HAProxy's view of node `number` (UP, DOWN, ...), from its stats socket."""
        with socket.socket(socket.AF_UNIX) as stats:
            stats.connect(str(self.state / "haproxy.sock"))
            stats.sendall(b"show stat\n")
            data = b"".join(iter(lambda: stats.recv(65536), b""))
        for line in data.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 17 and fields[0] == "nodes" and fields[1] == f"node{number}":
                return fields[17]
        return "?"


@contextmanager
def running(cluster: Cluster) -> Iterator[Cluster]:
    try:
        cluster.script("up")
        yield cluster
    finally:
        try:
            cluster.script("down")
        except RuntimeError as exc:
            print(f"  warning: {exc}")


def settle(cluster: Cluster) -> None:
    """Wait until every node's pool holds all its sandboxes warm: the start-up (each Python
    sandbox's fork server imports numpy, pandas and matplotlib) must not be in the figures."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        settled = 0
        for number in range(1, cluster.nodes + 1):
            try:
                ready = httpx.get(f"{cluster.node_url(number)}/health/ready", timeout=5).json()
                python = ready["checks"]["pool"]["data"]["python"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            settled += python["available"] >= cluster.per_node and python["starting"] == 0
        if settled == cluster.nodes:
            return
        time.sleep(1)
    print(f"  warning: the pools did not settle within {SETTLE_S} s")


def sign_in(base: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    answer = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    answer.raise_for_status()
    client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
    return client


def users(cluster: Cluster, count: int) -> list[httpx.Client]:
    password = secrets.token_urlsafe(12)
    provision(
        host=cluster.url,
        admin_username=ADMIN,
        admin_password=cluster.password,
        prefix="bench-",
        password=password,
        count=count,
    )
    return [sign_in(cluster.url, f"bench-{n:04d}", password) for n in range(count)]


@dataclass
class Load:
    """Sync runs from several users until stopped: latencies of the good ones, the bad ones."""

    clients: list[httpx.Client]
    latencies: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for client in self.clients:
            thread = threading.Thread(target=self._loop, args=(client,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)

    def _loop(self, client: httpx.Client) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                answer = client.post("/api/v1/code/execute", json={"code": HELLO})
                ok = answer.status_code == 200 and answer.json().get("output") == "hello\n"
                reason = f"{answer.status_code} {answer.text[:120]}"
            except httpx.HTTPError as exc:
                ok, reason = False, type(exc).__name__
            if ok:
                self.latencies.append(time.perf_counter() - started)
            else:
                self.errors.append((time.monotonic(), reason))


def throughput(cluster: Cluster, clients: list[httpx.Client], seconds: float) -> dict[str, Any]:
    settle(cluster)
    for _ in range(3):  # every user's path through every node once
        for client in clients:
            client.post("/api/v1/code/execute", json={"code": HELLO}).raise_for_status()
    settle(cluster)
    load = Load(clients)
    started = time.perf_counter()
    load.start()
    time.sleep(seconds)
    load.finish()
    elapsed = time.perf_counter() - started
    return {
        "nodes": cluster.nodes,
        "runs_per_s": round(len(load.latencies) / elapsed, 1),
        "errors": len(load.errors),
        "error_samples": sorted({why for _, why in load.errors})[:5],
        "e2e": summary_ms(load.latencies),
    }


def failover(cluster: Cluster, clients: list[httpx.Client], victim: int = 2) -> dict[str, Any]:
    """Queue sleeping jobs, kill -9 node `victim`, time HAProxy and the jobs' ends."""
    code = f"import time\ntime.sleep({JOB_SLEEP_S})\nprint('done')"
    jobs = []
    for n in range(cluster.nodes):  # about one per node (leastconn), leaving room for sync runs
        client = clients[n % len(clients)]
        answer = client.post("/api/v1/jobs", json={"code": code, "timeout": JOB_SLEEP_S + 10})
        answer.raise_for_status()
        jobs.append((client, answer.json()["job_id"]))
    time.sleep(1.5)  # the jobs are claimed and running on every node
    held = _jobs_held_by(cluster, f"node{victim}")
    load = Load(clients[:2])
    load.start()
    time.sleep(1)
    killed_at = time.monotonic()
    os.killpg(cluster.node_pid(victim), signal.SIGKILL)
    marked_down_s = None
    while time.monotonic() - killed_at < 30:
        if cluster.haproxy_state(victim).startswith("DOWN"):
            marked_down_s = time.monotonic() - killed_at
            break
        time.sleep(0.05)
    time.sleep(3)
    load.finish()
    ended_s, states = _wait_for_jobs(jobs, killed_at)
    late = [why for at, why in load.errors if at > killed_at + (marked_down_s or 30)]
    return {
        "killed": f"node{victim}",
        "haproxy_marked_down_s": round(marked_down_s, 2) if marked_down_s else None,
        "client_errors_until_down": len(load.errors) - len(late),
        "client_errors_after_down": len(late),
        "sync_runs_during": len(load.latencies),
        "error_samples": sorted({why for _, why in load.errors})[:5],
        "jobs": len(jobs),
        "jobs_held_by_killed_node": held,
        "jobs_all_ended_s": round(ended_s, 2) if ended_s is not None else None,
        "job_states": states,
    }


def _jobs_held_by(cluster: Cluster, node: str) -> int | None:
    """How many jobs `node` holds a lease on (None where jobs carry no lease columns)."""
    import psycopg  # the nodes' own driver

    try:
        with psycopg.connect(cluster.database_url(), connect_timeout=5) as connection:
            row = connection.execute(
                "SELECT count(*) FROM jobs WHERE lease_owner = %s AND status IN"
                " ('queued', 'running')",
                (node,),
            ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else 0


def _wait_for_jobs(
    jobs: list[tuple[httpx.Client, str]], since: float
) -> tuple[float | None, dict[str, int]]:
    """Seconds from `since` until every job is final (None: not within FAILOVER_WAIT_S)."""
    states: dict[str, int] = {}
    while time.monotonic() - since < FAILOVER_WAIT_S:
        states = {}
        for client, job_id in jobs:
            try:
                status = client.get(f"/api/v1/jobs/{job_id}").json().get("status", "?")
            except httpx.HTTPError:
                status = "unreachable"
            states[status] = states.get(status, 0) + 1
        if set(states) <= {"succeeded", "failed", "timed_out", "cancelled"}:
            return time.monotonic() - since, states
        time.sleep(0.5)
    return None, states


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--containers", type=int, default=6)
    parser.add_argument("--engines", type=int, default=0)
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "containers": args.containers}
    for nodes in (1, 3):
        cluster = Cluster(nodes, args.engines, args.containers, secrets.token_urlsafe(16))
        with running(cluster):
            clients = users(cluster, args.clients)
            report[f"nodes_{nodes}"] = throughput(cluster, clients, args.seconds)
            if nodes == 3:
                report["failover"] = failover(cluster, clients)
            for client in clients:
                client.close()
    report["machine_after"] = machine()
    report["extra_engines"] = args.engines
    path = write_result(f"bench_cluster-{args.engines}extra-engines", report)
    print_report(report, args)
    print(f"  written to {path}")
    return 0


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    m = report["machine"]
    print(
        f"bench_cluster on {m['cores']} cores, load {m['load_average_1m']} (after:"
        f" {report['machine_after']['load_average_1m']}), {m['date']}; {args.clients} users"
        f" sending print('hello') back to back through HAProxy for {args.seconds:.0f} s,"
        f" {args.containers} sandboxes in all"
    )
    for nodes in (1, 3):
        row = report[f"nodes_{nodes}"]
        e2e = row["e2e"]
        print(
            f"  {nodes} node(s): {row['runs_per_s']:6.1f} runs/s  p50 {e2e['p50_ms']:7.2f} ms"
            f"  p95 {e2e['p95_ms']:7.2f} ms  errors {row['errors']}"
        )
    f = report["failover"]
    print(
        f"  kill -9 {f['killed']}: HAProxy marked it DOWN after {f['haproxy_marked_down_s']} s;"
        f" client errors {f['client_errors_until_down']} before, {f['client_errors_after_down']}"
        f" after; {f['jobs']} jobs ({f['jobs_held_by_killed_node']} held by it) all ended"
        f" after {f['jobs_all_ended_s']} s {f['job_states']}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
