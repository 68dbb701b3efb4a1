"""Password hashing and JWTs: the only module that talks to argon2 or python-jose.

Every way a token can be wrong ends in the same AuthenticationError, so a caller learns nothing
about which check failed beyond "expired" (which tells an honest client to refresh).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from jose import ExpiredSignatureError, JWTError, jwt

from app.auth import hashing
from app.core.config import Settings
from app.core.errors import AuthenticationError

# argon2id with the RFC 9106 low-memory profile (argon2-cffi's defaults). Tests swap this object
# for a cheaper one; production code must not.
password_hasher = PasswordHasher()

INVALID_TOKEN_MESSAGE = "invalid or malformed token"  # noqa: S105 (a message, not a secret)


class TokenType(StrEnum):
    ACCESS = "access"
    REFRESH = "refresh"


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    role: str
    type: TokenType
    jti: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime
    expires_in: int


def hash_password(password: str) -> str:
    """Hash with argon2id; the clear password is never stored or logged. Blocking and bounded:
    call it from a worker thread; it waits for a hashing slot or raises 503 (see `hashing`)."""
    return hashing.current_gate().run(password_hasher.hash, password)


def verify_password(password_hash: str, password: str) -> bool:
    """Constant-work check: a wrong password and a corrupt hash both simply fail. Blocking and
    bounded like `hash_password`."""
    return hashing.current_gate().run(_verify, password_hasher, password_hash, password)


def _verify(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's, so login can upgrade it."""
    try:
        return password_hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=4)
def _dummy_hash(hasher: PasswordHasher) -> str:
    # Through the gate too: a burst of unknown usernames at start-up would otherwise make one
    # unbounded hash per caller before the cache is filled.
    return hashing.current_gate().run(hasher.hash, uuid.uuid4().hex)


def burn_password_check(password: str) -> None:
    """Spend the time of a real check, so an unknown username is as slow as a wrong password."""
    verify_password(_dummy_hash(password_hasher), password)


def _lifetime(settings: Settings, token_type: TokenType) -> timedelta:
    minutes = (
        settings.access_token_expire_minutes
        if token_type is TokenType.ACCESS
        else settings.refresh_token_expire_minutes
    )
    return timedelta(minutes=minutes)


def create_token(
    *, settings: Settings, subject: str, role: str, token_type: TokenType
) -> IssuedToken:
    """Sign a token with every claim a verifier checks: sub, role, type, iat, exp, jti, iss, aud."""
    now = datetime.now(UTC).replace(microsecond=0)
    lifetime = _lifetime(settings, token_type)
    jti = str(uuid.uuid4())
    claims = {
        "sub": subject,
        "role": role,
        "type": token_type.value,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
        "jti": jti,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    token = jwt.encode(claims, settings.secret_key, algorithm=settings.jwt_algorithm)
    return IssuedToken(
        token=token,
        jti=jti,
        expires_at=now + lifetime,
        expires_in=int(lifetime.total_seconds()),
    )


_DECODE_OPTIONS = {
    "verify_signature": True,
    "verify_aud": True,
    "verify_iat": True,
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iss": True,
    "verify_sub": True,
    "verify_jti": True,
    "require_aud": True,
    "require_iat": True,
    "require_exp": True,
    "require_iss": True,
    "require_sub": True,
    "require_jti": True,
    "leeway": 0,
}


def _verified_claims(token: str, settings: Settings) -> dict[str, Any]:
    try:
        # Pin the algorithm before verifying: `none`, RS*/ES* and any other HS variant are refused.
        header = jwt.get_unverified_header(token)
        if header.get("alg") != settings.jwt_algorithm:
            raise AuthenticationError(INVALID_TOKEN_MESSAGE)
        return jwt.decode(
            token,
            settings.secret_key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=_DECODE_OPTIONS,
        )
    except ExpiredSignatureError:
        raise AuthenticationError("the token has expired") from None
    except (JWTError, ValueError, TypeError, AttributeError):
        raise AuthenticationError(INVALID_TOKEN_MESSAGE) from None


def decode_token(token: str, *, settings: Settings, expected_type: TokenType) -> TokenClaims:
    """Check signature, algorithm, issuer, audience, expiry and type, else AuthenticationError."""
    claims = _verified_claims(token, settings)
    sub, role, jti = claims.get("sub"), claims.get("role"), claims.get("jti")
    iat, exp = claims.get("iat"), claims.get("exp")
    if claims.get("type") != expected_type.value:
        raise AuthenticationError(f"expected a token of type {expected_type.value}")
    if not all(isinstance(value, str) and value for value in (sub, role, jti)):
        raise AuthenticationError(INVALID_TOKEN_MESSAGE)
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise AuthenticationError(INVALID_TOKEN_MESSAGE)
    return TokenClaims(
        sub=str(sub),
        role=str(role),
        type=expected_type,
        jti=str(jti),
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
    )
