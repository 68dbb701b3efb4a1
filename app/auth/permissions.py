"""What each role may do. Routes ask for a permission, never a role, so the mapping lives here."""

from __future__ import annotations

from enum import StrEnum

from app.auth.models import Role


class Permission(StrEnum):
    EXECUTE_CODE = "execute:code"
    JOBS_READ_OWN = "jobs:read:own"
    JOBS_READ_ALL = "jobs:read:all"
    JOBS_CANCEL_OWN = "jobs:cancel:own"
    JOBS_CANCEL_ALL = "jobs:cancel:all"
    POOL_READ_STATS = "pool:read_stats"
    USERS_MANAGE = "users:manage"
    LANGUAGES_READ = "languages:read"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.USER: frozenset(
        {
            Permission.EXECUTE_CODE,
            Permission.JOBS_READ_OWN,
            Permission.JOBS_CANCEL_OWN,
            Permission.LANGUAGES_READ,
        }
    ),
    Role.GUEST: frozenset({Permission.LANGUAGES_READ}),
}


def has_permission(role: Role | str, permission: Permission) -> bool:
    """True when `role` grants `permission`; an unknown role grants nothing."""
    try:
        return permission in ROLE_PERMISSIONS[Role(role)]
    except ValueError:
        return False


def may_act_on(
    role: Role | str, user_id: str, owner_id: str, *, own: Permission, every: Permission
) -> bool:
    """Whether a caller may act on a resource owned by `owner_id`: their own with `own`,
    anyone's with `every` (jobs and submissions share this rule)."""
    return (owner_id == user_id and has_permission(role, own)) or has_permission(role, every)
