"""The sessions this process holds: their lent sandbox, share ticket, deadlines and busy flag.

Only this node can reach a session's container, so the live half of a session stays here; the
row in the database is what every node can read (issue 14 routes a request to the owner, or
answers 410 when it died). All mutation happens on the event loop: checking `busy` and setting
it has no await in between, so two cells can never both pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.jobs.shares import ShareTicket
from app.sandbox.session import SandboxSession


@dataclass
class LiveSession:
    session_id: str
    user_id: str
    language: str
    sandbox: SandboxSession
    ticket: ShareTicket
    idle_timeout_s: float
    max_lifetime_s: float
    created_at: datetime
    started: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    last_used_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    cells: int = 0
    busy: bool = False

    def touch(self) -> None:
        self.last_used = time.monotonic()
        self.last_used_at = datetime.now(UTC)

    @property
    def expires_at(self) -> datetime:
        return self.created_at + timedelta(seconds=self.max_lifetime_s)

    @property
    def idle_expires_at(self) -> datetime:
        return min(self.last_used_at + timedelta(seconds=self.idle_timeout_s), self.expires_at)

    def due(self, now: float) -> str | None:
        """Why the reaper should end it now (idle or expired), or None."""
        if now - self.started >= self.max_lifetime_s:
            return "max_lifetime"
        if now - self.last_used >= self.idle_timeout_s:
            return "idle_timeout"
        return None


class LiveSessions:
    """The sessions this process holds, by id (the per-user count is the directory's)."""

    def __init__(self) -> None:
        self._sessions: dict[str, LiveSession] = {}

    def get(self, session_id: str) -> LiveSession | None:
        return self._sessions.get(session_id)

    def all(self) -> list[LiveSession]:
        return list(self._sessions.values())

    def add(self, live: LiveSession) -> None:
        self._sessions[live.session_id] = live

    def pop(self, session_id: str) -> LiveSession | None:
        return self._sessions.pop(session_id, None)
