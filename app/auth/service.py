"""The rules of identity: who may have an account, how they sign in, how tokens rotate."""

from __future__ import annotations

import re
import uuid

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.auth import repository
from app.auth.models import Role, User
from app.auth.schemas import USERNAME_PATTERN, TokenPair
from app.auth.security import (
    TokenType,
    burn_password_check,
    create_token,
    decode_token,
    hash_password,
    password_needs_rehash,
    verify_password,
)
from app.core.config import Settings
from app.core.errors import (
    AuthenticationError,
    AuthorizationError,
    ConflictError,
    ValidationAppError,
)

log = structlog.get_logger(__name__)

BAD_CREDENTIALS = "incorrect username or password"
REFRESH_REUSED = "this refresh token was already used; sign in again"


def check_password_policy(*, username: str, password: str, settings: Settings) -> None:
    """Refuse passwords that are too short or that merely repeat the username."""
    problems = []
    if len(password) < settings.password_min_length:
        problems.append(f"must be at least {settings.password_min_length} characters long")
    if password.strip().casefold() == username.strip().casefold():
        problems.append("must not be the username")
    if problems:
        details = [
            {"loc": ["body", "password"], "msg": msg, "type": "password_policy"} for msg in problems
        ]
        raise ValidationAppError("the password does not meet the password policy", details=details)


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: Role = Role.USER,
    email: str | None = None,
) -> User:
    """Create an account without policy checks (callers enforce them); usernames are unique."""
    if repository.get_user_by_username(session, username) is not None:
        raise ConflictError("this username is taken")
    user = User(
        username=username.strip(),
        username_key=repository.username_key(username),
        email=email,
        password_hash=hash_password(password),
        role=Role(role).value,
        is_active=True,
    )
    try:
        repository.add_user(session, user)
    except IntegrityError:
        raise ConflictError("this username is taken") from None
    log.info("user_created", user_id=user.id, role=user.role)
    return user


def register_user(
    session: Session, *, settings: Settings, username: str, password: str, email: str | None
) -> User:
    """Open sign-up: always the `user` role, and only while registration is open."""
    if not settings.allow_registration:
        raise AuthorizationError("registration is closed; an admin creates accounts")
    check_password_policy(username=username, password=password, settings=settings)
    return create_user(session, username=username, password=password, email=email)


def authenticate(session: Session, *, username: str, password: str) -> User:
    """The active user these credentials prove; equally slow whether or not the user exists."""
    user = repository.get_user_by_username(session, username)
    if user is None:
        burn_password_check(password)
        raise AuthenticationError(BAD_CREDENTIALS)
    if not verify_password(user.password_hash, password) or not user.is_active:
        raise AuthenticationError(BAD_CREDENTIALS)
    if password_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def issue_token_pair(
    session: Session, *, settings: Settings, user: User, family_id: str | None = None
) -> TokenPair:
    """Sign a fresh access/refresh pair and record the refresh token in its family."""
    access = create_token(
        settings=settings, subject=user.id, role=user.role, token_type=TokenType.ACCESS
    )
    refresh = create_token(
        settings=settings, subject=user.id, role=user.role, token_type=TokenType.REFRESH
    )
    repository.add_refresh_token(
        session,
        jti=refresh.jti,
        user_id=user.id,
        family_id=family_id or str(uuid.uuid4()),
        expires_at=refresh.expires_at,
    )
    return TokenPair(
        access_token=access.token,
        refresh_token=refresh.token,
        expires_in=access.expires_in,
        refresh_expires_in=refresh.expires_in,
    )


def login(session: Session, *, settings: Settings, username: str, password: str) -> TokenPair:
    """Password grant: a new token family per sign-in."""
    try:
        user = authenticate(session, username=username, password=password)
    except AuthenticationError:
        log.info("login_failed")
        raise
    log.info("login_succeeded", user_id=user.id)
    return issue_token_pair(session, settings=settings, user=user)


def _refuse_reuse(session: Session, *, family_id: str, user_id: str) -> None:
    # A used refresh token coming back means it may have leaked: end the whole family. Commit now,
    # because the error that follows makes the request's session roll back.
    repository.revoke_refresh_family(session, family_id)
    session.commit()
    log.warning("refresh_token_reuse_detected", user_id=user_id, family_id=family_id)
    raise AuthenticationError(REFRESH_REUSED)


def rotate_refresh_token(session: Session, *, settings: Settings, refresh_token: str) -> TokenPair:
    """Swap a live refresh token for a new pair; a reused one revokes its whole family."""
    claims = decode_token(refresh_token, settings=settings, expected_type=TokenType.REFRESH)
    row = repository.get_refresh_token(session, claims.jti)
    if row is None or row.user_id != claims.sub:
        raise AuthenticationError("unknown refresh token")
    if row.revoked_at is not None:
        _refuse_reuse(session, family_id=row.family_id, user_id=row.user_id)
    user = repository.get_user(session, row.user_id)
    if user is None or not user.is_active:
        raise AuthenticationError("this account is not active")
    pair = issue_token_pair(session, settings=settings, user=user, family_id=row.family_id)
    new_jti = decode_token(
        pair.refresh_token, settings=settings, expected_type=TokenType.REFRESH
    ).jti
    if not repository.consume_refresh_token(session, jti=row.jti, replaced_by=new_jti):
        _refuse_reuse(session, family_id=row.family_id, user_id=row.user_id)
    return pair


def check_username(*, username: str) -> None:
    """The same username rule as the sign-up schema, for accounts made outside HTTP."""
    if not (3 <= len(username) <= 64 and re.fullmatch(USERNAME_PATTERN, username)):
        raise ValidationAppError("a username is 3-64 letters, digits, '_', '.' or '-'")


def _check_admin_settings(settings: Settings) -> None:
    try:
        check_username(username=settings.admin_username)
    except ValidationAppError as exc:
        raise ValueError(f"ADMIN_USERNAME is not valid: {exc.message}") from None
    try:
        check_password_policy(
            username=settings.admin_username, password=settings.admin_password, settings=settings
        )
    except ValidationAppError as exc:
        reasons = "; ".join(item["msg"] for item in exc.details)
        raise ValueError(f"ADMIN_PASSWORD does not meet the password policy: {reasons}") from None


def ensure_admin_from_settings(session_factory: sessionmaker[Session], settings: Settings) -> None:
    """Create the first admin from ADMIN_USERNAME/PASSWORD once; never touch an existing user."""
    if not (settings.admin_username and settings.admin_password):
        if settings.admin_username or settings.admin_password:
            reason = "set both ADMIN_USERNAME and ADMIN_PASSWORD"
            log.warning("admin_bootstrap_skipped", reason=reason)
        return
    with session_factory() as session:
        if repository.get_user_by_username(session, settings.admin_username) is not None:
            log.info("admin_bootstrap_skipped", reason="the user already exists")
            return
        _check_admin_settings(settings)
        try:
            user = create_user(
                session,
                username=settings.admin_username,
                password=settings.admin_password,
                role=Role.ADMIN,
            )
            session.commit()
        except ConflictError:
            session.rollback()  # another replica created it between our check and our insert
            return
        log.info("admin_bootstrapped", user_id=user.id)
