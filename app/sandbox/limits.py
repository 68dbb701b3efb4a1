"""The hardened container configuration: every pooled container is created from this, and only this.

Nothing here is built from user input; a run's code and stdin travel over the agent channel, never
into the container's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from docker.types import LogConfig, Ulimit

from app.core.config import Settings
from sandbox_images.agent.protocol import EXEC_SCRATCH

if TYPE_CHECKING:
    from app.sandbox.languages import Language

SANDBOX_USER = "10001:10001"
SCRATCH_PATH = "/tmp"  # noqa: S108  (the container's own private tmpfs)
# Compiled programs are built and run here: a second tmpfs that allows exec (never setuid/devices).
EXEC_SCRATCH_PATH = EXEC_SCRATCH
# The only environment a sandbox gets: nothing from the service's own environment leaks in.
SANDBOX_ENVIRONMENT = {
    "HOME": SCRATCH_PATH,
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


# Under gVisor the container's pids cgroup holds the sandbox kernel's own host threads too: the
# Sentry's and the gofer's (about 33 when idle, more as the Go runtime starts threads under host
# load) and a stub process of 3-4 threads per guest process. With SANDBOX_PIDS_LIMIT alone a run
# with three processes used about 50 of 64, and under load the Sentry could not start a thread and
# the whole sandbox died (test_runsc's kill(-1) test failed now and then). The run still cannot
# start more than a few dozen processes: each one costs the cgroup a stub process.
RUNSC_HOST_THREADS = 64


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    nofile: int
    fsize_bytes: int
    runtime: str = ""
    exec_tmpfs_mb: int = 128
    # Extra variables for the agent (never for the run: the agent gives runs its own allowlist).
    agent_environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, language: Language | None = None) -> SandboxLimits:
        """The limits of one language's containers: its own memory (the JVM and the Go toolchain
        need more than an interpreter) unless SANDBOX_MEMORY_MB sets one for all."""
        memory_mb = settings.sandbox_memory_mb or (language.memory_mb if language else 256)
        agent_environment = {}
        preload = settings.sandbox_python_preload
        if language is not None and language.name == "python":
            agent_environment["WARMBOX_PRELOAD"] = preload
            if not settings.sandbox_python_fork_server:
                agent_environment["WARMBOX_FORK_SERVER"] = "0"
            if not settings.sandbox_python_bare_runner:
                agent_environment["WARMBOX_BARE_RUNNER"] = "0"
        if not settings.sandbox_exit_notices:
            agent_environment["WARMBOX_EXIT_NOTICES"] = "0"
        return cls(
            memory_mb=memory_mb,
            cpus=settings.sandbox_cpus,
            pids=settings.sandbox_pids_limit,
            tmpfs_mb=settings.sandbox_tmpfs_mb,
            nofile=settings.sandbox_nofile,
            fsize_bytes=settings.sandbox_fsize_mb * 1024 * 1024,
            runtime=settings.sandbox_runtime,
            exec_tmpfs_mb=settings.sandbox_exec_tmpfs_mb,
            agent_environment=agent_environment,
        )

    def environment(self) -> dict[str, str]:
        return {**SANDBOX_ENVIRONMENT, **self.agent_environment}

    def host_config(self) -> dict[str, Any]:
        """Keyword arguments for docker's create_host_config."""
        config: dict[str, Any] = {
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "tmpfs": {
                SCRATCH_PATH: f"rw,nosuid,nodev,noexec,size={self.tmpfs_mb}m,mode=1777",
                EXEC_SCRATCH_PATH: f"rw,nosuid,nodev,exec,size={self.exec_tmpfs_mb}m,mode=1777",
            },
            # No /dev/shm at all, and a private IPC namespace the agent cleans between runs.
            "ipc_mode": "none",
            "mem_limit": f"{self.memory_mb}m",
            "memswap_limit": f"{self.memory_mb}m",
            "nano_cpus": int(self.cpus * 1e9),
            "pids_limit": self.pids + (RUNSC_HOST_THREADS if self.runtime == "runsc" else 0),
            "ulimits": [
                Ulimit(name="nofile", soft=self.nofile, hard=self.nofile),
                Ulimit(name="fsize", soft=self.fsize_bytes, hard=self.fsize_bytes),
                Ulimit(name="core", soft=0, hard=0),
                # POSIX message queues would outlive a run; none may be created at all.
                Ulimit(name="msgqueue", soft=0, hard=0),
            ],
            # Run output must not be copied into the engine's log files on the host.
            "log_config": LogConfig(type=LogConfig.types.NONE),
            "init": False,  # the agent must be PID 1: the kernel then shields it from the run
            "privileged": False,
        }
        if self.runtime:
            config["runtime"] = self.runtime
        return config
