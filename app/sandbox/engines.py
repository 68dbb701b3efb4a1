"""Several Docker engines behind one node (issue 14, `SANDBOX_ENGINES`).

Each engine is a docker-py client for a URL the SDK understands: the local socket
(`unix:///var/run/docker.sock`), TCP with TLS (`tcp://host:2376`, certificates from
DOCKER_CERT_PATH as for one engine) or SSH (`ssh://user@host`). A new container goes to the
healthy engine with the most free places: its capacity (this node's whole budget, so one engine
can always hold everything) minus the containers this node holds there and the sandboxes other
processes (other nodes sharing the engine) had there at the last check.

An engine that fails `ENGINE_DOWN_AFTER` checks in a row is drained: it gets no new containers,
the pools replace the ones they held there on the others (without waiting for the dead engine:
what could not be removed is remembered and removed when it answers again), and readiness says
so. It comes back after one good check that also finds the sandbox images again.

Every engine must hold every sandbox image with the same image id as the first engine that has
it (same hardening, same agent). An engine that lacks an image, or holds a different one, gets no
container of that language, and readiness names the command that builds or copies it; only when
no engine has the image does the language fail, with the build command, as on one engine.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import structlog
from docker.errors import ImageNotFound

from app.core.errors import SandboxError
from app.sandbox import engine as single
from app.sandbox.languages import IMAGE_BUILD_COMMAND

log = structlog.get_logger(__name__)

ENGINE_DOWN_AFTER = 2
# Other processes' sandboxes are counted at every this many checks (the first included): a ping
# is enough to know an engine is up, and the count needs no second-by-second freshness.
COUNT_OTHERS_EVERY = 5
# A check's ping gets this long: a wedged engine must not hold the watcher for the client's 30 s.
CHECK_TIMEOUT_S = 3


@dataclass
class Engine:
    """One Docker engine and what this node holds on it."""

    name: str
    url: str
    client: docker.DockerClient | None
    capacity: int
    # A second client with a short timeout for the checks: a wedged engine must not hold the
    # watcher for the pool client's 30 s, and the pool's own calls keep their long timeout.
    probe: docker.DockerClient | None = None
    held: int = 0
    others: int = 0
    checks: int = 0
    failures: int = 0
    healthy: bool = True
    last_error: str = ""
    latency_ms: float = 0.0
    image_ids: dict[str, str] = field(default_factory=dict)
    image_problems: dict[str, str] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return self.capacity - self.held - self.others


def connect_engine(
    url: str, *, pool_size: int, timeout_s: float = single.ENGINE_TIMEOUT_S
) -> docker.DockerClient:
    """A client for `url`, pinged once; TLS settings come from the environment as for one engine."""
    with single.engine_errors(f"connecting to the Docker engine {url}"):
        if url.startswith("tcp://"):
            environment = docker.utils.kwargs_from_env()
            client = docker.DockerClient(
                base_url=url,
                tls=environment.get("tls", False),
                timeout=timeout_s,
                max_pool_size=single.client_pool_size(pool_size),
            )
        else:
            client = docker.DockerClient(
                base_url=url,
                timeout=timeout_s,
                max_pool_size=single.client_pool_size(pool_size),
                use_ssh_client=url.startswith("ssh://"),
            )
        client.ping()
    return client


def _ours(labels: dict[str, str]) -> bool:
    return labels.get(single.LABEL_HOST) == socket.gethostname() and labels.get(
        single.LABEL_PID
    ) == str(os.getpid())


class EngineSet:
    """The engines of one node: where the next container goes, and which engines are down."""

    def __init__(self, engines: list[Engine]) -> None:
        if not engines:
            raise ValueError("at least one Docker engine is needed")
        self.engines = engines
        self._lock = threading.Lock()
        self._images: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @classmethod
    def connect(cls, urls: list[str], *, capacity_each: int) -> EngineSet:
        """Connect to every engine; one that does not answer yet starts drained.

        Raises:
            SandboxError: no engine answered.
        """
        engines = []
        for n, url in enumerate(urls, start=1):
            engine = Engine(f"engine{n}", url, None, capacity_each)
            try:
                _connect(engine)
            except SandboxError as exc:
                log.warning("engine_unreachable_at_start", engine=url, error=exc.message)
                engine.healthy, engine.failures, engine.last_error = False, 1, exc.message
            engines.append(engine)
        if not any(e.healthy for e in engines):
            raise SandboxError(engines[0].last_error)
        return cls(engines)

    @classmethod
    def single(cls, client: docker.DockerClient, *, capacity: int) -> EngineSet:
        """One engine already connected (DOCKER_HOST, or a client a test made)."""
        return cls([Engine("engine1", str(client.api.base_url), client, capacity)])

    @property
    def several(self) -> bool:
        return len(self.engines) > 1

    def primary(self) -> Engine:
        """The first healthy engine (pings, image ids); SandboxError when all are down."""
        with self._lock:
            for engine in self.engines:
                if engine.healthy and engine.client is not None:
                    return engine
        raise SandboxError(self._none_left_message())

    # ------------------------------------------------------------------ images

    def require_image(self, image: str) -> str:
        """Record which engines hold `image` (same id as the first that has it); its id.

        Raises:
            SandboxError: no healthy engine holds it (the message names the build command).
        """
        with self._lock:
            self._images.add(image)
            candidates = [e for e in self.engines if e.healthy and e.client is not None]
        reference = ""
        for engine in candidates:
            reference = self._verify_image(engine, image, reference) or reference
        if not reference:
            first = candidates[0].image_problems.get(image) if candidates else None
            raise SandboxError(first or self._none_left_message())
        return reference

    def _verify_image(self, engine: Engine, image: str, reference: str) -> str:
        """The image id on `engine` when it is usable there ('' when not; the problem kept)."""
        assert engine.client is not None
        try:
            with single.engine_errors(f"checking the image {image!r} on {engine.url}"):
                image_id = str(engine.client.images.get(image).id)
        except SandboxError as exc:
            problem = exc.message
            if isinstance(exc.__cause__, ImageNotFound):
                problem = _missing_image_message(engine, image, self.several)
            self._image_problem(engine, image, problem)
            return ""
        if reference and image_id != reference:
            self._image_problem(
                engine,
                image,
                f"the sandbox image {image!r} on {engine.url} ({image_id[:19]}) differs from the"
                f" other engines' ({reference[:19]}): every engine must run the same image;"
                f" copy it (docker save {image} | docker -H {engine.url} load) or rebuild all"
                f" with {IMAGE_BUILD_COMMAND}",
            )
            return ""
        with self._lock:
            engine.image_ids[image] = image_id
            engine.image_problems.pop(image, None)
        return image_id

    def _image_problem(self, engine: Engine, image: str, problem: str) -> None:
        with self._lock:
            engine.image_ids.pop(image, None)
            engine.image_problems[image] = problem
        log.warning("engine_image_unusable", engine=engine.url, image=image, problem=problem)

    # ------------------------------------------------------------------ placement

    def place(self, image: str) -> Engine:
        """Count one more container of `image` on the healthy engine with the most free places.

        Raises:
            SandboxError: no engine that holds the image is up and has room.
        """
        with self._lock:
            candidates = [
                e
                for e in self.engines
                if e.healthy and image in e.image_ids and e.held < e.capacity
            ]
            if not candidates:
                raise SandboxError(self._none_left_message(image))
            chosen = max(
                candidates, key=lambda e: (e.failures == 0, e.free, -self.engines.index(e))
            )
            chosen.held += 1
            return chosen

    def unplace(self, engine: Engine) -> None:
        """A container on `engine` is gone (removed, or never started)."""
        with self._lock:
            engine.held = max(0, engine.held - 1)

    def forget(self, engine: Engine, container_id: str) -> None:
        """A container on an engine that does not answer: counted as gone now, removed from the
        engine when it answers again (a drain never waits for a dead engine)."""
        with self._lock:
            engine.held = max(0, engine.held - 1)
            engine.forgotten.add(container_id)

    def is_healthy(self, engine: Engine) -> bool:
        with self._lock:
            return engine.healthy

    def _none_left_message(self, image: str | None = None) -> str:
        down = [f"{e.url}: {e.last_error or 'down'}" for e in self.engines if not e.healthy]
        missing = [e.image_problems[image] for e in self.engines if image in e.image_problems]
        reasons = "; ".join(missing + down) or "all full"
        return f"no Docker engine can take a sandbox ({reasons})"

    # ------------------------------------------------------------------ checks

    def check(self) -> list[Engine]:
        """Ping every engine; the engines that just went down (their containers must go)."""
        went_down = []
        for engine in self.engines:
            try:
                self._check_one(engine)
            except SandboxError as exc:
                if self._note_failure(engine, exc.message):
                    went_down.append(engine)
        return went_down

    def _check_one(self, engine: Engine) -> None:
        if engine.client is None:
            _connect(engine)
        probe = engine.probe or engine.client
        assert probe is not None
        latency = single.ping_ms(probe)
        others = None
        if engine.checks % COUNT_OTHERS_EVERY == 0:
            with single.engine_errors(f"listing sandboxes on {engine.url}"):
                rows = probe.api.containers(filters={"label": f"{single.LABEL_MANAGED}=true"})
            others = sum(1 for row in rows if not _ours(row.get("Labels") or {}))
        engine.checks += 1
        with self._lock:
            coming_back = not engine.healthy
            images = sorted(self._images)
        self._remove_forgotten(engine)
        if coming_back:
            self._welcome_back(engine, images)
        with self._lock:
            engine.others = engine.others if others is None else others
            engine.failures = 0
            engine.healthy = True
            engine.latency_ms = latency
            engine.last_error = ""

    def _remove_forgotten(self, engine: Engine) -> None:
        """Remove the containers that could not be removed when they went (the engine was down
        or failing); what still cannot be removed waits for the next good check."""
        assert engine.client is not None
        with self._lock:
            forgotten, engine.forgotten = engine.forgotten, set()
        left = set(forgotten)
        try:
            for container_id in forgotten:
                single.remove_container(engine.client, container_id)
                left.discard(container_id)
        finally:
            with self._lock:
                engine.forgotten |= left
        if forgotten:
            log.info("engine_forgotten_removed", engine=engine.url, count=len(forgotten))

    def _welcome_back(self, engine: Engine, images: list[str]) -> None:
        """An engine answers again: find the images again (they may have changed)."""
        for image in images:
            reference = next(
                (
                    e.image_ids[image]
                    for e in self.engines
                    if e is not engine and image in e.image_ids
                ),
                "",
            )
            self._verify_image(engine, image, reference)
        log.info("engine_back", engine=engine.url)

    def _note_failure(self, engine: Engine, message: str) -> bool:
        """Count a failed check; True when it makes the engine go down."""
        with self._lock:
            engine.failures += 1
            engine.last_error = message
            if engine.healthy and engine.failures >= ENGINE_DOWN_AFTER:
                engine.healthy = False
                log.warning("engine_down", engine=engine.url, error=message)
                return True
        return False

    def suspect(self, engine: Engine | None) -> None:
        """Something failed on `engine` (a start, a run, a removal): it counts as one failed
        check, so placement prefers the others, and it is checked now rather than at the next
        interval: a dead engine is drained within a second or two, a live one cleared."""
        if engine is None or not self.several:
            return
        with self._lock:
            engine.failures = max(engine.failures, 1)
        self._wake.set()

    def watch(self, interval_s: float, on_down: Callable[[Engine], None]) -> None:
        """Check every `interval_s` (or at once when suspected); `on_down` drains an engine."""

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(interval_s)
                self._wake.clear()
                if self._stop.is_set():
                    return
                try:
                    for engine in self.check():
                        on_down(engine)
                except Exception:  # the watcher must outlive one bad round
                    log.exception("engine_watch_error")

        self._watcher = threading.Thread(target=loop, name="engine-watch", daemon=True)
        self._watcher.start()

    # ------------------------------------------------------------------ observation

    def health(self) -> tuple[str, str]:
        """(status, detail): healthy when every engine is up and holds every image, degraded
        when some can serve, unhealthy when none can."""
        with self._lock:
            down = [e for e in self.engines if not e.healthy]
            problems = [p for e in self.engines if e.healthy for p in e.image_problems.values()]
            if len(down) == len(self.engines):
                return "unhealthy", self._none_left_message()
        if down or problems:
            notes = [f"{e.name} ({e.url}) down: {e.last_error}" for e in down] + problems
            return "degraded", "; ".join(notes)
        return "healthy", "ok"

    def stats(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": e.name,
                    "url": e.url,
                    "healthy": e.healthy,
                    "held": e.held,
                    "others": e.others,
                    "capacity": e.capacity,
                    "latency_ms": round(e.latency_ms, 2),
                    "images": sorted(e.image_ids),
                    "error": e.last_error or None,
                }
                for e in self.engines
            ]

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._watcher is not None:
            self._watcher.join(timeout=CHECK_TIMEOUT_S * 2)
        for engine in self.engines:
            for client in (engine.client, engine.probe):
                if client is not None:
                    client.close()


def _missing_image_message(engine: Engine, image: str, several: bool) -> str:
    if not several:  # one engine: exactly the message a single-engine node always gave
        return (
            f"checking the image {image!r}: sandbox image missing; build it with"
            f" {IMAGE_BUILD_COMMAND}"
        )
    return (
        f"the sandbox image {image!r} is missing on the engine {engine.url}: build it there with"
        f" DOCKER_HOST={engine.url} {IMAGE_BUILD_COMMAND}, or copy it: docker save {image} |"
        f" docker -H {engine.url} load"
    )


def _connect(engine: Engine) -> None:
    """Connect the pool's client and the checks' client of `engine` (SandboxError if down)."""
    engine.client = connect_engine(engine.url, pool_size=engine.capacity)
    engine.probe = connect_engine(engine.url, pool_size=1, timeout_s=CHECK_TIMEOUT_S)
