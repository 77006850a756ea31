"""The history sweep: checked ranges, stalest-first windows, folding, and a model of many syncs."""

from __future__ import annotations

import datetime as dt
import logging
import random
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_tests.depth import examples
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.plan import Plan
from source_mixpanel_export.state import Checkpoints, ExportState, parse_state, sync_plan
from source_mixpanel_export.sweep import (
    MAX_RANGES_PER_WINDOW,
    block_days,
    block_start,
    fold_limit,
    history_days,
    mark,
    sweep_windows,
    syncs_per_pass,
)
from source_mixpanel_export.windows import Planner, Window

D = dt.date
MS_DAY = 86_400_000


def ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def config(**overrides):
    raw = {
        "credentials": {"option_title": "Service Account", "username": "u", "secret": "s", "project_id": 7},
        "start_date": "2021-01-01",
    }
    raw.update(overrides)
    return parse_config(raw, now=dt.datetime(2027, 6, 1, tzinfo=dt.UTC))


def test_given_defaults_when_blocks_are_sized_then_the_recent_stretch_fits_one_window():
    """30-day windows, 5 days of attribution: blocks of 24 days, so that up to a block before the
    attribution window, the attribution window and today are 30 days, one request."""
    assert block_days(30, 5) == 24 and block_days(1, 5) == 1 and block_days(7, 0) == 6
    assert (block_start(D(1970, 1, 24), 24), block_start(D(1970, 1, 25), 24)) == (D(1970, 1, 1), D(1970, 1, 25))
    assert fold_limit(D(1970, 2, 20), D(1970, 3, 1), 24) == D(1970, 2, 18)
    assert fold_limit(D(1970, 2, 20), D(1970, 1, 30), 24) == D(1970, 1, 25)  # never past what was read


def test_given_ranges_when_days_are_marked_then_carved_and_equal_neighbours_merged():
    first = D(2024, 1, 1)
    checked = [(D(2024, 1, 10), 100), (D(2024, 1, 20), 200), (D(2024, 1, 31), 300)]
    assert mark(first, checked, D(2024, 1, 5), D(2024, 1, 12), 900) == [
        (D(2024, 1, 4), 100), (D(2024, 1, 12), 900), (D(2024, 1, 20), 200), (D(2024, 1, 31), 300)
    ]
    assert mark(first, checked, D(2024, 1, 11), D(2024, 1, 31), 100) == [(D(2024, 1, 31), 100)]
    assert mark(first, checked, D(2024, 1, 1), D(2024, 1, 10), 200) == [(D(2024, 1, 20), 200), (D(2024, 1, 31), 300)]


def test_given_history_when_sweep_windows_are_planned_then_stalest_first_newest_first_within_blocks():
    """One range checked at 100 and a newer one at 200: the stalest is swept from its newest block down,
    each window inside one block, never before start_day. The block the two ranges share is one window,
    each range's days with their own watermark."""
    first, block = D(1970, 1, 1), 24  # blocks start on Jan 1, Jan 25, Feb 18, Mar 14, Apr 7
    checked = [(D(1970, 3, 1), 100), (D(1970, 4, 30), 200)]
    windows = sweep_windows(first, checked, (D(1970, 1, 10), D(1970, 12, 31)), block, 4)
    assert windows == [
        Window(D(1970, 2, 18), D(1970, 3, 13), 100, sweep=True, later_marks=((D(1970, 3, 2), 200),)),
        Window(D(1970, 1, 25), D(1970, 2, 17), 100, sweep=True),
        Window(D(1970, 1, 10), D(1970, 1, 24), 100, sweep=True),
        Window(D(1970, 4, 7), D(1970, 4, 30), 200, sweep=True),
    ]
    assert windows[0].marks() == [(D(1970, 2, 18), D(1970, 3, 1), 100), (D(1970, 3, 2), D(1970, 3, 13), 200)]
    assert sweep_windows(first, checked, (first, D(1970, 12, 31)), block, 0) == []
    assert sweep_windows(first, [(D(1970, 1, 5), 1), (D(1970, 1, 9), 1_000)], (first, D(1971, 1, 1)), block, 9) == [
        Window(D(1970, 1, 1), D(1970, 1, 9), 1, sweep=True, later_marks=((D(1970, 1, 6), 1_000),))
    ]


