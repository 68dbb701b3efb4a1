"""What the languages and pool-stats endpoints answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class LanguageInfo(BaseModel):
    name: str
    display_name: str
    version: str | None = Field(description="reported by the runtime once a container started")
    compiled: bool = Field(description="runs compile first; the result has a `compile` part")
    file_name: str = Field(description="the name the code is saved under in the sandbox")
    available: bool
    warm: bool = Field(description="a container is ready now; otherwise the first run starts one")


class LanguageList(BaseModel):
    languages: list[LanguageInfo]


class QueueStats(BaseModel):
    depth: int
    capacity: int
    workers: int
    running: int
    users_waiting: int = Field(description="users with queued jobs, served in turn")
    accepting: bool
    expected_wait: float = Field(description="seconds a job submitted now would wait")


class PoolStatsReport(BaseModel):
    sandbox_enabled: bool
    pools: dict[str, dict[str, Any]]
    budget: dict[str, Any] = Field(
        description="the container budget all languages share (POOL_MAX_TOTAL), cold starts, "
        "evictions and the build cache"
    )
    queue: QueueStats
    jobs_by_language: dict[str, dict[str, int]] = Field(
        description="queued and running jobs per language, from the database"
    )
