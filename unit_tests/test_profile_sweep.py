"""The profile sweep's two bounds, driven through ProfilePlan against a model of Mixpanel's Engage API (pure, no
HTTP): every sync sends at most K sweep queries, and every profile is read again within the syncs
docs/mixpanel-export.md states, for projects of several shapes and pages in any order (Mixpanel documents none).
The HTTP path of the same bounds is integration_tests/test_profiles_bounds.py."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from source_mixpanel_export.profile_plan import ProfilePlan, Verdict
from source_mixpanel_export.profile_ranges import Range
from source_mixpanel_export.profile_state import ProfileState

NOW = 1_717_243_200  # 2024-06-01T12:00:00Z
DAY = 86_400
PAGE = 100  # the model's page size: profiles 10 times fewer than Mixpanel's pages make the same walks

Shape = Callable[[random.Random], int]
Order = bool | str | None  # None: no order; False: oldest first; True: newest first; "pages": each page sorted
SHAPES: dict[str, Shape] = {
    "spread over 2 years": lambda r: NOW - 2 * 3600 - r.randrange(730 * DAY),
    "90% in one month, 2 years ago": lambda r: NOW - 2 * 3600 - (
        r.randrange(700 * DAY, 730 * DAY) if r.random() < 0.9 else r.randrange(730 * DAY)
    ),
    "90% in the last 3 days": lambda r: NOW - 2 * 3600 - r.randrange(3 * DAY if r.random() < 0.9 else 730 * DAY),
    "70% churned in 100 days, 3 years ago": lambda r: NOW - 2 * 3600 - (
        r.randrange(1000 * DAY, 1100 * DAY) if r.random() < 0.7 else r.randrange(1100 * DAY)
    ),
    "half in the last day, half in one day 5 years ago": lambda r: NOW - 2 * 3600 - (
        r.randrange(DAY) if r.random() < 0.5 else r.randrange(2000 * DAY, 2001 * DAY)
    ),
    "half within 10 minutes (an import)": lambda r: NOW - 2 * 3600 - (
        r.randrange(600) if r.random() < 0.5 else r.randrange(730 * DAY)
    ),
    "age log-normal, median an hour": lambda r: NOW - 2 * 3600 - min(int(3600 * r.lognormvariate(0, 3)), 5000 * DAY),
    "age 60 s x Pareto(0.5)": lambda r: NOW - 2 * 3600 - min(int(60 * r.paretovariate(0.5)), 5000 * DAY),
}
ORDERS = {"in no order": None, "oldest first": False, "newest first": True, "each page sorted": "pages"}
# syncs past P, as docs/mixpanel-export.md states
EXTRA_SYNCS = {"in no order": 1, "oldest first": 2, "newest first": 4, "each page sorted": 4}


def held(profiles: list[int], rng: Range) -> list[int]:
    """The profiles in `rng` (each has a `$last_seen`: the range without one holds none)."""
    if rng.unseen:
        return []
    return [i for i, s in enumerate(profiles) if (rng.lo is None or s >= rng.lo) and (rng.hi is None or s < rng.hi)]


def page_0(profiles: list[int], rng: Range, order: Order, shuffle: random.Random) -> tuple[int, list[int]]:
    """The range's count and its profiles, as Mixpanel would page them in that order."""
    inside = [profiles[i] for i in held(profiles, rng)]
    if order is None or order == "pages":
        shuffle.shuffle(inside)
    if order == "pages":  # in no order, but each page sorted: page 0 looks sorted and is a fair sample
        inside = [s for page in range(0, len(inside), PAGE) for s in sorted(inside[page : page + PAGE])]
    elif order is not None:
        inside.sort(reverse=order)
    return len(inside), inside


def sweep_sync(
    plan: ProfilePlan, profiles: list[int], order: Order, shuffle: random.Random
) -> tuple[int, set[int]]:
    """One sync as profile_stream.ProfileReader drives the plan: the sweep's queries and the profiles it read."""
    queries, read = 0, set()
    while (rng := plan.next()) is not None:
        sweeping = plan.kind() == "sweep"
        total, inside = page_0(profiles, rng, order, shuffle)
        queries += sweeping
        sample: list[int | None] = list(inside[:PAGE])
        if plan.verdict(rng, total, sample) is not Verdict.READ:
            continue
        requests = 1
        while requests <= total // PAGE and plan.more(requests, rng, sample):
            requests += 1
        queries += sweeping * (requests - 1)
        if requests <= total // PAGE:
            continue  # stopped by the sweep's bound
        plan.read(rng, total, requests, min(inside, default=None))
        if sweeping:
            read |= set(held(profiles, rng))
    return queries, read


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("count", "k"), [(2000, 4), (6000, 6), (3000, 10), (16150, 20)])
@pytest.mark.parametrize("seed", [1, 2])
def test_given_a_project_of_any_shape_when_swept_then_k_queries_a_sync_and_each_profile_within_the_stated_syncs(
    shape: str, order: str, count: int, k: int, seed: int
) -> None:
    draw = random.Random(seed)
    profiles = [SHAPES[shape](draw) for _ in range(count)]
    bound = math.ceil(count / (PAGE * (k - 2))) + 1  # P
    state, pending, shuffle = ProfileState(), set(range(count)), random.Random(3)
    for sync in range(bound + EXTRA_SYNCS[order] + 1):
        plan = ProfilePlan(state, incremental=True, now=NOW + sync * 3600, sweep_requests=k)
        plan.page_size = PAGE
        queries, read = sweep_sync(plan, profiles, ORDERS[order], shuffle)
        state = plan.state
        assert queries <= k, (sync, queries)
        if sync:  # the first sync is the pass
            pending -= read
            if not pending:
                break
    assert not pending and sync <= bound + EXTRA_SYNCS[order], (len(pending), sync, bound)