def test_given_a_block_cut_into_ranges_when_swept_then_one_window_with_each_ranges_watermark():
    """Syncs that stopped partway leave a block in pieces, some never read (0) between read ones: the sweep
    reads each run of adjacent days in the block with one request (never read: any arrival time), and
    leaves days the backfill still owes (unread False) out of it."""
    first, block = D(1970, 1, 1), 24
    checked = [(D(1970, 1, 3), 300), (D(1970, 1, 8), 0), (D(1970, 1, 15), 100), (D(1970, 1, 24), 200)]
    days = (first, D(1970, 1, 24))
    (whole,) = sweep_windows(first, checked, days, block, 5)
    assert whole.marks() == [
        (D(1970, 1, 1), D(1970, 1, 3), 300), (D(1970, 1, 4), D(1970, 1, 8), None),
        (D(1970, 1, 9), D(1970, 1, 15), 100), (D(1970, 1, 16), D(1970, 1, 24), 200),
    ]
    assert whole.mark_on(D(1970, 1, 10)) == 100 and whole.mark_on(D(1970, 1, 5)) is None
    assert [w.marks() for w in sweep_windows(first, checked, days, block, 5, unread=False)] == [
        [(D(1970, 1, 9), D(1970, 1, 15), 100), (D(1970, 1, 16), D(1970, 1, 24), 200)],
        [(D(1970, 1, 1), D(1970, 1, 3), 300)],
    ]
    daily = [(first + dt.timedelta(days=n), 1_000 + n % 2) for n in range(24)]  # a range a day, 24 of them
    windows = sweep_windows(first, daily, days, block, 9)
    assert [len(w.marks()) for w in windows] == [MAX_RANGES_PER_WINDOW, MAX_RANGES_PER_WINDOW, 7, 1]  # short wheres
    assert sorted(day for w in windows for first_day, last_day, _ in w.marks() for day in (first_day, last_day)) == [
        first + dt.timedelta(days=n) for n in range(24) for _ in (0, 1)
    ]  # every day once


def test_given_five_years_when_a_pass_is_counted_then_the_bound_the_readme_states():
    """The user guide's bound: 5 years of history at the defaults is checked whole within 39 syncs."""
    assert syncs_per_pass(1826, 24, 2) == 39 and syncs_per_pass(365, 24, 2) == 9
    assert syncs_per_pass(1826, 24, 0) is None and syncs_per_pass(0, 24, 2) == 0
    assert history_days(D(2021, 1, 1), [(D(2021, 1, 31), 5)], D(2021, 1, 11)) == 21


def test_given_version_2_state_when_planned_then_history_counts_as_checked_at_its_watermark():
    """Migration: the synced days before the recent stretch become one range at the watermark; the
    sweep starts at their newest block."""
    cfg = config()
    v2 = {"version": 2, "synced_through": "2026-05-31", "watermark_ms": ms(D(2026, 6, 1)) + 3_600_000}
    plan = sync_plan(cfg, parse_state(v2, now=dt.datetime(2026, 6, 1, 2, tzinfo=dt.UTC)), D(2026, 6, 1))
    watermark = v2["watermark_ms"]
    assert plan.first == D(2026, 5, 27)
    assert plan.state.history_from == D(2021, 1, 1) and plan.state.history == ((D(2026, 5, 26), watermark),)
    assert [w.processed_after_ms for w in plan.sweep] == [watermark, watermark]
    assert plan.sweep[0].last_day == D(2026, 5, 26) and all(w.sweep for w in plan.sweep)
    assert plan.sweep[1].last_day == plan.sweep[0].first_day - dt.timedelta(days=1)
    assert sync_plan(config(history_sweep_requests=0), plan.state, D(2026, 6, 1)).sweep == []


