"""Hostile checks of the `profiles` stream's range narrowing and sweep (docs/mixpanel-export.md, "How profiles are
read" and "Incremental syncs and the sweep") after narrowing began to depend on the order of page 0's profiles.

Most of these once broke (a hostile run): each test states the documented promise, with the figure it broke by."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fake_mixpanel import ENGAGE_PATH, Fault
from fake_mixpanel.profiles import FakeProfile, mixpanel_time
from integration_tests.harness import (
    FULL_REFRESH,
    INCREMENTAL,
    catalog,
    config_for,
    make_fake,
    run_in_process,
    state_input,
)

NOW = int(dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
PAGE = 100
STOP_AFTER = 120  # Engage requests after which the fake refuses (403), so that a sync that would never end does


def sync(tmp_path: Path, fake: Any, mode: str, state: Any = None, **settings: Any) -> Any:
    config = config_for(fake, profile_requests_per_hour=100_000, max_retry_seconds=3, **settings)
    return run_in_process(
        tmp_path, "read", config, state=state_input(state, "profiles") if state is not None else None,
        catalog_value=catalog(mode, "profiles"),
    )


def stop_after(fake: Any, count: int) -> None:
    """Every Engage request after the first `count` is answered 403: a runaway sync ends with an error."""
    fake.inject_when(lambda r: len(fake.engage_requests) > count, Fault("status", status=403), times=10**6,
                     path=ENGAGE_PATH)


def first_pages_by_where(fake: Any) -> Counter[str]:
    return Counter(r.params["where"] for r in fake.engage_requests if r.params.get("page") == "0")


# -- 1. termination: profiles last seen after the connector's clock ------------------------------------------------


@pytest.mark.parametrize("ahead", ["years", "minutes"])
def test_given_most_recent_profiles_last_seen_after_the_connectors_clock_when_read_then_the_pass_ends(
    tmp_path: Path, ahead: str
) -> None:
    """300 profiles whose `$last_seen` lies after the connector's clock (imported with an explicit 2030 time; or a
    connector clock 10 minutes behind Mixpanel's, last seen in Mixpanel's last 5 minutes) and 50 older ones,
    profile_range_pages 1 (pages of 100). `narrower` takes `hi` = max(now, page 0's dates) + 1, so the cut lies in
    the future; `Walk.next_range` turns a `to` past `now` into an open end: the range read is the one just found
    too large, again. Before the change, `hi` was now + 1. Figure: STOP_AFTER (120) page-0 queries of one same
    `where`, no record, no STATE (the fake then refuses, else it would go on at 60 queries an hour for ever)."""
    r = random.Random(1)
    if ahead == "years":
        future = [NOW + 6 * 365 * 24 * HOUR_MS + r.randrange(24 * HOUR_MS) for _ in range(300)]
        clock = NOW
    else:
        future = [NOW - r.randrange(5 * 60_000) for _ in range(300)]
        clock = NOW - 10 * 60_000  # the connector's clock, 10 minutes behind Mixpanel's
    past = [NOW - 2 * HOUR_MS - r.randrange(100 * 24 * HOUR_MS) for _ in range(50)]
    seen = future + past
    r.shuffle(seen)
    profiles = [FakeProfile(f"u{i}", {"$last_seen": mixpanel_time(t)}) for i, t in enumerate(seen)]
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        stop_after(fake, STOP_AFTER)
        config = config_for(fake, profile_requests_per_hour=100_000, max_retry_seconds=3, profile_range_pages=1)
        run = run_in_process(tmp_path, "read", config, catalog_value=catalog(FULL_REFRESH, "profiles"), now_ms=clock)
        where, count = first_pages_by_where(fake).most_common(1)[0]
        print(f"{len(fake.engage_requests)} requests; {count} page-0 queries of {where!r}; "
              f"{len(run.records)} records; return code {run.returncode}")
        assert run.returncode == 0, f"{count} page-0 queries of one range: {where}"
        assert len({r["distinct_id"] for r in run.records}) == 350


# -- 4. state: a checkpoint this connector writes, then refuses -------------------------------------------------


def a_few_days_ahead(now_ms: int, seed: int = 1) -> list[FakeProfile]:
    """1,500 profiles, 10% of them last seen 4 days after the connector's clock (a device or an import with a
    clock ahead), nearly newest first (2% of them out of place)."""
    r = random.Random(seed)
    seen = [now_ms + 4 * 24 * HOUR_MS + r.randrange(24 * HOUR_MS) if r.random() < 0.1
            else now_ms - 2 * HOUR_MS - r.randrange(730 * 24 * HOUR_MS) for _ in range(1500)]
    return ordered([FakeProfile(f"f{i}", {"$last_seen": mixpanel_time(t)}) for i, t in enumerate(seen)],
                   "nearly newest first", seed)


def test_given_a_pass_stopped_after_a_checkpoint_when_resumed_then_its_own_state_is_accepted(tmp_path: Path) -> None:
    """"A sync that is stopped resumes at the range it was reading." 10% of the profiles are last seen 4 days after
    the connector's clock, pages nearly newest first. A narrower range once ended where page 0's future dates
    put it: a STATE held a walk.to 4 days ahead, the sync narrowed that open range for ever, and the next attempt
    refused the STATE as from the future. Now no STATE reaches past now, the pass ends (the future profiles read
    whole in its last range), and a pass stopped after its third checkpoint resumes from it with every profile."""
    now_ms = NOW
    with make_fake([], profiles=a_few_days_ahead(now_ms), now_ms=now_ms, engage_page_size=PAGE) as fake:
        stop_after(fake, STOP_AFTER)
        whole = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=1)
        assert whole.returncode == 0, whole.logs()[-2000:]
        assert {r["distinct_id"] for r in whole.records} == {p.distinct_id for p in fake.profiles}
        ends = [s["walk"].get("to") for s in whole.states if s.get("walk")]
        assert all(to is None or to <= mixpanel_time(now_ms) for to in ends), ends
        state = whole.states[2]
        fake.reset_requests()
        again = sync(tmp_path, fake, FULL_REFRESH, state, profile_range_pages=1)
        assert again.returncode == 0, again.errors[:1]
        resumed_from = state["walk"]["from"]
        expected = {p.distinct_id for p in fake.profiles if p.properties["$last_seen"] >= resumed_from}
        assert expected <= {r["distinct_id"] for r in again.records}


@pytest.mark.parametrize("empty", [True, False], ids=["narrower range empty", "narrower range not empty"])
def test_given_a_state_of_the_previous_version_when_resumed_then_nothing_is_lost(tmp_path: Path, empty: bool) -> None:
    """Before the change, a state's `span` beside `to` was the density span of the range before (here 60 s); now it
    is the rest of the range found too large. Resumed, the pass reads [from, to), then (empty) [to, to + 60 s) and
    on, sized again: every profile from `from` on arrives, in both modes; the sweep likewise. Held."""
    r = random.Random(4)
    seen = [NOW - 2 * HOUR_MS - r.randrange(730 * 24 * HOUR_MS) for _ in range(1000)]
    profiles = [FakeProfile(f"o{i}", {"$last_seen": mixpanel_time(t)}) for i, t in enumerate(seen)]
    start = NOW - 365 * 24 * HOUR_MS
    to = start + (HOUR_MS if empty else 30 * 24 * HOUR_MS)
    walk = {"from": mixpanel_time(start), "to": mixpanel_time(to), "unseen_done": True, "span": 60,
            "started": mixpanel_time(NOW - HOUR_MS)}
    expected = {p.distinct_id for p, t in zip(profiles, seen, strict=True) if t >= start // 1000 * 1000}
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        for mode in (FULL_REFRESH, INCREMENTAL):
            run = sync(tmp_path, fake, mode, {"version": 1, "walk": {"kind": "pass", **walk}}, profile_range_pages=1)
            assert run.returncode == 0, run.logs()[-2000:]
            assert expected <= {r["distinct_id"] for r in run.records}, mode
        state: Any = {"version": 1, "watermark": mixpanel_time(NOW - HOUR_MS),
                      "sweep": {**walk, "until": mixpanel_time(NOW - HOUR_MS)}}
        swept: set[str] = set()
        for number in range(1, 30):
            fake.now_ms = NOW + number * HOUR_MS
            run = sync(tmp_path, fake, INCREMENTAL, state, profile_sweep_requests=10)
            assert run.returncode == 0, run.logs()[-2000:]
            swept |= {r["distinct_id"] for r in run.records}
            state = run.states[-1]
            if "sweep" not in state or state["sweep"]["from"] is None:
                break
        assert expected <= swept, len(expected - swept)


# -- 6. exactness under page orders, and resuming from any checkpoint ---------------------------------------------


def hostile_project(count: int = 1200, seed: int = 2) -> list[FakeProfile]:
    """A mix: most spread over 2 years, a dense burst in the last minute (page 0 of a newest-first range spans
    fewer than 20 distinct seconds), and profiles whose `$last_seen` is no date, before 2009, before 1970, absent,
    or all in one second."""
    r = random.Random(seed)
    profiles = []
    for i in range(count):
        x = r.random()
        if x < 0.05:
            props: dict[str, Any] = {"$last_seen": "unknown"}
        elif x < 0.10:
            props = {"$last_seen": mixpanel_time(int(dt.datetime(2005, 3, 1, tzinfo=dt.UTC).timestamp()) * 1000
                                                + r.randrange(30 * 24 * HOUR_MS))}
        elif x < 0.15:
            props = {"$last_seen": mixpanel_time(-300_000_000_000 - r.randrange(30 * 24 * HOUR_MS))}  # 1960
        elif x < 0.20:
            props = {}
        elif x < 0.25:
            props = {"$last_seen": mixpanel_time(NOW - 400 * 24 * HOUR_MS)}
        elif x < 0.40:
            props = {"$last_seen": mixpanel_time(NOW - 2 * HOUR_MS - r.randrange(60_000))}
        else:
            props = {"$last_seen": mixpanel_time(NOW - 2 * HOUR_MS - r.randrange(730 * 24 * HOUR_MS))}
        profiles.append(FakeProfile(f"h{i}", props))
    return profiles


def seen_key(profile: FakeProfile) -> str:
    return str(profile.properties.get("$last_seen", ""))


def ordered(profiles: list[FakeProfile], order: str, seed: int = 5) -> list[FakeProfile]:
    """The profiles in the order the fake stores, and so pages, them."""
    r = random.Random(seed)
    newest = sorted(profiles, key=seen_key, reverse=True)
    if order == "as stored":
        out = profiles[:]
        r.shuffle(out)
        return out
    if order == "oldest first":
        return newest[::-1]
    if order == "newest first":
        return newest
    if order == "newest 100 shuffled first":
        head, tail = newest[:PAGE], newest[PAGE:]
        r.shuffle(head)
        r.shuffle(tail)
        return head + tail
    if order == "nearly newest first":  # 2% swapped at random
        out = newest[:]
        for _ in range(len(out) // 50):
            a, b = r.randrange(len(out)), r.randrange(len(out))
            out[a], out[b] = out[b], out[a]
        return out
    raise AssertionError(order)


ORDERS = ["as stored", "oldest first", "newest first", "newest 100 shuffled first", "nearly newest first"]


@pytest.mark.parametrize("order", ORDERS)
def test_given_hostile_orders_and_values_when_a_full_refresh_is_resumed_at_any_checkpoint_then_every_profile(
    tmp_path: Path, order: str
) -> None:
    """A full refresh delivers the fake's set exactly; and so does one killed right after any of its STATEs (or
    between two: the same) and resumed from it (the platform hands the failed attempt's state to the next): six
    of them, spread from the first to the last (all of them held once; six keep the suite fast)."""
    profiles = ordered(hostile_project(), order)
    expected = {p.distinct_id for p in profiles}
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        stop_after(fake, 2000)
        full = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=1)
        assert full.returncode == 0, full.logs()[-2000:]
        ids = [r["distinct_id"] for r in full.records]
        assert len(ids) == len(set(ids)) and set(ids) == expected
        # resume from every checkpoint (each a kill -9 right after it)
        before: set[str] = set()
        boundaries = [m for m in full.messages if m.get("type") in ("RECORD", "STATE")]
        states = [n for n, m in enumerate(boundaries) if m["type"] == "STATE"]
        picked = set(states[:: max(1, len(states) // 5)] + states[-1:])
        for number, message in enumerate(boundaries):
            if message["type"] == "RECORD":
                before.add(message["record"]["data"]["distinct_id"])
                continue
            if number not in picked:
                continue
            state = message["state"]["stream"]["stream_state"]
            resumed = sync(tmp_path, fake, FULL_REFRESH, state, profile_range_pages=1)
            assert resumed.returncode == 0, resumed.logs()[-2000:]
            assert before | {r["distinct_id"] for r in resumed.records} == expected, (number, state)


# -- 3 and 5. pass efficiency: a dense newest page is taken for a fair sample ---------------------------------------


def lower_bound(where: str) -> str:
    """The part of a range's `where` that names its start: the same for a range and every narrowing of it."""
    return where.split(" and ")[0]


def recent_burst(count: int, burst: int, seconds: int, seed: int = 3) -> list[FakeProfile]:
    """`burst` profiles last seen within `seconds` two hours ago (an import, a CRM sync), the rest over 2 years."""
    r = random.Random(seed)
    ages = [r.randrange(seconds * 1000) if i < burst else r.randrange(730 * 24 * HOUR_MS) for i in range(count)]
    return [FakeProfile(f"b{i}", {"$last_seen": mixpanel_time(NOW - 2 * HOUR_MS - age)}) for i, age in enumerate(ages)]


def test_given_pages_newest_first_and_a_dense_recent_burst_when_a_pass_reads_them_then_about_one_first_page_per_range(
    tmp_path: Path,
) -> None:
    """3,000 profiles, 1,500 of them last seen within one minute (25 a second), pages newest first (the order the
    docs name), profile_range_pages 1. The newest page holds 100 profiles in about 4 seconds: fewer than MIN_SAMPLE
    (20) steps, so `_order` says "fair sample" and the cut falls among those 100; the next page 0 shows the next
    100. Figure: 15 narrowings of one range, 77 page-0 queries for 34 ranges (93 Engage requests); as stored, 2
    and 40 for 36 (54); the repo's own newest-first test allows 1.5 x 30 = 45 page-0 queries. Scaled to
    Mixpanel (pages of 1,000, profile_range_pages 25; unit_tests/test_hostile_profile_sweep.py's model):
    100,000 profiles with 50,000 in 10 minutes take 72 narrowings of one range (79 page-0 queries for 4
    ranges, 8 in no order); 300,000 with 150,000 in 10 minutes, 151 (362 page-0 queries, six hours of the
    Query API's 60 an hour)."""
    profiles = in_order_newest_first(recent_burst(3000, 1500, 60))
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        run = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=1)
        assert run.returncode == 0 and len({r["distinct_id"] for r in run.records}) == 3000
        first = first_pages_by_where(fake)
        by_start = Counter(lower_bound(w) for w in first.elements())
        narrowings = max(by_start.values()) - 1
        print(f"{sum(first.values())} page-0 queries, {len(run.states)} ranges, {narrowings} narrowings of one")
        assert narrowings <= 3 and sum(first.values()) <= 1.5 * 3000 / PAGE, (narrowings, sum(first.values()))


def in_order_newest_first(profiles: list[FakeProfile]) -> list[FakeProfile]:
    return sorted(profiles, key=seen_key, reverse=True)


# -- harness: the state's "future" is judged at the machine's clock ------------------------------------------------


def test_given_a_state_two_days_after_the_fakes_clock_when_read_in_process_then_it_is_refused(tmp_path: Path) -> None:
    """harness.run_in_process promises the connector runs at the fake's clock. A watermark 2 days after it is
    refused by parse_profile_state at that clock, yet the run accepts it: only the machine's clock (later than
    2024) is asked. No production effect (one clock there), but every test of a state "in the future" at the
    fake's clock tests nothing (test_profiles.py's 2030 case passes only because 2030 is after the machine's)."""
    state = {"version": 1, "watermark": mixpanel_time(NOW + 48 * HOUR_MS)}
    with make_fake([], profiles=[FakeProfile("a", {"$last_seen": mixpanel_time(NOW - HOUR_MS)})], now_ms=NOW) as fake:
        run = sync(tmp_path, fake, INCREMENTAL, state)
        assert run.returncode != 0 and "lies in the future" in run.errors[0]["message"], run.returncode
