"""One delivery attempt over HTTP: check the URL again, sign, connect to the checked address.

The request goes to the address that passed the check (`Target.url`), with the URL's own host
name as the Host header and as the TLS server name (the certificate is verified against it), so
what the receiver sees is an ordinary request to its URL. Redirects are not followed (a 3xx is a
failed attempt: following one would reach an unchecked address), proxies from the environment are
ignored, and the answer's body is never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks import Webhook

from app import __version__
from app.webhooks.urls import AllowList, CallbackRefusedError, Resolver, target_for

USER_AGENT = f"warmbox-webhooks/{__version__}"
MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class Attempt:
    """What one attempt got: the receiver's status, or why there was none."""

    status_code: int | None
    error: str | None


def signed_headers(signer: Webhook, *, delivery_id: str, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers, signed now (receivers refuse old timestamps)."""
    now = datetime.now(UTC)
    return {
        "webhook-id": delivery_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id=delivery_id, timestamp=now, data=body),
    }


class Sender:
    """Sends attempts from any thread through one HTTP client (its TLS context is built once).

    No connection is kept alive: a pooled connection is keyed by address, and one opened for
    one host name (its TLS server name) must never carry a request for another.
    """

    def __init__(
        self, *, secret: str, allow: AllowList, resolver: Resolver, timeout_s: float
    ) -> None:
        # No secret (production without WEBHOOK_SECRET): callbacks are refused at submit, and
        # nothing is ever sent unsigned; the service itself starts as usual.
        self.signer = Webhook(secret) if secret else None
        self.allow = allow
        self.resolver = resolver
        self.timeout_s = timeout_s
        self.client = httpx.Client(
            timeout=timeout_s,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self.client.close()

    def attempt(self, *, delivery_id: str, url: str, body: str) -> Attempt:
        """POST `body` to `url`; never raises for what the network or the receiver does."""
        if self.signer is None:
            return Attempt(None, "refused: WEBHOOK_SECRET is not set, nothing is sent unsigned")
        try:
            target = target_for(url, self.allow, self.resolver)
        except CallbackRefusedError as exc:
            return Attempt(None, f"refused: {exc.message}"[:MAX_ERROR_CHARS])
        headers = {
            **signed_headers(self.signer, delivery_id=delivery_id, body=body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
        }
        try:
            with self.client.stream(
                "POST",
                target.url,
                content=body.encode("utf-8"),
                headers=headers,
                extensions={"sni_hostname": target.host},
            ) as response:
                return Attempt(response.status_code, None)
        except httpx.TimeoutException:
            return Attempt(None, f"no answer within {self.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