def test_given_fresh_state_when_completed_and_settled_then_whole_blocks_join_the_history():
    """Oldest first (recent_first_days 0): the first sync reads every day as fresh."""
    cfg = config(recent_first_days=0)
    plan = sync_plan(cfg, ExportState(), D(2026, 6, 1))
    assert plan.sweep == [] and plan.first == D(2021, 1, 1)
    watermark = ms(D(2026, 6, 1)) + 3_600_000
    state = plan.state.completed(D(2026, 6, 1), watermark).settled(cfg)
    recent = state.recent_from()
    assert recent is not None and recent == block_start(D(2026, 5, 27), 24)
    assert state.history == ((recent - dt.timedelta(days=1), watermark),)
    assert (D(2026, 6, 1) - recent).days + 1 <= cfg.date_window_size  # the re-read fits one window
    assert parse_state(state.to_dict(), now=dt.datetime(2026, 6, 2, tzinfo=dt.UTC)) == state


# A model of many incremental syncs with the sweep, without HTTP: Mixpanel as (event day, processing
# time) pairs; each window of a sync (handed out by the real plan.Plan, from the real sync_plan) returns
# what was processed after its processed_after_ms and by the moment it was asked; the state moves by
# the real state.Checkpoints. Events arrive at any lateness, never during a sync.


