"""The live objects a synchronous run needs, gathered from what the lifespan built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.code.service import SyncRuns


async def get_sync_runs(request: Request) -> SyncRuns:
    state = request.app.state
    return SyncRuns(
        settings=state.settings,
        session_factory=state.session_factory,
        manager=getattr(state, "sandbox", None),
        slots=state.sync_run_slots,
        shares=state.run_shares,
        metrics=getattr(state, "metrics", None),
    )


SyncRunsDep = Annotated[SyncRuns, Depends(get_sync_runs)]
