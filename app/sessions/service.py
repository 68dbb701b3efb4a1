"""Sessions: the rules (limits, ownership, busy, ended), built once in the lifespan.

A session is a container lent out of the shared pool: creating one is acquiring a warm container
and turning its runner into a kernel, milliseconds. It counts against the user's share of runs
(RunShares) and SESSIONS_MAX_PER_USER for as long as it lives. Cells never interleave: a second
cell (or file operation) while one is in progress is refused with 409 SESSION_BUSY rather than
queued, because a waiting request would hold a connection for as long as the cell before it
runs, and a client that sends cells out of order learns it at once instead of by a timeout.
Another user's session is 404, as another user's job is; an ended one is 410 SESSION_GONE.

Several nodes (issue 14): a session lives on the node that lent its container. The directory
(`app/sessions/directory.py`) says which node that is; `app/sessions/forwarding.py` sends a
request that reached another node to it. A session whose node died is 410 (`node_lost`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import anyio
import structlog
from sqlalchemy.orm import Session, sessionmaker

from app.auth.models import Role, User, new_id
from app.core.config import Settings
from app.core.db import interactive_writes, session_scope
from app.core.errors import (
    AppError,
    NotFoundError,
    QuotaExceededError,
    SandboxError,
    ServiceUnavailableError,
    SessionBusyError,
    SessionGoneError,
    UnsupportedLanguageError,
)
from app.jobs.shares import RunShares, ShareTicket, off_loop, take_share
from app.jobs.spec import SANDBOX_DISABLED
from app.sandbox.session import SandboxSession, SessionFile
from app.sessions import repository
from app.sessions.directory import LocalSessionDirectory, SessionDirectory, SessionOwner
from app.sessions.errors import SessionElsewhereError
from app.sessions.live import LiveSession, LiveSessions
from app.sessions.models import CodeSession, EndReason, SessionStatus
from app.sessions.rules import (
    SessionLimits,
    cell_request,
    check_path,
    check_upload,
    limits_for,
    may_see,
)
from app.sessions.schemas import CellBody, CellResponse, SessionCreate, SessionRead

if TYPE_CHECKING:
    from app.sandbox.manager import SandboxManager

log = structlog.get_logger(__name__)

# Languages whose image ships a session kernel (sandbox_images/python/kernel.py).
SESSION_LANGUAGES = ("python",)
T = TypeVar("T")
SWEEP_BATCH = 100  # rows of other nodes checked per renewal round
unit_of_work = contextmanager(session_scope)


class SessionService:
    def __init__(
        self,
        *,
        settings: Settings,
        session_factory: sessionmaker[Session],
        manager: SandboxManager | None,
        shares: RunShares,
        directory: SessionDirectory | None = None,
    ) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.manager = manager
        self.shares = shares
        self.directory = directory or LocalSessionDirectory(settings.effective_node_id)
        self.live = LiveSessions()
        self._opening: set[str] = set()  # created, not yet registered in `live`
        self._missing_since: dict[str, float] = {}  # other nodes' sessions gone from the directory
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Rows a previous process of this node left active are ended (their containers died
        with it); other nodes' sessions are theirs. On a single node: every active row."""
        directory = self.directory
        ended = await self._db(
            repository.end_left_behind,
            reason=EndReason.RESTART.value,
            node_id=directory.node_id if directory.shared else None,
        )
        for session_id, user_id in ended:
            await directory.withdraw(session_id, user_id)
        if ended:
            log.info("sessions_ended_at_start", count=len(ended))
        self._tasks.append(asyncio.create_task(self._reap_forever(), name="session-reaper"))
        if directory.renew_interval_s is not None:
            self._tasks.append(asyncio.create_task(self._renew_forever(directory.renew_interval_s),
                                                   name="session-directory"))  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for live in self.live.all():
            await self._end(live, EndReason.RESTART.value)
        await self.directory.close()

    async def _renew_forever(self, interval_s: float) -> None:
        """Keep this node's entries alive in the shared directory, and end the rows of nodes
        that died; a failed round is logged and the next one rewrites everything."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.directory.renew(
                    (live.session_id, live.user_id) for live in self.live.all()
                )
                await self._sweep(lost_after_s=interval_s * 3)
            except ServiceUnavailableError:
                continue
            except Exception:  # the renewal must outlive one bad round
                log.exception("session_directory_error")

    async def _sweep(self, *, lost_after_s: float) -> None:
        """End the rows of sessions whose node died, so that listings stop showing them: a
        session counts as lost once its entry has been missing for a whole time to live (a
        Redis restart that lost the entries is healed by their owners within a third of it)."""
        rows = await self._db(
            repository.active_elsewhere, node_id=self.directory.node_id, limit=SWEEP_BATCH
        )
        held = await self.directory.held([row.id for row in rows])
        now = time.monotonic()
        missing = {row.id: row for row in rows if row.id not in held}
        self._missing_since = {
            session_id: since
            for session_id, since in self._missing_since.items()
            if session_id in missing
        }
        for session_id, row in missing.items():
            since = self._missing_since.setdefault(session_id, now)
            if now - since >= lost_after_s:
                await self._end_lost(row)
                del self._missing_since[session_id]

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.session_reap_interval_s)
            try:
                await self.reap()
            except Exception:  # the reaper must outlive one bad round
                log.exception("session_reaper_error")

    async def reap(self) -> int:
        """End every idle or expired session that is not in the middle of a cell."""
        now = time.monotonic()
        ended = 0
        for live in self.live.all():
            reason = None if live.busy else live.due(now)
            if reason is not None:
                await self._end(live, reason)
                ended += 1
        return ended

    # ------------------------------------------------------------------ sessions

    async def create(self, user: User, body: SessionCreate) -> SessionRead:
        """Lend a warm container as a new session of `user`.

        Raises:
            ServiceUnavailableError, UnsupportedLanguageError, ValidationAppError,
            QuotaExceededError (SESSIONS_MAX_PER_USER or the user's share of runs),
            PoolExhaustedError, SandboxError.
        """
        manager = self._manager()
        limits = limits_for(self.settings, body)
        if body.language not in SESSION_LANGUAGES:
            raise UnsupportedLanguageError(
                f"sessions are not available for {body.language!r}",
                details={"field": "language", "supported": list(SESSION_LANGUAGES)},
            )
        session_id = new_id()
        await self._count(user, session_id)
        try:
            ticket = await take_share(
                self.shares,
                user.id,
                run_timeout_s=limits.max_lifetime_s,
                what="runs or sessions",
            )
            try:
                live = await self._open(manager, user, session_id, body.language, limits, ticket)
            except BaseException:
                await off_loop(self.shares, self.shares.release, ticket)
                raise
        except BaseException:
            await self.directory.withdraw(session_id, user.id)
            raise
        log.info("session_created", session_id=live.session_id, language=live.language)
        return SessionRead.from_live(live)

    async def _count(self, user: User, session_id: str) -> None:
        """SESSIONS_MAX_PER_USER, counted by the directory: on every node when it is shared."""
        most = self.settings.sessions_max_per_user
        if not await self.directory.reserve(user.id, session_id, limit=most):
            raise QuotaExceededError(
                f"you already have {most} open sessions; close one first",
                details={"sessions_max_per_user": most},
            )

    async def _open(
        self,
        manager: SandboxManager,
        user: User,
        session_id: str,
        language: str,
        limits: SessionLimits,
        ticket: ShareTicket,
    ) -> LiveSession:
        """Publish where the session lives, then lend the container and store the row at once.
        Until it is registered here a request for it is SESSION_BUSY, so a request that finds
        the row finds the live session (here) or its entry (elsewhere), never a false 410."""
        now = datetime.now(UTC)
        self._opening.add(session_id)
        try:
            await self.directory.publish(session_id, user.id)
            sandbox = await self._lend_and_store(
                manager, language, self._row(user, session_id, language, limits, now)
            )
            live = LiveSession(
                session_id=session_id,
                user_id=user.id,
                language=language,
                sandbox=sandbox,
                ticket=ticket,
                idle_timeout_s=limits.idle_timeout_s,
                max_lifetime_s=limits.max_lifetime_s,
                created_at=now,
            )
            self.live.add(live)
        finally:
            self._opening.discard(session_id)
        return live

    async def _lend_and_store(
        self, manager: SandboxManager, language: str, row: CodeSession
    ) -> SandboxSession:
        """The agent's round trip and the commit's fsync overlap: a create costs the slower of
        the two, not their sum (issue 13's create + first cell target). Whichever fails undoes
        the other: an unopened session leaves no row, an unstored one gives its container back.
        """
        lent, stored = await asyncio.gather(
            anyio.to_thread.run_sync(
                lambda: manager.open_session(
                    language,
                    max_file_bytes=self.settings.session_max_file_bytes,
                    max_files=self.settings.session_max_files,
                )
            ),
            self._db(repository.add, row),
            return_exceptions=True,
        )
        if isinstance(lent, BaseException):
            if not isinstance(stored, BaseException):
                await self._db(repository.remove, row.id)
            raise lent
        if isinstance(stored, BaseException):
            await anyio.to_thread.run_sync(lent.close)
            raise stored
        return lent

    def _row(
        self, user: User, session_id: str, language: str, limits: SessionLimits, now: datetime
    ) -> CodeSession:
        return CodeSession(
            id=session_id,
            node_id=self.directory.node_id,
            user_id=user.id,
            language=language,
            status=SessionStatus.ACTIVE.value,
            idle_timeout_s=limits.idle_timeout_s,
            max_lifetime_s=limits.max_lifetime_s,
            cells=0,
            created_at=now,
            last_used_at=now,
            expires_at=now + timedelta(seconds=limits.max_lifetime_s),
        )

    async def read(self, user: User, session_id: str) -> SessionRead:
        live = self.live.get(session_id)
        if live is not None and may_see(user, live.user_id):
            return SessionRead.from_live(live)
        raise await self._missing(user, session_id)

    async def list(
        self, user: User, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[SessionRead], int]:
        user_filter = None if user.role == Role.ADMIN.value else user.id
        rows, total = await self._db(
            repository.list_sessions, user_id=user_filter, status=status, limit=limit, offset=offset
        )
        items = []
        for row in rows:
            live = self.live.get(row.id)
            items.append(
                SessionRead.from_live(live) if live is not None else SessionRead.from_row(row)
            )
        return items, total

    async def close(self, user: User, session_id: str) -> None:
        live = self.live.get(session_id)
        if live is None or not may_see(user, live.user_id):
            raise await self._missing(user, session_id)
        await self._end(live, EndReason.CLOSED.value)

    # ------------------------------------------------------------------ cells and files

    async def execute(self, user: User, session_id: str, body: CellBody) -> CellResponse:
        request = cell_request(self.settings, body)
        live = await self._owned(user, session_id)
        result = await self._exclusive(live, lambda: live.sandbox.execute(request))
        live.cells += 1
        return CellResponse.from_cell(session_id, live.cells, result)

    async def put_file(self, user: User, session_id: str, path: str, content: bytes) -> int:
        check_upload(self.settings, path, content)
        live = await self._owned(user, session_id)
        await self._exclusive(live, lambda: live.sandbox.put_file(path, content))
        return len(content)

    async def get_file(self, user: User, session_id: str, path: str) -> bytes:
        check_path(path)
        live = await self._owned(user, session_id)
        return await self._exclusive(live, lambda: live.sandbox.get_file(path))

    async def delete_file(self, user: User, session_id: str, path: str) -> None:
        check_path(path)
        live = await self._owned(user, session_id)
        await self._exclusive(live, lambda: live.sandbox.delete_file(path))

    async def list_files(self, user: User, session_id: str) -> list[SessionFile]:
        live = await self._owned(user, session_id)
        return await self._exclusive(live, live.sandbox.list_files)

    async def _exclusive(self, live: LiveSession, blocking: Callable[[], T]) -> T:
        """Run one conversation with the session's sandbox; a second at once is SESSION_BUSY.
        A sandbox that failed ends the session: its state is gone, and the answer says so."""
        if live.busy:
            raise SessionBusyError()
        live.busy = True
        try:
            return await anyio.to_thread.run_sync(blocking)
        except SandboxError as exc:
            await self._end(live, EndReason.SANDBOX_FAILED.value)
            raise SessionGoneError(
                f"the session's sandbox failed and the session ended: {exc.message}",
                details={"end_reason": EndReason.SANDBOX_FAILED.value},
            ) from exc
        finally:
            live.busy = False
            live.touch()

    # ------------------------------------------------------------------ helpers

    async def _owned(self, user: User, session_id: str) -> LiveSession:
        """The caller's own live session (admins too use only their own for cells and files)."""
        live = self.live.get(session_id)
        if live is not None and live.user_id == user.id:
            return live
        raise await self._missing(user, session_id, owner_only=True)

    async def locate(self, session_id: str) -> SessionOwner | None:
        """The other live node that holds `session_id`, or None (held here, ended, unknown, or
        its node died).

        Raises:
            DirectoryUnavailableError: the shared directory did not answer.
        """
        if self.live.get(session_id) is not None:
            return None
        owner = await self.directory.lookup(session_id)
        if owner is None or owner.node_id == self.directory.node_id:
            return None
        return owner

    async def _missing(self, user: User, session_id: str, owner_only: bool = False) -> AppError:
        """404 for no such session or someone else's; 410 for one of the caller's that ended,
        whose node died, or whose node did not answer the forwarded request."""
        row = await self._db(repository.get, session_id)
        visible = row is not None and (
            row.user_id == user.id or (not owner_only and may_see(user, row.user_id))
        )
        if row is None or not visible:
            return NotFoundError("no such session", details={"session_id": session_id})
        if session_id in self._opening:
            return SessionBusyError("the session is still being created")
        reason = row.end_reason
        if row.status == SessionStatus.ACTIVE.value:
            owner = await self.locate(session_id)
            if owner is not None:
                return SessionElsewhereError(session_id, owner)
            reason = await self._end_lost(row)
        return SessionGoneError(
            "this session has ended; create a new one",
            details={
                "session_id": session_id,
                "end_reason": reason,
                "ended_at": row.ended_at.isoformat() if row.ended_at else None,
            },
        )

    async def _end_lost(self, row: CodeSession) -> str:
        """An active row that no live process holds: this node restarted, or its node died."""
        mine = row.node_id in (None, self.directory.node_id) or not self.directory.shared
        reason = EndReason.RESTART.value if mine else EndReason.NODE_LOST.value
        await self._db(
            repository.end,
            row.id,
            reason=reason,
            cells=row.cells,
            last_used_at=row.last_used_at,
        )
        await self.directory.withdraw(row.id, row.user_id)
        return reason

    async def _end(self, live: LiveSession, reason: str) -> None:
        if self.live.pop(live.session_id) is None:
            return  # ended by someone else meanwhile
        await off_loop(self.shares, self.shares.release, live.ticket)
        try:
            await anyio.to_thread.run_sync(live.sandbox.close)
        finally:
            await self._db(
                repository.end,
                live.session_id,
                reason=reason,
                cells=live.cells,
                last_used_at=live.last_used_at,
            )
            await self.directory.withdraw(live.session_id, live.user_id)
        log.info("session_ended", session_id=live.session_id, reason=reason, cells=live.cells)

    def _manager(self) -> SandboxManager:
        if self.manager is None:
            raise ServiceUnavailableError(SANDBOX_DISABLED)
        return self.manager

    async def _db(self, operation: Callable[..., T], *args: object, **kwargs: object) -> T:
        """One unit of work in a thread, committed before the caller answers."""

        def unit() -> T:
            with interactive_writes(), unit_of_work(self.session_factory) as db:
                return operation(db, *args, **kwargs)

        return await anyio.to_thread.run_sync(unit)
