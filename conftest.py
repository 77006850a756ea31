"""Hypothesis profiles for the whole suite: `default` sized for `make test`, `deep` for a longer search.

`HYPOTHESIS_PROFILE=deep python -m pytest unit_tests integration_tests/test_fake_where.py` runs every
property test with ten times its examples (integration_tests/depth.py scales each test's own count).
"""

from __future__ import annotations

import os

from hypothesis import settings

# No deadline: an example's time is no property, and on a busy 2-core box (pytest -n 2) a 200 ms default
# deadline failed test_windows' partition property as Flaky (335 ms once, 98 ms when replayed).
settings.register_profile("default", max_examples=100, deadline=None)
settings.register_profile("deep", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
