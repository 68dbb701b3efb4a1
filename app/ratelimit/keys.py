"""Who is calling, as the limits see it: a user id from a valid access token, else the client IP.

X-Forwarded-For is believed only from TRUSTED_PROXIES. The server itself never rewrites the peer
address (`app.serve` starts uvicorn with its proxy headers off), so this is the one place where a
forwarded address is believed.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Protocol

from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Scope

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Caller:
    key: str
    claims_admin: bool = False  # what the token says; the identity's `is_admin_now` decides
    user_id: str | None = None


class CallerIdentity(Protocol):
    """Who a bearer token belongs to, and whether they are an admin now: the accounts domain
    answers (`app.auth.callers`), so that this package needs to know nothing about users."""

    # Paths counted by address only (sign-in: a token sent along must not move the caller).
    address_only_prefix: str

    def caller(self, token: str) -> Caller | None:
        """The caller behind a valid access token (signature only, no database), else None."""
        ...

    async def is_admin_now(self, caller: Caller, scope: Scope) -> bool:
        """True only when the accounts store says the caller is an active admin now."""
        ...


def parse_trusted_proxies(entries: list[str]) -> list[IpNetwork]:
    """TRUSTED_PROXIES as networks: single addresses or CIDR ranges; anything else is refused."""
    try:
        return [ipaddress.ip_network(entry, strict=False) for entry in entries]
    except ValueError as exc:
        raise ValueError(f"TRUSTED_PROXIES holds an invalid address or network: {exc}") from None


def _parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_ip(scope: Scope, trusted: list[IpNetwork]) -> str:
    """The peer address, or the nearest untrusted X-Forwarded-For hop when the peer is a proxy."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    peer_ip = _parse_ip(peer)
    if not trusted or peer_ip is None or not any(peer_ip in net for net in trusted):
        return peer
    forwarded = Headers(scope=scope).getlist("x-forwarded-for")
    hops = [hop.strip() for header in forwarded for hop in header.split(",") if hop.strip()]
    address = peer
    # Walk from the nearest hop outwards; only a trusted proxy's claim about the next hop counts.
    for hop in reversed(hops):
        hop_ip = _parse_ip(hop)
        if hop_ip is None:
            break
        address = str(hop_ip)
        if not any(hop_ip in net for net in trusted):
            break
    return address


def bearer_token(scope: Scope) -> str | None:
    scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
    return token.strip() or None if scheme.lower() == "bearer" else None


def username_key(username: str) -> str:
    """Hashed: whatever was typed as a username (sometimes a password) never sits in the storage."""
    return hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


def identify(scope: Scope, *, identity: CallerIdentity, trusted: list[IpNetwork]) -> Caller:
    """The user behind a valid access token, else the client address."""
    address = Caller(key=f"ip:{client_ip(scope, trusted)}")
    if scope.get("path", "").startswith(identity.address_only_prefix):
        return address
    token = bearer_token(scope)
    return (identity.caller(token) if token else None) or address


def remote_caller_key(request: Request) -> str:
    """slowapi's key function shape (`key_func(request) -> str`): this app's caller key, so that a
    route decorated with the app's `Limiter` counts the same callers as the middleware."""
    limits = request.app.state.rate_limits
    return identify(request.scope, identity=limits.identity, trusted=limits.trusted_proxies).key
