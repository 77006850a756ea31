"""Recent days first: the backfill's windows and state, and a model of syncs killed anywhere (no HTTP)."""

from __future__ import annotations

import collections
import dataclasses
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
from source_mixpanel_export.retry import DateAfterToday, TooLarge
from source_mixpanel_export.state import Checkpoints, ExportState, StateRefused, parse_state, sync_plan
from source_mixpanel_export.sweep import sweep_windows, unread_spans
from source_mixpanel_export.windows import ONE_DAY, Planner, Segment, Window, requests_for

D = dt.date
MS_DAY = 86_400_000
TODAY = D(2026, 6, 1)
START = TODAY - 89 * ONE_DAY  # 90 days up to today


def ms(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def config(**overrides):
    raw = {
        "credentials": {"option_title": "Service Account", "username": "u", "secret": "s", "project_id": 7},
        "start_date": START.isoformat(), "recent_first_days": 7,
    }
    raw.update(overrides)
    return parse_config(raw, now=dt.datetime(2027, 6, 1, tzinfo=dt.UTC))


# -- the pure parts ---------------------------------------------------------------------------------------


@settings(max_examples=examples(60), deadline=None)
@given(
    length=st.integers(1, 40), gap=st.integers(0, 3), max_days=st.integers(1, 10),
    rate=st.sampled_from([0, 30, 100, 250, 2_000]),
)
def test_given_newest_first_when_planned_then_days_come_backwards_and_pieces_of_a_day_in_time_order(
    length, gap, max_days, rate
):
    """Two segments of days, any volume: the windows partition them, each day before every older day,
    and a day read in pieces has them in time order, the open-ended one last (it ends the day)."""
    older = Segment(D(2025, 1, 1), D(2025, 1, 1) + (length - 1) * ONE_DAY)
    newer = Segment(older.last_day + (gap + 1) * ONE_DAY, older.last_day + (gap + length) * ONE_DAY)
    planner = Planner([older, newer], max_days, 100, "UTC", newest_first=True)
    windows = []
    while (window := planner.next()) is not None:
        windows.append(window)
        planner.observe(window, events=int(rate * (window.days if window.ends_day else 0.25)), size=0)
    days = [w.first_day + n * ONE_DAY for w in windows if w.ends_day for n in reversed(range(w.days))]
    expected = [day for s in (newer, older) for day in reversed(range_of(s))]
    assert days == expected and planner.days_left() == 0
    for one, two in zip(windows, windows[1:], strict=False):
        if one.first_day == two.first_day and one.days == 1 and not one.ends_day:
            assert one.time_to == two.time_from  # the next piece of the same day
        else:
            assert two.last_day < one.first_day and one.ends_day
    assert all(w.days <= max_days for w in windows)


def range_of(segment: Segment) -> list[dt.date]:
    return [segment.first_day + n * ONE_DAY for n in range((segment.last_day - segment.first_day).days + 1)]


def test_given_newest_first_when_mixpanels_today_is_earlier_then_nothing_after_it_is_planned():
    """stop_after cuts the days not yet planned, whichever end they are read from."""
    planner = Planner([Segment(D(2025, 1, 1), D(2025, 1, 20))], 5, 100, "UTC", newest_first=True)
    planner.stop_after(D(2025, 1, 12))
    assert planner.days_left() == 12 and planner.next() == Window(D(2025, 1, 8), D(2025, 1, 12))
    planner.stop_after(D(2025, 1, 3))
    assert planner.days_left() == 3 and planner.next() == Window(D(2025, 1, 1), D(2025, 1, 3))
    assert planner.next() is None


def test_given_a_billion_events_a_year_when_requests_are_counted_then_three_a_day():
    """The issue's figure: 2.74M events a day at the default target are three pieces a day (730 days:
    2,190 requests); light days fill windows of up to date_window_size; no rate yet: max_days windows."""
    assert requests_for(730, 1e9 / 365, 30, 1_000_000) == 2_190
    assert requests_for(60, 100_000, 30, 1_000_000) == 6 and requests_for(60, 1, 30, 1_000_000) == 2
    assert requests_for(61, None, 30, 1_000_000) == 3 and requests_for(0, 5.0, 30, 10) == 0


def test_given_never_read_ranges_when_planned_then_the_backfill_gets_them_and_the_sweep_the_others():
    first = D(2025, 1, 1)
    checked = [(D(2025, 1, 10), 0), (D(2025, 1, 20), 500), (D(2025, 1, 25), 0), (D(2025, 2, 28), 900)]
    days = (D(2025, 1, 5), D(2025, 12, 31))
    assert unread_spans(first, checked, days) == [(D(2025, 1, 5), D(2025, 1, 10)), (D(2025, 1, 21), D(2025, 1, 25))]
    swept = sweep_windows(first, checked, days, 24, 9, unread=False)
    assert swept and all(mark in (500, 900) for w in swept for _, _, mark in w.marks())
    assert sweep_windows(first, checked, days, 24, 1)[0] == Window(
        D(2025, 1, 24), D(2025, 2, 16), None, sweep=True, later_marks=((D(2025, 1, 26), 900),)
    )


# -- the state ----------------------------------------------------------------------------------------------


def test_given_a_first_sync_of_90_days_when_planned_then_the_last_7_first_and_the_rest_backfilled():
    """recent_first_days 7: the fresh days are the last 7; the 83 before are in the history as never read
    (checked at 0) and are the backfill; nothing to sweep. 0, or a history of 7 days, reads oldest first."""
    plan = sync_plan(config(), ExportState(), TODAY)
    assert (plan.first, plan.end) == (TODAY - 6 * ONE_DAY, TODAY)
    assert plan.segments == [Segment(TODAY - 6 * ONE_DAY, TODAY)]
    assert plan.backfill == [Segment(START, TODAY - 7 * ONE_DAY)] and plan.sweep == []
    assert plan.state.history_from == START and plan.state.history == ((TODAY - 7 * ONE_DAY, 0),)
    short = config(start_date=(TODAY - 6 * ONE_DAY).isoformat())
    for cfg in (config(recent_first_days=0), config(recent_first_days=90), short):
        oldest = sync_plan(cfg, ExportState(), TODAY)
        assert oldest.first == cfg.start_day() and oldest.backfill == [] and oldest.state.history == ()
    assert sync_plan(config(recent_first_days=89), ExportState(), TODAY).backfill == [Segment(START, START)]


def test_given_a_state_that_read_nothing_when_parsed_then_never_read_days_accepted_and_checked_ones_refused():
    """The state a first sync writes may hold never-read days before it has read any (Mixpanel's today
    behind ours); days checked at a watermark, with nothing read, are refused as before."""
    now = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    zero = {"version": 3, "history": {"from": "2026-03-01", "checked": [{"through": "2026-05-20", "watermark_ms": 0}]}}
    assert parse_state(zero, now=now).history == ((D(2026, 5, 20), 0),)
    plan = sync_plan(config(), parse_state(zero, now=now), TODAY)  # planned anew, from this config
    assert plan.state.history == ((TODAY - 7 * ONE_DAY, 0),) and plan.state.history_from == START
    assert sync_plan(config(recent_first_days=0), parse_state(zero, now=now), TODAY).state.history == ()
    checked = {**zero, "history": {"from": "2026-03-01", "checked": [{"through": "2026-05-20", "watermark_ms": 5}]}}
    with pytest.raises(StateRefused, match="past the days this state has read"):
        parse_state(checked, now=now)


def test_given_start_date_moved_earlier_during_the_backfill_when_planned_then_the_backfill_reaches_it():
    """While days are never read, an earlier start_date adds its days to them (read newest first after the
    rest); once all are read, an earlier start_date changes nothing (reset the stream), as before."""
    first = sync_plan(config(), ExportState(), TODAY).state
    half = first.progressed(TODAY, ms(TODAY)).checked(TODAY - 30 * ONE_DAY, TODAY - 7 * ONE_DAY, ms(TODAY))
    earlier = START - 10 * ONE_DAY
    plan = sync_plan(config(start_date=earlier.isoformat()), half, TODAY + ONE_DAY)
    assert plan.state.history_from == earlier
    assert plan.backfill == [Segment(earlier, TODAY - 31 * ONE_DAY)]
    done = half.checked(START, TODAY - 31 * ONE_DAY, ms(TODAY))  # the backfill finished at START
    again = sync_plan(config(start_date=earlier.isoformat()), done, TODAY + ONE_DAY)
    assert again.state.history_from == START and again.backfill == []
    later = sync_plan(config(start_date=(START + 20 * ONE_DAY).isoformat()), half, TODAY + ONE_DAY)
    assert later.backfill == [Segment(START + 20 * ONE_DAY, TODAY - 31 * ONE_DAY)]
    gap = sync_plan(config(), half.checked(START + 5 * ONE_DAY, START + 9 * ONE_DAY, 1), TODAY + ONE_DAY)
    assert sync_plan(config(start_date=earlier.isoformat()), gap.state, TODAY + ONE_DAY).backfill[-1] == Segment(
        START + 10 * ONE_DAY, TODAY - 31 * ONE_DAY)


def test_given_a_v3_state_written_before_the_backfill_when_planned_then_the_same_sync_as_oldest_first():
    """A state without never-read days (what syncs wrote before recent_first_days): the same plan with it
    on as with it off, sweep included."""
    oldest = config(recent_first_days=0)
    first = sync_plan(oldest, ExportState(), TODAY).state
    state = first.completed(TODAY, ms(TODAY) + 3_600_000).settled(oldest)
    state = parse_state(state.to_dict(), now=dt.datetime(2026, 6, 3, tzinfo=dt.UTC))
    for day in (TODAY + ONE_DAY, TODAY + 40 * ONE_DAY):
        assert sync_plan(config(), state, day) == sync_plan(oldest, state, day)
        assert len(sync_plan(config(), state, day).sweep) == 2


# -- a model of syncs ------------------------------------------------------------------------------------------
# Mixpanel as events (time in ms, processing time); each window of a sync (handed out by the real plan.Plan,
# from the real sync_plan, in the order fetch_in_order keeps) returns what it covers that was processed by the
# moment it was asked (and after its processed_after_ms); a window past twice the target is answered TooLarge;
# the state moves by the real state.Checkpoints; a kill lands inside a window's records.


@dataclasses.dataclass
class Sync:
    windows: list[Window]
    records: list[int]  # event indexes, in the order emitted
    since_state: list[int]  # what was emitted after the last STATE
    state: ExportState  # the last STATE written (the platform's)
    complete_at: int | None  # windows read when the fresh days' complete STATE was written


def model_sync(cfg, state, events, now, kill=None, asked_step=1000):
    """One sync at `now` (ms); `kill` = (window number, share of its records emitted)."""
    today = D(1970, 1, 1) + dt.timedelta(days=now // MS_DAY)
    sync = sync_plan(cfg, state, today)
    plan = Plan(sync, cfg, lambda: 10**6, logging.getLogger("model"))
    checkpoints = Checkpoints(sync.state, True, cfg, plan)
    out = Sync([], [], [], sync.state, None)
    queue: collections.deque[Window] = collections.deque()
    by_day = collections.defaultdict(list)
    for index, (time_ms, _) in enumerate(events):
        by_day[time_ms // MS_DAY].append(index)
    number = 0
    while queue or (window := plan.next()) is not None:
        window = queue.popleft() if queue else window
        asked = now + number * asked_step
        days = range((window.first_day - D(1970, 1, 1)).days, (window.last_day - D(1970, 1, 1)).days + 1)
        found = [i for day in days for i in by_day.get(day, ()) if covers(window, events[i], asked)]
        if len(found) > 2 * cfg.window_target_events and not window.whole:
            queue.extendleft(reversed(plan.replace(window, TooLarge("big")) or []))
            number += 1
            continue
        plan.observe(window, SimpleNamespace(head=None, events=len(found), size=0))
        out.windows.append(window)
        if kill is not None and number >= kill[0]:
            cut = found[: int(len(found) * kill[1])]
            out.records += cut
            out.since_state += cut
            return out
        out.records += found
        out.since_state += found
        for blob in checkpoints.after(window, asked - 250):
            out.state, out.since_state = parse_state(blob, now=at(asked + 60_000)), []
            if out.complete_at is None and out.state.synced_through == sync.end:
                out.complete_at = len(out.windows)
        number += 1
    for blob in checkpoints.final():
        out.state, out.since_state = parse_state(blob, now=at(now + number * asked_step + 60_000)), []
    return out


def covers(window: Window, event: tuple[int, int | None], asked: int) -> bool:
    time_ms, processed = event
    day = D(1970, 1, 1) + dt.timedelta(days=time_ms // MS_DAY)
    if not window.first_day <= day <= window.last_day or (processed is not None and processed > asked):
        return False
    if window.time_from is not None and time_ms < window.time_from * 1000:
        return False
    if window.time_to is not None and time_ms >= window.time_to * 1000:
        return False
    mark = window.mark_on(day)
    return mark is None or (processed is not None and processed > mark)


def at(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


NOW1 = ms(TODAY) + 6 * 3_600_000 + 60_000  # the first sync: 06:01 of TODAY


def history_events(seed: int, first: dt.date = START, last: dt.date = TODAY, per_day: int = 12) -> list:
    """Events on every day, a few days heavy (read in pieces at a target of 30), processed within minutes,
    1% without a processing time; none after 05:00 of `last`, and none processed within an hour of the
    first sync (what is processed while a sync runs is the documented other source of duplicates)."""
    rng = random.Random(seed)
    events = []
    day = first
    while day <= last:
        count = per_day * (6 if rng.random() < 0.1 else 1)
        span = 5 * 3_600_000 if day == last else MS_DAY
        for _ in range(count):
            t = ms(day) + rng.randrange(span)
            processed = t + rng.randrange(600_000)
            if abs(processed - NOW1) < 3_600_000:
                processed = NOW1 + 3_600_000 + rng.randrange(1000)
            events.append((t, None if rng.random() < 0.01 else processed))
        day += ONE_DAY
    return events


def test_given_a_first_sync_of_90_days_when_read_then_the_last_7_days_first_then_newest_first():
    """The recent 7 days' windows come (and are checkpointed, complete) before any older one; the backfill's
    windows go back day by day; each STATE after a backfill window holds its days checked at the watermark."""
    cfg = config(window_target_events=30)
    events = history_events(1)
    sync = model_sync(cfg, ExportState(), events, NOW1)
    recent = TODAY - 6 * ONE_DAY
    fresh = [w for w in sync.windows if w.fresh]
    assert sync.windows[: len(fresh)] == fresh and all(w.first_day >= recent for w in fresh)
    assert sync.complete_at == len(fresh)
    days = [w.first_day for w in sync.windows[len(fresh):]]
    assert days == sorted(days, reverse=True) and days[-1] == START
    assert all(w.backfill for w in sync.windows[len(fresh):])
    assert any(not w.ends_day for w in sync.windows if w.backfill)  # heavy days came in pieces
    visible = (i for i, (_, processed) in enumerate(events) if processed is None or processed <= NOW1)
    assert collections.Counter(sync.records) == collections.Counter(visible)
    watermark = sync.state.watermark_ms
    assert sync.state.history_from == START and all(mark == watermark for _, mark in sync.state.history)


def kill_points(cfg, events, parity: int) -> list[tuple[int, float]]:
    """Every other window of the whole sync (those of the given parity), none, half or all of its records
    emitted in turn (n % 3 still takes each share)."""
    whole = model_sync(cfg, ExportState(), events, NOW1)
    return [(n, (0.0, 0.5, 1.0)[n % 3]) for n in range(parity, len(whole.windows), 2)]


@pytest.mark.parametrize("seed", [2, 3])
def test_given_a_first_sync_killed_anywhere_when_resumed_then_the_union_is_the_truth_and_duplicates_are_the_cut(seed):
    """kill -9 inside any window's records (none, half or all of them emitted, in turn) of a first sync of 90 days,
    then a sync a day later: every event exactly once, except those emitted after the killed sync's last
    STATE (the cut window, or the pieces of its day), which come twice. Seed 2 kills in the even windows,
    seed 3 in the odd ones: every window number is cut in one of the two histories."""
    cfg = config(window_target_events=30)
    events = history_events(seed)
    later = NOW1 + MS_DAY
    truth = collections.Counter(i for i, e in enumerate(events) if e[1] is None or e[1] <= later)
    for point in kill_points(cfg, events, parity=seed % 2):
        killed = model_sync(cfg, ExportState(), events, NOW1, kill=point)
        resumed = model_sync(cfg, killed.state, events, later)
        union = collections.Counter(killed.records) + collections.Counter(resumed.records)
        assert set(union) == set(truth), point
        assert union - truth == collections.Counter(killed.since_state), point
        assert resumed.windows[0].fresh and not resumed.state.unread_days((START, TODAY))


def test_given_a_backfill_killed_when_the_next_syncs_run_then_new_days_first_late_arrivals_of_unread_days_whole():
    """Killed halfway through the backfill; a day later, events of the new day and late arrivals into days
    not yet backfilled (and into backfilled ones, weeks late): the next sync reads the new day before the
    backfill, which goes on newest first from where it stopped; the very late ones come with the sweep."""
    cfg = config(window_target_events=30, history_sweep_requests=2)
    events = history_events(4, last=TODAY + ONE_DAY)
    whole = model_sync(cfg, ExportState(), events, NOW1)
    killed = model_sync(cfg, ExportState(), events, NOW1, kill=(len(whole.windows) // 2, 0.5))
    unread = killed.state.unread_days((START, TODAY))
    assert 10 < unread < 83
    reached = killed.state.history[0][0] + ONE_DAY  # the oldest day the backfill had read
    arrival = NOW1 + 2 * 3_600_000
    late_unread = (ms(reached - 3 * ONE_DAY) + 5, arrival)
    late_read = (ms(reached + 3 * ONE_DAY) + 5, arrival)
    events = [*events, late_unread, late_read]
    now, delivered, syncs = NOW1 + MS_DAY + 7 * 3_600_000, collections.Counter(killed.records), []
    for _ in range(4):
        syncs.append(model_sync(cfg, syncs[-1].state if syncs else killed.state, events, now))
        delivered += collections.Counter(syncs[-1].records)
        now += MS_DAY
    second = syncs[0]
    new_day = [w for w in second.windows if w.fresh and w.processed_after_ms is None]
    assert new_day and all(w.first_day == TODAY + ONE_DAY for w in new_day)
    backfill = [w.first_day for w in second.windows if w.backfill]
    assert second.windows.index(new_day[-1]) < min(i for i, w in enumerate(second.windows) if w.backfill)
    assert backfill == sorted(backfill, reverse=True) and backfill[0] < reached and backfill[-1] == START
    assert delivered[len(events) - 2] == 1 and delivered[len(events) - 1] == 1
    assert len(events) - 2 in second.records  # with its day, by the backfill
    truth = collections.Counter(range(len(events)))
    assert set(delivered) == set(truth) and delivered - truth == collections.Counter(killed.since_state)


@pytest.mark.parametrize("moved", ["later", "earlier", "later_then_back"])
def test_given_start_date_moved_during_the_backfill_when_synced_on_then_nothing_lost_or_doubled(moved):
    """start_date 30 days later, 10 days earlier, or 30 days later and back, after a kill halfway through
    the backfill: the next syncs deliver exactly the days from the start_date they end with, once each."""
    cfg = config(window_target_events=30)
    earliest = START - 10 * ONE_DAY
    events = history_events(5, first=earliest)
    whole = model_sync(cfg, ExportState(), events, NOW1)
    killed = model_sync(cfg, ExportState(), events, NOW1, kill=(len(whole.windows) // 2, 0.0))
    starts = {"later": [START + 30 * ONE_DAY], "earlier": [earliest],
              "later_then_back": [START + 30 * ONE_DAY, START]}[moved]
    state, delivered, now = killed.state, collections.Counter(killed.records), NOW1 + 3_600_000
    for start in starts:
        run = model_sync(config(window_target_events=30, start_date=start.isoformat()), state, events, now)
        state, now = run.state, now + 3_600_000
        delivered += collections.Counter(run.records)
    first = starts[-1]
    assert state.unread_days((first, TODAY)) == 0
    expected = collections.Counter(
        i for i, (t, p) in enumerate(events) if ms(first) <= t and (p is None or p <= now)
    )
    before, since = ms(first), killed.since_state  # emitted before the new start; after the last STATE
    expected += collections.Counter(i for i in killed.records if events[i][0] < before)
    expected += collections.Counter(i for i in since if events[i][0] >= before)
    assert delivered == expected


def test_given_mixpanels_today_behind_on_a_first_sync_when_nothing_fresh_is_read_then_no_backfill_and_a_state_we_read():
    """recent_first_days 1 and Mixpanel's today a day behind: the only fresh day is past its today, so the
    sync reads nothing; the backfill waits for the next sync and the state written reads back."""
    cfg = config(recent_first_days=1)
    sync = sync_plan(cfg, ExportState(), TODAY)
    plan = Plan(sync, cfg, lambda: 60, logging.getLogger("model"))
    checkpoints = Checkpoints(sync.state, True, cfg, plan)
    window = plan.next()
    assert window == Window(TODAY, TODAY)
    assert plan.replace(window, DateAfterToday("to_date cannot be later than today")) == []
    assert plan.next() is None
    (blob,) = checkpoints.final()
    state = parse_state(blob, now=at(ms(TODAY) + 3_600_000))
    assert state.reached() is None and sync_plan(cfg, state, TODAY).backfill == sync.backfill


def test_given_a_backfill_when_logged_then_days_requests_and_hours_at_the_budget(caplog):
    """The backfill's log lines say its days, and about how many requests and hours it needs; the ESTIMATE
    counts its records."""
    cfg = config(window_target_events=30, requests_per_hour=60)
    sync = sync_plan(cfg, ExportState(), TODAY)
    with caplog.at_level(logging.INFO, logger="model"):
        plan = Plan(sync, cfg, lambda: 60, logging.getLogger("model"))
        window = plan.next()
        plan.observe(window, SimpleNamespace(head=None, events=7 * 20, size=0))  # 20 a day
        backfill = plan.next()
        assert backfill is not None and backfill.backfill and backfill.last_day == TODAY - 7 * ONE_DAY
    assert "Backfill: 83 days of history were never read" in caplog.text
    assert "backfill: 83 days of history left, about 83 requests (1.4 hours at 60 an hour)" in caplog.text
    assert plan.estimate() == 90 * 20
    assert plan.backfill_left() == "backfill: 82 days of history left, about 82 requests (1.4 hours at 60 an hour)"


# -- the simulation of a billion events a year (bench/backfill.py) ------------------------------------------------


def test_given_a_billion_events_a_year_and_two_years_when_simulated_then_recent_days_in_an_hour_history_as_before():
    """Defaults, 60 requests an hour, 2.74M events a day: the last 30 days are complete about an hour into the
    first sync (not after 36 hours, oldest first); the whole history takes as long and as many requests either
    way, killed at hour 12 or not; then the daily syncs cost what they did."""
    from bench.backfill import Even, config_of, new_connection

    start = dt.datetime(2026, 6, 1, 6, tzinfo=dt.UTC)
    project = Even(1e9 / 365 / 10_000, 500)  # scaled down with the target: the same requests
    first = start.date() - dt.timedelta(days=730)
    outcomes = {}
    for days in (30, 0):
        config = config_of(first, recent_first_days=days, window_target_events=100)
        for kill in (None, 12.0):
            outcomes[days, kill] = new_connection(config, project, int(start.timestamp() * 1000), kill_after_hours=kill)
            print(days, kill, outcomes[days, kill])
    recent, oldest = outcomes[30, None], outcomes[0, None]
    assert recent.recent_hours <= 1.1 and oldest.recent_hours == oldest.history_hours >= 35
    assert abs(recent.history_hours - oldest.history_hours) < 1 and abs(recent.requests - oldest.requests) <= 10
    assert 2_190 <= recent.requests <= 2_250 and recent.syncs == 1
    killed = outcomes[30, 12.0]
    assert killed.syncs == 2 and killed.recent_hours == recent.recent_hours and killed.requests - recent.requests < 10
    assert recent.daily_requests[1:] == oldest.daily_requests[1:]


def test_given_an_attribution_window_longer_than_the_recent_days_when_killed_twice_then_duplicates_are_the_cuts():
    """attribution_window 20, recent_first_days 7: a resumed sync re-reads history days (some never read,
    whole) as fresh ones; killed again inside them, its checkpoints had already marked them checked, so the
    next sync reads them no third time: the duplicates are exactly what each kill cut."""
    cfg = config(window_target_events=30, attribution_window=20)
    events = history_events(6)
    later = NOW1 + MS_DAY
    truth = collections.Counter(i for i, e in enumerate(events) if e[1] is None or e[1] <= later + 3_600_000)
    whole = model_sync(cfg, ExportState(), events, NOW1)
    for number in range(0, len(whole.windows), 4):
        killed = model_sync(cfg, ExportState(), events, NOW1, kill=(number, 0.5))
        for again in (1, 3):
            resumed = model_sync(cfg, killed.state, events, later, kill=(again, 0.5))
            last = model_sync(cfg, resumed.state, events, later + 3_600_000)
            union = collections.Counter(killed.records) + collections.Counter(resumed.records)
            union += collections.Counter(last.records)
            assert set(union) == set(truth), (number, again)
            cuts = collections.Counter(killed.since_state) + collections.Counter(resumed.since_state)
            assert union - truth == cuts, (number, again)


@settings(max_examples=examples(20), deadline=None)
@given(
    seed=st.integers(0, 2**32), recent=st.sampled_from([0, 1, 3, 30]), attribution=st.sampled_from([0, 5, 20]),
    window=st.sampled_from([3, 30]), target=st.sampled_from([10, 100]), kills=st.booleans(),
)
def test_given_any_settings_kills_and_late_arrivals_when_synced_on_then_nothing_lost_and_without_kills_once(
    seed, recent, attribution, window, target, kills
):
    """Six daily syncs (half of them killed anywhere in their first windows, when `kills`), 30 events arriving
    between them at any lateness, then syncs that sweep everything: every event is delivered; without kills,
    exactly once. (Events processed while a sync runs are left out: their duplicates are documented.)"""
    rng = random.Random(seed)
    cfg = config(window_target_events=target, attribution_window=attribution, date_window_size=window,
                 recent_first_days=recent)
    starts = [NOW1 + k * MS_DAY + rng.randrange(12 * 3_600_000) for k in range(6)]
    events = history_events(seed % 1000, last=TODAY + 6 * ONE_DAY, per_day=4)
    for _ in range(30):
        k = rng.randrange(1, 6)
        arrival = max(starts[k] - rng.randrange(1, 3_600_000), starts[k - 1] + 3_600_000)
        events.append((ms(START) + rng.randrange(arrival - ms(START)), arrival))
    events = [(t, p) for t, p in events if p is None or all(not s - 1000 <= p <= s + 10**7 for s in starts)]
    state, delivered = ExportState(), collections.Counter()
    for k, now in enumerate(starts):
        kill = (rng.randrange(8), rng.choice([0.0, 0.5, 1.0])) if kills and k < 5 and rng.random() < 0.5 else None
        run = model_sync(cfg, state, events, now, kill=kill)
        state, delivered = run.state, delivered + collections.Counter(run.records)
    sweeping = config(window_target_events=target, attribution_window=attribution, date_window_size=window,
                      recent_first_days=recent, history_sweep_requests=60)
    for day in range(1, 5):
        run = model_sync(sweeping, state, events, starts[-1] + day * MS_DAY)
        state, delivered = run.state, delivered + collections.Counter(run.records)
    truth = collections.Counter(i for i, (t, _) in enumerate(events) if t >= ms(START))
    assert set(delivered) == set(truth)
    if not kills:
        assert delivered == truth
