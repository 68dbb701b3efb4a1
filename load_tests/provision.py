"""Create the load test's accounts up front through the admin API.

Made before the clock starts, so neither argon2 hashing of new accounts nor the sign-up path is
part of what the run measures; each Locust user still signs in once.

    LOAD_ADMIN_USERNAME=admin LOAD_ADMIN_PASSWORD=... LOAD_USER_PASSWORD=... \\
        uv run python -m load_tests.provision --host http://127.0.0.1:8000 --count 50 --prefix load-

Secrets come from the environment (the same variables the locustfile reads), never from argv.
"""

from __future__ import annotations

import argparse
import os
import sys

import httpx

API = "/api/v1"


def provision(
    *,
    host: str,
    admin_username: str,
    admin_password: str,
    prefix: str,
    password: str,
    count: int,
) -> int:
    """Create `count` user accounts named `<prefix>0000`...; an existing name is kept as is."""
    with httpx.Client(base_url=host, timeout=30.0) as client:
        answer = client.post(
            f"{API}/auth/login", json={"username": admin_username, "password": admin_password}
        )
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        created = 0
        for number in range(count):
            body = {"username": f"{prefix}{number:04d}", "password": password, "role": "user"}
            answer = client.post(f"{API}/users", json=body, headers=headers)
            if answer.status_code == 201:
                created += 1
            elif answer.status_code != 409:
                answer.raise_for_status()
    return created


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    try:
        secrets = {
            "admin_username": os.environ["LOAD_ADMIN_USERNAME"],
            "admin_password": os.environ["LOAD_ADMIN_PASSWORD"],
            "password": os.environ["LOAD_USER_PASSWORD"],
        }
    except KeyError as exc:
        parser.error(f"set {exc.args[0]} in the environment")
    created = provision(host=args.host, prefix=args.prefix, count=args.count, **secrets)
    print(f"provision: {created} of {args.count} accounts created")
    return 0


if __name__ == "__main__":
    sys.exit(main())
