"""Cheap password hashes for every test here."""

from __future__ import annotations

import pytest

from tests.auth.helpers import fast_password_hashing

__all__ = ["fast_password_hashing"]


@pytest.fixture(autouse=True)
def _cheap_password_hashes(fast_password_hashing: None) -> None:
    return None
