"""Which callback URLs the service may call: the guard against server-side request forgery.

A callback URL is a request the service makes on a user's behalf, so it must never reach what
only the service can reach: loopback, private and link-local networks, carrier-grade NAT, cloud
metadata endpoints (Judge0's CVE-2024-29021 began with a callback to one). The rule is checked
twice: when the URL is submitted (a clear 4xx for the caller) and again when each attempt is
sent, on the addresses the name resolves to then; the attempt connects to exactly the address
that passed, so a DNS answer that changes in between (rebinding) cannot move it.

`WEBHOOK_ALLOWED_HOSTS` opens exceptions: a host name (reached whatever it resolves to) or a
CIDR range (its addresses are allowed).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from app.core.config import Settings
from app.core.errors import ValidationAppError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# (host, port) -> the addresses the host name resolves to; tests pass their own.
Resolver = Callable[[str, int], Sequence[IPAddress]]

MAX_URL_CHARS = 2048
FIELD = "callback_url"
# Cloud metadata endpoints that are not covered by the non-global ranges below.
METADATA_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "168.63.129.16/32",  # Azure's wire server: a public address
        "100.100.100.200/32",  # Alibaba Cloud
        "fd00:ec2::254/128",  # AWS over IPv6
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
# 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class CallbackRefusedError(ValidationAppError):
    """A callback URL the service will not call; `details.field` names the field."""

    def __init__(self, message: str, *, field: str = FIELD) -> None:
        super().__init__(message, details={"field": field})


@dataclass(frozen=True)
class AllowList:
    hosts: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


@dataclass(frozen=True)
class Target:
    """Where one attempt goes: the checked address, and the names the request must carry."""

    url: str  # the callback URL with the checked address in place of the host name
    host: str  # the URL's host name: the Host header and the TLS server name
    host_header: str
    address: IPAddress


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """The addresses `host` resolves to (the system's resolver), without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, IPAddress] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        seen.setdefault(text, ipaddress.ip_address(text))
    return list(seen.values())


def forbidden_reason(address: IPAddress) -> str | None:
    """Why the service must not connect to `address` (None when it may)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d to the kernel
            reason = forbidden_reason(address.ipv4_mapped)
            return None if reason is None else f"{reason} (IPv4-mapped)"
        embedded = address.sixtofour
        if embedded is None and address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and (reason := forbidden_reason(embedded)) is not None:
            return f"{reason} (embedded in an IPv6 address)"
    if any(address in network for network in METADATA_NETWORKS):
        return "a cloud metadata address"
    for reason, hit in (
        ("an unspecified address", address.is_unspecified),
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a carrier-grade NAT address", address in CGNAT),
        ("a reserved address", address.is_reserved or not address.is_global),
    ):
        if hit:
            return reason
    return None


def _parse(url: str) -> tuple[SplitResult, str, int]:
    if len(url) > MAX_URL_CHARS:
        raise CallbackRefusedError(f"a callback URL may be at most {MAX_URL_CHARS} characters")
    if any(ord(char) <= 32 or ord(char) >= 127 for char in url):
        raise CallbackRefusedError(
            "a callback URL must be printable ASCII: no spaces or control characters, and "
            "anything else percent-encoded (an international host name in its xn-- form)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise CallbackRefusedError("a callback URL must be http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefusedError("a callback URL may not carry credentials (user@host)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise CallbackRefusedError("the callback URL's port is not valid") from None
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise CallbackRefusedError("a callback URL needs a host")
    return parts, host, port


def _addresses(host: str, port: int, resolver: Resolver) -> Sequence[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError, ValueError):
        addresses = []
    if not addresses:
        raise CallbackRefusedError(f"the callback host {host!r} does not resolve")
    return addresses


def _checked(url: str, allow: AllowList, resolver: Resolver) -> Target:
    parts, host, port = _parse(url)
    if host in allow.hosts:
        addresses = _addresses(host, port, resolver)
    else:
        if host in METADATA_HOSTS:
            raise CallbackRefusedError(f"{host!r} is a cloud metadata host")
        addresses = _addresses(host, port, resolver)
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None and not allow.permits_address(address):
                raise CallbackRefusedError(
                    f"the callback host {host!r} is {reason} ({address}); "
                    "WEBHOOK_ALLOWED_HOSTS can permit it"
                )
    address = addresses[0]
    netloc = f"[{address}]" if address.version == 6 else str(address)
    pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return Target(url=pinned, host=host, host_header=host_header, address=address)


def check_callback_url(url: str, settings: Settings, *, resolver: Resolver = resolve_host) -> str:
    """The URL, if the service may call it; checked when a caller submits it.

    Raises:
        CallbackRefusedError (422, details.field `callback_url`): not http(s), carries
        credentials, does not resolve, or reaches a forbidden address that
        WEBHOOK_ALLOWED_HOSTS does not permit; or the service has no WEBHOOK_SECRET to sign with.
    """
    if not settings.webhook_secret:
        raise CallbackRefusedError("callbacks are off on this server: WEBHOOK_SECRET is not set")
    _checked(url, AllowList.parse(settings.webhook_allowed_hosts), resolver)
    return url


def target_for(url: str, allow: AllowList, resolver: Resolver) -> Target:
    """Resolve and check `url` again for one attempt; the Target pins the address that passed.

    Raises:
        CallbackRefusedError: as check_callback_url, with the addresses of this moment.
    """
    return _checked(url, allow, resolver)
