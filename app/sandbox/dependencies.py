"""The sandbox manager the lifespan started, handed to routers as a dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.sandbox.manager import SandboxManager


async def get_sandbox(request: Request) -> SandboxManager | None:
    """None when SANDBOX_ENABLED=false."""
    return getattr(request.app.state, "sandbox", None)


SandboxDep = Annotated[SandboxManager | None, Depends(get_sandbox)]