def _model_sync(cfg, state, events, now, kill_at, delivered, rng):
    """One modelled daily sync at `now` (ms): returns its last STATE. A window's stamp is up to a second
    before it was asked, at random, so a later window may have an earlier one (round trips differ)."""
    today = D(1970, 1, 1) + dt.timedelta(days=now // MS_DAY)
    sync = sync_plan(cfg, state, today)
    plan = Plan(sync, cfg, lambda: 10**6, logging.getLogger("model"))
    checkpoints = Checkpoints(sync.state, True, cfg, plan)
    written, number = sync.state, 0
    while (window := plan.next()) is not None:
        if kill_at is not None and number == kill_at:
            return written
        asked = now + number * 1000
        count = 0
        for index, (day, processed) in enumerate(events):
            if window.first_day <= day <= window.last_day and processed <= asked:
                if (mark := window.mark_on(day)) is None or processed > mark:
                    delivered.setdefault(index, []).append(now)
                    count += 1
        plan.observe(window, SimpleNamespace(head=None, events=count, size=0))
        if checkpoints.after(window, asked - rng.randrange(1, 1000)):
            written = checkpoints.state
        number += 1
    checkpoints.final()
    return checkpoints.state


@settings(max_examples=examples(25), deadline=None)
@given(seed=st.integers(0, 2**32), requests=st.integers(1, 3), kills=st.booleans())
def test_given_years_of_daily_syncs_when_events_arrive_at_any_lateness_then_each_arrives_once_in_bound(
    seed, requests, kills
):
    """Two years of history, a sweep pass and 20 more daily syncs, 120 events processed between syncs
    on random days (minutes to two years late): every one is delivered exactly once, within
    ceil(blocks / windows per sync) syncs of its arrival when no sync is killed; with kills, nothing
    is lost."""
    rng = random.Random(seed)
    cfg = config(start_date="2024-01-01", history_sweep_requests=requests)
    first_sync = ms(D(2026, 1, 1)) + 6 * 3_600_000
    bound = syncs_per_pass(history_days(D(2024, 1, 1), [(D(2026, 3, 31), 0)], D(2024, 1, 1)), 24, requests)
    assert bound is not None
    syncs = bound + 20
    arrivals = [first_sync + rng.randrange(1, syncs - bound - 1) * MS_DAY + MS_DAY // 2 for _ in range(120)]
    events = [(D(2024, 1, 1) + dt.timedelta(days=rng.randrange((a - ms(D(2024, 1, 1))) // MS_DAY)), a)
              for a in arrivals]
    delivered: dict[int, list[int]] = {}
    state = ExportState()
    ranges = []
    for day in range(syncs + (bound + 1 if kills else 0)):  # killed syncs delay the sweep: then more syncs
        now = first_sync + day * MS_DAY
        kill_at = rng.randrange(6) if kills and day < syncs and rng.random() < 0.3 else None
        state = parse_state(_model_sync(cfg, state, events, now, kill_at, delivered, rng).to_dict(),
                            now=dt.datetime.fromtimestamp(now / 1000 + 60, dt.UTC))
        ranges.append(len(state.history))
    for index, (_, arrived) in enumerate(events):
        assert delivered.get(index), (index, events[index])
        if not kills:  # a resumed sync re-reads what its killed predecessor emitted since its checkpoint
            assert len(delivered[index]) == 1, (index, events[index], delivered[index])
            assert (delivered[index][0] - arrived) // MS_DAY + 1 <= bound
    assert max(ranges) <= 2 * bound + 4  # ranges, not days: about one per sync of a pass


def test_given_a_daily_sync_at_the_defaults_when_planned_then_two_fresh_requests_and_two_sweeps():
    """The user guide's request count: yesterday's sync left the state; today's reads the recent days' late
    arrivals in one window and the new day in another, then sweeps two blocks (0 with the sweep off)."""
    cfg = config()
    yesterday = ms(D(2026, 5, 31)) + 6 * 3_600_000
    first = sync_plan(config(recent_first_days=0), ExportState(), D(2026, 5, 31))  # a sync that read all
    state = first.state.completed(D(2026, 5, 31), yesterday).settled(cfg)
    plan = sync_plan(cfg, state, D(2026, 6, 1))
    planner = Planner(plan.segments, cfg.date_window_size, cfg.window_target_events, "UTC")
    late = planner.next()
    assert late is not None and late.processed_after_ms == yesterday and late.first_day == state.recent_from()
    planner.observe(late, events=300, size=300_000)
    assert planner.next() == Window(D(2026, 6, 1), D(2026, 6, 1)) and planner.next() is None
    assert len(plan.sweep) == 2 and sync_plan(config(history_sweep_requests=0), state, D(2026, 6, 1)).sweep == []


def test_given_start_date_moved_past_the_synced_days_when_planned_then_skipped_days_count_as_never_read():
    """A state synced through May, a config now starting in July: June was never read, so the history
    marks it checked at 0 (a sweep would read it whole if start_date came back), never at a watermark."""
    may = config(start_date="2026-05-01")
    state = sync_plan(may, ExportState(), D(2026, 5, 31)).state.completed(D(2026, 5, 31), ms(D(2026, 5, 31)))
    plan = sync_plan(config(start_date="2026-07-01"), state.settled(may), D(2026, 7, 10))
    assert plan.first == D(2026, 7, 1)
    assert plan.state.history[-1] == (D(2026, 6, 30), 0)
    assert plan.state.history[-2][0] == D(2026, 5, 31) and plan.sweep == []


def test_given_an_attribution_window_reaching_into_the_history_when_planned_then_the_sweep_leaves_its_days():
    """attribution_window 45 after syncs at 5: the sync re-reads history days as fresh ones, so no sweep
    window covers a day from its first on (the same late arrival would come twice in one sync)."""
    cfg = config(recent_first_days=0)
    state = sync_plan(cfg, ExportState(), D(2026, 5, 31)).state
    state = state.completed(D(2026, 5, 31), ms(D(2026, 5, 31)) + 3_600_000).settled(cfg)
    plan = sync_plan(config(attribution_window=45, history_sweep_requests=60), state, D(2026, 6, 1))
    assert plan.first < state.recent_from()
    assert plan.sweep and all(w.last_day < plan.first for w in plan.sweep)


def test_given_later_windows_stamped_earlier_when_a_first_sync_backfills_then_its_days_share_one_watermark():
    """Mixpanel's Date less the round trip can stamp a later window a few ms before an earlier one. The
    sync's watermark is the lowest stamp, and every day the sync read is checked at it: so the history is
    one range, whole blocks for the sweep, not ranges cut at the backfill's window edges (each of which
    would cost the sweep a request more than the user guide's bound)."""
    cfg = config(start_date="2026-04-01", date_window_size=10)
    today = D(2026, 6, 1)
    sync = sync_plan(cfg, ExportState(), today)
    plan = Plan(sync, cfg, lambda: 10**6, logging.getLogger("model"))
    checkpoints = Checkpoints(sync.state, True, cfg, plan)
    stamp, windows, backfill = ms(today) + 3_600_000, 0, 0
    while (window := plan.next()) is not None:
        plan.observe(window, SimpleNamespace(head=None, events=10, size=0))
        checkpoints.after(window, stamp - windows)  # each window stamped a ms before the one before it
        windows += 1
        backfill += not window.fresh
    checkpoints.final()
    history = checkpoints.state.history
    assert backfill >= 3 and windows > backfill
    assert [mark for _, mark in history] == [stamp - windows + 1]
    assert checkpoints.state.watermark_ms == stamp - windows + 1


@pytest.mark.parametrize("windows_per_sync", [3, 4])
def test_given_a_backfill_stopped_every_few_windows_when_events_arrive_then_the_first_pass_keeps_the_bound(
    windows_per_sync,
):
    """A first sync's backfill that stops after a few windows, sync after sync, leaves the history as
    one range per sync, cutting blocks. Late arrivals on every third day of a year, then: each comes
    once, and all within ceil(blocks / windows per sync) syncs (with a request per piece of a block, the
    pass took several times that)."""
    rng = random.Random(windows_per_sync)
    cfg = config(start_date="2025-01-01")
    start, delivered, events = ms(D(2026, 1, 1)) + 6 * 3_600_000, {}, []
    state, day = ExportState(), 0

    def sync(kill_at):
        nonlocal state, day
        now = start + day * MS_DAY
        written = _model_sync(cfg, state, events, now, kill_at, delivered, rng)
        state = parse_state(written.to_dict(), now=dt.datetime.fromtimestamp(now / 1000 + 60, dt.UTC))
        day += 1

    while not state.history or not all(mark_ms for _, mark_ms in state.history):
        sync(windows_per_sync)
    assert day > 5 and len(state.history) > day / 2  # the backfill took syncs, each its own range
    bound = syncs_per_pass(history_days(state.history_from, state.history, D(2025, 1, 1)), 24, 2)
    arrived = start + day * MS_DAY - MS_DAY // 2
    events.extend((D(2025, 1, 1) + dt.timedelta(days=n), arrived) for n in range(0, 365, 3))
    for _ in range(bound):
        sync(None)
    assert sorted(delivered) == list(range(len(events)))
    assert all(len(times) == 1 for times in delivered.values())


def test_given_a_legacy_project_when_a_block_is_cut_into_ranges_then_each_sweep_window_keeps_to_one():
    """Where a legacy project's days begin on `$time` (its local clock, shifted) is not known for sure, so
    its sweep windows keep to one range each; a UTC project's read the block's ranges at once."""
    utc = config(start_date="2026-01-01", history_sweep_requests=4, recent_first_days=0)
    state = sync_plan(utc, ExportState(), D(2026, 5, 31)).state.completed(D(2026, 5, 31), ms(D(2026, 5, 31)))
    state = state.settled(utc)
    block = block_start(D(2026, 3, 1), 24)
    state = state.checked(block, block + dt.timedelta(days=10), ms(D(2026, 5, 1)))  # a block cut in two
    legacy = config(start_date="2026-01-01", history_sweep_requests=4, recent_first_days=0,
                    legacy_local_time=True, project_timezone="US/Pacific")
    merged = sync_plan(utc, state, D(2026, 6, 1)).sweep
    apart = sync_plan(legacy, state, D(2026, 6, 1)).sweep
    assert merged[0].marks() == [
        (block, block + dt.timedelta(days=10), ms(D(2026, 5, 1))),
        (block + dt.timedelta(days=11), block + dt.timedelta(days=23), ms(D(2026, 5, 31))),
    ]
    assert all(len(w.marks()) == 1 for w in apart)
    assert (apart[0].first_day, apart[0].last_day) == (block, block + dt.timedelta(days=10))
