"""Hostile checks of the profile sweep's bounds (docs/mixpanel-export.md, "Incremental syncs and the sweep") and of
range narrowing, through ProfilePlan against the model of Mixpanel in unit_tests/test_profile_sweep.py (pure, fast).

Some of these once broke (a hostile run): each test states the documented promise; the shapes that broke the
syncs a quiet change waits are in test_profile_sweep's model test."""

from __future__ import annotations

import bisect
import math
import random

import pytest

from source_mixpanel_export.profile_plan import ProfilePlan, Verdict
from source_mixpanel_export.profile_ranges import Range
from source_mixpanel_export.profile_state import ProfileState
from unit_tests.test_profile_sweep import DAY, NOW, ORDERS, PAGE, Shape, held, sweep_sync

HOUR = 3600


def syncs_to_sweep(shape: Shape, order: str, count: int, k: int, seed: int, limit: int = 120) -> tuple[int, int, int]:
    """(P, the syncs after the pass until every profile was swept again, the most sweep queries of one sync), as
    test_profile_sweep's model test counts them."""
    draw = random.Random(seed)
    profiles = [shape(draw) for _ in range(count)]
    bound = math.ceil(count / (PAGE * (k - 2))) + 1
    state, pending, shuffle = ProfileState(), set(range(count)), random.Random(3)
    most = 0
    for sync in range(limit):
        plan = ProfilePlan(state, incremental=True, now=NOW + sync * 3600, sweep_requests=k)
        plan.page_size = PAGE
        queries, read = sweep_sync(plan, profiles, ORDERS[order], shuffle)
        most = max(most, queries)
        state = plan.state
        if sync:
            pending -= read
            if not pending:
                return bound, sync, most
    return bound, limit, most


def burst_recent(r: random.Random) -> int:
    """Half the profiles last seen within 10 minutes, 2 hours ago (an import, a CRM sync), half over 2 years."""
    return NOW - 2 * HOUR - (r.randrange(600) if r.random() < 0.5 else r.randrange(730 * DAY))


def lognormal_recent(r: random.Random) -> int:
    """Activity that fades with time: the age since 2 hours ago log-normal, median an hour (sigma 3)."""
    return NOW - 2 * HOUR - min(int(HOUR * r.lognormvariate(0, 3)), 5000 * DAY)


def power_law(r: random.Random) -> int:
    """Age 60 s x Pareto(0.5): 90% within 100 minutes, 1% older than a week (capped at ~14 years)."""
    return NOW - 2 * HOUR - min(int(60 * r.paretovariate(0.5)), 5000 * DAY)


# -- what held: K under hostile orders ----------------------------------------------------------------------------


def newest_page_shuffled(profiles: list[int]) -> list[int]:
    """Page 0 the newest 100 in no order, the rest in no order."""
    ordered = sorted(profiles, reverse=True)
    head, tail = ordered[:PAGE], ordered[PAGE:]
    random.Random(len(profiles)).shuffle(head)
    return head + tail


@pytest.mark.parametrize("shape", [burst_recent, lognormal_recent, power_law], ids=lambda f: f.__name__)
@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("k", [3, 4, 7])
def test_given_hostile_shapes_and_orders_when_swept_then_no_sync_sends_more_than_k_sweep_queries(
    shape: Shape, order: str, k: int
) -> None:
    """The K bound held for every shape and order tried (also in a wider exploration: page 0 the newest or oldest
    100 shuffled, nearly sorted with 2% swapped or 5 movers, sorted by a noisy key, pages sorted newest first;
    profiles before 2009, before 1970, at 1970-01-01, in year 1 to 5, without a date, without $last_seen):
    the only syncs over K read one second (or the undated profiles) whole, the documented exception."""
    _, _, most = syncs_to_sweep(shape, order, 1500, k, 1, limit=25)
    assert most <= k


# -- termination: profiles last seen after `now` -------------------------------------------------------------------


def drive(plan: ProfilePlan, profiles: list[int], limit: int) -> tuple[int, Range | None]:
    """Runs the plan against the profiles (stored order); (queries sent, the range under way when `limit` hit)."""
    queries = 0
    while (rng := plan.next()) is not None:
        if queries == limit:
            return queries, rng
        inside = [profiles[i] for i in held(profiles, rng)]
        queries += 1
        if plan.verdict(rng, len(inside), inside[:PAGE]) is Verdict.READ:
            queries += len(inside) // PAGE
            plan.read(rng, len(inside), len(inside) // PAGE + 1, min(inside, default=None))
    return queries, None


@pytest.mark.parametrize("incremental", [False, True], ids=["pass", "changes"])
def test_given_more_than_a_range_of_profiles_last_seen_after_now_when_read_then_the_walk_ends(
    incremental: bool,
) -> None:
    """300 profiles last seen 4 days after the connector's clock (a clock ahead; imported times), 3,000 over the last
    100 days, profile_range_pages 1 (pages of 100). A pass, and every changes walk (the future profiles are past
    every watermark), narrows [cursor, now) for ever: 500 queries and the walk still on one range. Before the
    change, narrower used hi = now + 1."""
    r = random.Random(1)
    profiles = [NOW + 4 * DAY + r.randrange(DAY) for _ in range(300)]
    profiles += [NOW - r.randrange(100 * DAY) for _ in range(3000)]
    r.shuffle(profiles)
    state = ProfileState(watermark=NOW - 3 * HOUR) if incremental else ProfileState()
    plan = ProfilePlan(state, incremental=incremental, now=NOW, sweep_requests=4, range_pages=1)
    plan.page_size = PAGE
    queries, stuck = drive(plan, profiles, 500)
    assert stuck is None, f"{queries} queries, still at {stuck.label()}"


# -- pass efficiency at Mixpanel's page size ---------------------------------------------------------------------


def test_given_pages_of_1000_newest_first_and_a_burst_when_a_pass_reads_them_then_few_narrowings_per_range() -> None:
    """100,000 profiles, 50,000 last seen within 10 minutes (83 a second), pages of 1,000 newest first, the default
    profile_range_pages 25. The newest page spans ~12 seconds (< 20 steps): taken as a fair sample, each narrowing
    cuts the range just below the top ~900. Figure: 72 narrowings of the first dated range, 79 page-0 queries for
    4 ranges (in no order: 8); 300,000 with half in 10 minutes: 151 narrowings, 362 page-0 queries (6 hours of
    the Query API's 60 an hour)."""
    page = 1000
    r = random.Random(1)
    profiles = sorted((NOW - 2 * HOUR - (r.randrange(600) if r.random() < 0.5 else r.randrange(730 * DAY))
                       for _ in range(100_000)), reverse=True)  # stored newest first: every range pages so
    plan = ProfilePlan(ProfileState(), incremental=False, now=NOW, sweep_requests=10, range_pages=25)
    plan.page_size = page
    first_pages = narrowings = most = 0
    ascending = profiles[::-1]
    while (rng := plan.next()) is not None:
        if rng.unseen:
            inside: list[int] = []
        else:
            lo = 0 if rng.lo is None else bisect.bisect_left(ascending, rng.lo)
            hi = len(ascending) if rng.hi is None else bisect.bisect_left(ascending, rng.hi)
            inside = ascending[lo:hi][::-1]
        first_pages += 1
        if plan.verdict(rng, len(inside), inside[:page]) is Verdict.READ:
            plan.read(rng, len(inside), len(inside) // page + 1, min(inside, default=None))
            most, narrowings = max(most, narrowings), 0
        else:
            narrowings += 1
    print(f"{first_pages} page-0 queries; {most} narrowings of one range")
    assert most <= 5, (most, first_pages)
