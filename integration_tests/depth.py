"""How many examples a property test tries: its own count at the default profile, scaled by the loaded one."""

from __future__ import annotations

from hypothesis import settings

BASE_EXAMPLES = 100  # max_examples of the `default` profile (conftest.py)


def examples(count: int) -> int:
    """`count` under the default profile; ten times it under `deep` (HYPOTHESIS_PROFILE=deep)."""
    return max(1, count * settings.default.max_examples // BASE_EXAMPLES)
