"""Short-lived tickets for one resource, for clients that cannot send an Authorization header.

A browser's EventSource can only GET a URL. A long-lived access token in a URL ends up in
browser history, proxy logs and Referer headers; a ticket is useless elsewhere: it names one user
and one resource (`job:<id>`), expires after EVENTS_TICKET_TTL_S (60 s by default), and is
signed with a key derived from SECRET_KEY for tickets only, so it is never accepted as an access
token, nor an access token as a ticket. It is stateless (any node with the same SECRET_KEY
checks it), which is why it is short-lived rather than single-use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime

from app.core.config import Settings
from app.core.errors import AuthenticationError

INVALID_TICKET = "invalid or expired ticket; ask for a new one"
_KEY_LABEL = b"warmbox events ticket v1\0"


def _key(settings: Settings) -> bytes:
    return hashlib.sha256(_KEY_LABEL + settings.secret_key.encode()).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(settings: Settings, *, user_id: str, resource: str) -> tuple[str, datetime]:
    """A ticket for `user_id` to read `resource`, and when it expires."""
    expires = int(time.time() + settings.events_ticket_ttl_s)
    claims = {"sub": user_id, "res": resource, "exp": expires, "n": secrets.token_urlsafe(6)}
    body = _encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = _encode(hmac.new(_key(settings), body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}", datetime.fromtimestamp(expires, UTC)


def verify(settings: Settings, ticket: str, *, resource: str) -> str:
    """The user id the ticket was issued to, when it is genuine, unexpired and for `resource`.

    Raises:
        AuthenticationError: anything else, always with the same message.
    """
    body, _, signature = ticket.partition(".")
    expected = _encode(hmac.new(_key(settings), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise AuthenticationError(INVALID_TICKET)
    try:
        claims = json.loads(_decode(body))
    except ValueError:
        raise AuthenticationError(INVALID_TICKET) from None
    valid = (
        isinstance(claims, dict)
        and claims.get("res") == resource
        and isinstance(claims.get("sub"), str)
        and isinstance(claims.get("exp"), int)
        and claims["exp"] > time.time()
    )
    if not valid:
        raise AuthenticationError(INVALID_TICKET)
    return str(claims["sub"])
