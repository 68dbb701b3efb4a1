"""The hardened container configuration: every pooled container is created from this, and only this.

Nothing here is built from user input; a run's code and stdin travel over the agent channel, never
into the container's parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docker.types import LogConfig, Ulimit

from app.core.config import Settings

SANDBOX_USER = "10001:10001"
SCRATCH_PATH = "/tmp"  # noqa: S108  (the container's own private tmpfs)
# The only environment a sandbox gets: nothing from the service's own environment leaks in.
SANDBOX_ENVIRONMENT = {
    "HOME": SCRATCH_PATH,
    "LANG": "C.UTF-8",
    "PATH": "/usr/local/bin:/usr/bin:/bin",
}


@dataclass(frozen=True)
class SandboxLimits:
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    nofile: int
    fsize_bytes: int
    runtime: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            memory_mb=settings.sandbox_memory_mb,
            cpus=settings.sandbox_cpus,
            pids=settings.sandbox_pids_limit,
            tmpfs_mb=settings.sandbox_tmpfs_mb,
            nofile=settings.sandbox_nofile,
            fsize_bytes=settings.sandbox_fsize_mb * 1024 * 1024,
            runtime=settings.sandbox_runtime,
        )

    def host_config(self) -> dict[str, Any]:
        """Keyword arguments for docker's create_host_config."""
        config: dict[str, Any] = {
            "network_mode": "none",
            "read_only": True,
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "tmpfs": {
                SCRATCH_PATH: f"rw,nosuid,nodev,noexec,size={self.tmpfs_mb}m,mode=1777",
            },
            # No /dev/shm at all, and a private IPC namespace the agent cleans between runs.
            "ipc_mode": "none",
            "mem_limit": f"{self.memory_mb}m",
            "memswap_limit": f"{self.memory_mb}m",
            "nano_cpus": int(self.cpus * 1e9),
            "pids_limit": self.pids,
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
