"""A shared limiter storage that hangs costs one timeout, not one per request, and limiting goes
on in memory meanwhile."""

from __future__ import annotations

import time

VERSION = "/api/version"


def test_hung_storage_is_skipped_and_limits_still_hold(make_settings, make_client, silent_server):
    settings = make_settings(
        rate_limit_enabled=True,
        rate_limit_storage_uri=f"redis://127.0.0.1:{silent_server}/0",
        rate_limit_default="3/minute",
    )
    with make_client(settings) as client:
        first_started = time.monotonic()
        first = client.get(VERSION)
        first_took = time.monotonic() - first_started
        timings, answers = [], []
        for _ in range(3):
            started = time.monotonic()
            answers.append(client.get(VERSION))
            timings.append(time.monotonic() - started)
    assert first.status_code == 200  # the storage failed: counted in memory, not refused
    assert first_took >= 0.5  # it did wait for the hung storage once
    assert max(timings) < 0.5  # and then not again
    assert [a.status_code for a in answers] == [200, 200, 429]
