"""The resolver callback URLs are checked with, handed to routers as a dependency.

`create_app` sets the system's resolver on `app.state.webhook_resolver`; a test replaces it
before the app starts to make a host name it controls resolve where it wants (rebinding).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.webhooks.urls import Resolver, resolve_host


async def get_resolver(request: Request) -> Resolver:
    return getattr(request.app.state, "webhook_resolver", resolve_host)  # type: ignore[no-any-return]


ResolverDep = Annotated[Resolver, Depends(get_resolver)]
