"""What a run asks for and what it gives back; plain data shared by the pool and its callers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunRequest:
    code: str
    language: str = "python"
    stdin: str = ""
    timeout_s: float = 10.0
    output_limit_bytes: int = 64 * 1024
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    duration_s: float
    timed_out: bool = False
    memory_exceeded: bool = False
    output_truncated: bool = False
    cancelled: bool = False

    @property
    def success(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled)
