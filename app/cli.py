"""Operator commands: `python -m app.cli create-admin --username alice`.

The password is read from a prompt or from stdin (`--password-stdin`), never from the command
line, where every user of the machine could read it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import TextIO

from sqlalchemy.exc import OperationalError

from app.auth.models import Role
from app.auth.service import check_password_policy, check_username, create_user
from app.core.config import Settings, get_settings
from app.core.db import create_db_engine, create_session_factory
from app.core.errors import AppError


def _read_password(*, from_stdin: bool, stdin: TextIO) -> str:
    if from_stdin:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise AppError("the passwords do not match")
    return first


def create_admin(*, settings: Settings, username: str, password: str, email: str | None) -> str:
    """Create an admin account and return its id; an existing username is left untouched."""
    check_username(username=username)
    check_password_policy(username=username, password=password, settings=settings)
    db_engine = create_db_engine(settings)
    try:
        with create_session_factory(db_engine)() as session:
            user = create_user(
                session, username=username, password=password, email=email, role=Role.ADMIN
            )
            session.commit()
            return user.id
    finally:
        db_engine.dispose()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    admin = commands.add_parser("create-admin", help="create an admin account")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", default=None)
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first stdin line"
    )
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    settings: Settings | None = None,
    stdin: TextIO = sys.stdin,
) -> int:
    """Run one command; the exit code is 0 on success, 1 on a refused request, 2 on bad usage."""
    args = _parser().parse_args(argv)
    settings = settings or get_settings()
    try:
        password = _read_password(from_stdin=args.password_stdin, stdin=stdin)
        user_id = create_admin(
            settings=settings, username=args.username, password=password, email=args.email
        )
    except AppError as exc:
        reasons = "; ".join(d["msg"] for d in exc.details) if isinstance(exc.details, list) else ""
        print(f"error: {exc.message}{': ' + reasons if reasons else ''}", file=sys.stderr)
        return 1
    except OperationalError:
        print(
            "error: the database is not reachable or not migrated (run prestart)", file=sys.stderr
        )
        return 1
    print(f"created admin {args.username} ({user_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
