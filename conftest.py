"""Hypothesis profiles for the whole suite: `default` sized for `make test`, `deep` for a longer search.

`HYPOTHESIS_PROFILE=deep python -m pytest unit_tests integration_tests/test_fake_where.py` runs every
property test with ten times its examples (integration_tests/depth.py scales each test's own count).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("default", max_examples=100)
settings.register_profile("deep", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
