"""Load test of warmbox: realistic users, an abuse profile, and a smoke profile.

The profile comes from LOAD_PROFILE (normal | abuse | smoke); only its user classes are exposed
to Locust. `bash load_tests/run_load.sh` starts a throwaway service, provisions accounts, runs this
file headless and writes the summary; to aim it at a server you already run:

    LOAD_PROFILE=normal LOAD_ADMIN_USERNAME=admin LOAD_ADMIN_PASSWORD=... \\
        uv run locust -f load_tests/locustfile.py --headless -u 10 -r 5 -t 30s \\
        --host http://127.0.0.1:8000

Without LOAD_USER_COUNT each user registers its own account first.
"""

from __future__ import annotations

from load_tests.scenarios import PROFILES, measure
from load_tests.scenarios.common import CONFIG

if CONFIG.profile not in PROFILES:
    raise SystemExit(f"LOAD_PROFILE must be one of {sorted(PROFILES)}, not {CONFIG.profile!r}")

measure.install()
# Locust runs every User class it finds in this module's namespace: bind only the profile's.
globals().update({user_class.__name__: user_class for user_class in PROFILES[CONFIG.profile]})
