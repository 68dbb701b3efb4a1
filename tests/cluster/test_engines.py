"""Several Docker engines behind one node (app/sandbox/engines.py and the pools on it), against
the machine's engine and a second real dockerd that `scripts/cluster.sh engines up` starts with
its own data root, exec root, pid file and socket (the bash image copied into it). The last test
kills that dockerd with SIGKILL in the middle of a load and starts it again."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.errors import SandboxError
from app.observability.health import _docker_check as docker_readiness
from app.sandbox import engine as single
from app.sandbox.container import SandboxContainer
from app.sandbox.engines import ENGINE_DOWN_AFTER, EngineSet
from app.sandbox.languages import get_language
from app.sandbox.limits import SandboxLimits
from app.sandbox.manager import SandboxManager
from app.sandbox.types import RunRequest
from tests.sandbox.conftest import sandbox_settings

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
LOCAL = "unix:///var/run/docker.sock"
BASH = get_language("bash")
PYTHON = get_language("python")


def cluster(state: Path, *args: str) -> str:
    environment = {
        **os.environ,
        "WARMBOX_CLUSTER_DIR": str(state),
        "CLUSTER_ENGINES": "1",
        "CLUSTER_LANGUAGES": "bash",
    }
    done = subprocess.run(
        ["bash", "scripts/cluster.sh", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def second_engine() -> Iterator[tuple[str, Path]]:
    state = Path("/tmp") / f"wbc-{os.getpid()}"  # short: engine socket paths have a length limit
    cluster(state, "engines", "up")
    url = cluster(state, "engines", "env").strip().split("=", 1)[1]
    yield url, state
    cluster(state, "engines", "down")
    state.rmdir()


@pytest.fixture
def engines(second_engine: tuple[str, Path]) -> Iterator[EngineSet]:
    url, _ = second_engine
    engine_set = EngineSet.connect([LOCAL, url], capacity_each=2)
    yield engine_set
    engine_set.close()


def dockerd_pid(url: str) -> int:
    return int(Path(url.removeprefix("unix://")).with_name("docker.pid").read_text())


def wait_until(condition, timeout_s: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return bool(condition())


def test_containers_go_to_the_engine_with_the_most_free_places(engines: EngineSet) -> None:
    image = BASH.image(sandbox_settings())
    engines.require_image(image)
    placed = [engines.place(image).name for _ in range(4)]
    assert Counter(placed) == {"engine1": 2, "engine2": 2}
    with pytest.raises(SandboxError, match="all full"):
        engines.place(image)
    engines.unplace(engines.engines[1])
    assert engines.place(image).name == "engine2"


def test_sandboxes_of_other_nodes_count_against_an_engines_free_places(
    engines: EngineSet,
) -> None:
    image = BASH.image(sandbox_settings())
    engines.require_image(image)
    second = engines.engines[1]
    assert second.client is not None
    labels = {**single.owner_labels("other-node", "bash"), single.LABEL_PID: "1"}
    foreign = single.create_hardened_container(
        second.client, image, SandboxLimits.from_settings(sandbox_settings(), BASH), labels=labels
    )
    try:
        second.client.api.start(foreign)
        assert engines.check() == []
        assert second.others == 1  # the machine's engine holds whatever other processes run
        by_name = {s["name"]: s["capacity"] - s["held"] - s["others"] for s in engines.stats()}
        best = max(by_name.values())
        assert by_name[engines.place(image).name] == best
    finally:
        single.remove_container(second.client, foreign)


def test_an_engine_without_an_image_gets_none_of_its_sandboxes_and_readiness_names_the_build(
    engines: EngineSet,
) -> None:
    bash = BASH.image(sandbox_settings())
    python = PYTHON.image(sandbox_settings())  # never copied into the second engine
    assert engines.require_image(bash) == engines.engines[1].image_ids[bash]
    engines.require_image(python)
    assert python not in engines.engines[1].image_ids
    problem = engines.engines[1].image_problems[python]
    assert f"DOCKER_HOST={engines.engines[1].url} scripts/build-images.sh" in problem
    assert {engines.place(python).name for _ in range(2)} == {"engine1"}
    status, detail = engines.health()
    assert status == "degraded"
    assert problem in detail


def test_an_engine_with_a_different_image_under_the_same_name_is_refused(
    engines: EngineSet,
) -> None:
    clash = "warmbox-engines-clash:test"
    first, second = (e.client for e in engines.engines)
    assert first is not None
    assert second is not None
    first.images.get(PYTHON.image(sandbox_settings())).tag(clash)
    second.images.get(BASH.image(sandbox_settings())).tag(clash)
    try:
        engines.require_image(clash)
        assert "differs from the other engines'" in engines.engines[1].image_problems[clash]
        assert clash in engines.engines[0].image_ids
    finally:
        first.images.remove(clash)
        second.images.remove(clash)


def test_a_sandbox_on_the_second_engine_is_as_hardened_and_runs(engines: EngineSet) -> None:
    settings = sandbox_settings()
    placed = engines.engines[1]
    assert placed.client is not None
    container = SandboxContainer.start(
        placed.client,
        image=BASH.image(settings),
        limits=SandboxLimits.from_settings(settings, BASH),
        labels=single.owner_labels("engines-test", "bash"),
        name_prefix="warmbox-engines-test",
        timeout_s=30,
    )
    try:
        host = placed.client.api.inspect_container(container.container_id)["HostConfig"]
        assert host["NetworkMode"] == "none"
        assert host["ReadonlyRootfs"] is True
        assert host["CapDrop"] == ["ALL"]
        assert host["SecurityOpt"] == ["no-new-privileges"]
        result = container.run(RunRequest(code="echo from the second engine; id -u", timeout_s=5))
        assert result.stdout.splitlines() == ["from the second engine", "10001"]
    finally:
        single.remove_container(placed.client, container.container_id)


def test_an_engine_that_does_not_answer_at_start_starts_drained(tmp_path: Path) -> None:
    missing = f"unix://{tmp_path}/no-engine.sock"
    engines = EngineSet.connect([LOCAL, missing], capacity_each=2)
    try:
        image = BASH.image(sandbox_settings())
        engines.require_image(image)
        assert [s["healthy"] for s in engines.stats()] == [True, False]
        assert {engines.place(image).name for _ in range(2)} == {"engine1"}
        status, detail = engines.health()
        assert status == "degraded"
        assert missing in detail
    finally:
        engines.close()
    with pytest.raises(SandboxError, match="did not answer"):
        EngineSet.connect([missing], capacity_each=1)


def test_an_engine_that_hangs_is_drained_and_comes_back(engines: EngineSet) -> None:
    image = BASH.image(sandbox_settings())
    engines.require_image(image)
    assert engines.check() == []
    pid = dockerd_pid(engines.engines[1].url)
    os.kill(pid, signal.SIGSTOP)  # the engine hangs, as a wedged or unreachable one does
    try:
        went_down = []
        for _ in range(ENGINE_DOWN_AFTER):
            went_down += engines.check()  # each ping gives up after the checks' short timeout
        assert [e.name for e in went_down] == ["engine2"]
        assert {engines.place(image).name for _ in range(2)} == {"engine1"}
        assert [s["healthy"] for s in engines.stats()] == [True, False]
        assert engines.health()[0] == "degraded"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert engines.check() == []
    assert engines.stats()[1]["healthy"] is True


def test_an_engine_killed_mid_load_runs_continue_on_the_other(
    second_engine: tuple[str, Path],
) -> None:
    url, state = second_engine
    settings = sandbox_settings(
        sandbox_engines=[LOCAL, url],
        sandbox_engine_check_interval_s=0.5,
        pool_min_size=0,
        pool_initial_size=0,
        pool_min_warm={"bash": 4},
        pool_max_size=4,
        pool_max_total=4,
        pool_acquire_timeout_s=20.0,
    )
    manager = SandboxManager(settings, languages={"bash": BASH})
    manager.start()
    outcomes: list[tuple[float, bool, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                result = manager.run(RunRequest(language="bash", code="echo $((6 * 7))"))
                outcomes.append((started, result.stdout == "42\n", result.stdout))
            except SandboxError as exc:
                outcomes.append((started, False, exc.message))

    try:
        pool = manager.pools["bash"]
        assert wait_until(lambda: pool.stats()["available"] == 4)
        assert pool.placement()["engine2"] >= 1  # the extra engine holds some of the sandboxes
        threads = [threading.Thread(target=load) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(2)
        killed_at = time.monotonic()
        os.kill(dockerd_pid(url), signal.SIGKILL)
        assert manager.engines is not None
        assert wait_until(lambda: not manager.engines.stats()[1]["healthy"], 10)
        drained_after_s = time.monotonic() - killed_at
        time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        after = [ok for started, ok, _ in outcomes if started > killed_at + drained_after_s + 1]
        failed = [(round(t - killed_at, 2), why) for t, ok, why in outcomes if not ok]
        assert len(after) >= 10, failed
        assert all(after), failed
        assert len(failed) <= 3 + 4, failed  # the runs in flight, and at most the idle ones
        assert pool.placement() == {"engine1": pool.stats()["total"], "engine2": 0}
        readiness = docker_readiness(manager)()  # what /health/ready shows as its docker check
        assert readiness.status == "degraded"
        assert readiness.detail is not None
        assert url in readiness.detail
        assert readiness.data is not None
        assert [e["healthy"] for e in readiness.data["engines"]] == [True, False]
        assert manager.engines is not None
        forgotten = set(manager.engines.engines[1].forgotten)
        assert forgotten  # the containers it held, removed from the count, not from the engine

        cluster(state, "engines", "up")  # the same engine again, its containers stopped
        assert wait_until(lambda: manager.engines_health().status == "healthy", 20)
        assert manager.engines.engines[1].forgotten == set()
        probe = EngineSet.connect([url], capacity_each=1)
        client = probe.engines[0].client
        assert client is not None
        remaining = {row["Id"] for row in client.api.containers(all=True)}
        probe.close()
        assert not forgotten & remaining  # removed when the engine answered again
    finally:
        stop.set()
        manager.shutdown()
