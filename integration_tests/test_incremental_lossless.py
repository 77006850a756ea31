"""Lossless incremental sync: late arrivals, kill -9 anywhere, resumes, any response order.

Every kill, the module's two shared syncs and the clocked run go through the real CLI; the other syncs run
the console script's `run` in this process (harness.run_in_process), which asserts the same messages.

The fake's ingestion clock decides what Mixpanel shows: an event is exported once its processing time has
passed. Late arrivals are events whose processing time lies after a sync; the tests move the clock past them.
The connector runs at the fake's clock (harness.connector_clock), as a real project's clock and Mixpanel's agree, and
the fakes' clocks are set from TODAY, never past 22:00 of it: so no result depends on the hour the tests run.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import random
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from fake_mixpanel import FakeEvent, FakeMixpanel, Fault, generate_events
from integration_tests.conftest import TODAY
from integration_tests.harness import (
    INCREMENTAL,
    Run,
    Stop,
    assert_no_secrets,
    config_for,
    event_key,
    make_fake,
    nth_state,
    read_and_kill,
    record_keys,
    run_cli,
    run_in_process,
    state_input,
    truth,
)

DAY = dt.timedelta(days=1)
MS_PER_DAY = 86_400_000
FIRST = TODAY - 8 * DAY  # events happen on the eight days before today
RECENT = TODAY - 4 * DAY  # "the last four days", where late arrivals land
LATE_FRACTION = 0.3
WATERMARK_KEYS = ("watermark_ms", "watermark")

Keys = collections.Counter[str]


def day_start_ms(day: dt.date) -> int:
    """The first UTC millisecond of a day."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1000)


def wall_ms(ahead_s: float = 60) -> int:
    """A fake clock a little ahead of real time, but never past 22:00 of TODAY: the connector runs at the
    fake's clock (harness.connector_clock), and the late arrivals and clock moves of a test fit in the 2 h left,
    so a test's today is the module's TODAY even when it runs near or after midnight UTC."""
    return min(int((time.time() + ahead_s) * 1000), day_start_ms(TODAY) + 22 * 3_600_000)


def key(event: FakeEvent) -> str:
    """The record key (harness.event_key) an event comes out as."""
    return event_key(event.name, event.export_properties(time_in_ms=True))


def keys(events: Iterable[FakeEvent]) -> set[str]:
    """Record keys of several events."""
    return {key(e) for e in events}


def day_of(event: FakeEvent) -> dt.date:
    """An event's UTC date, the one a UTC project exports it under."""
    return dt.datetime.fromtimestamp(event.time_ms / 1000, dt.UTC).date()


def with_late_arrivals(
    events: Iterable[FakeEvent], after_ms: int, fraction: float = LATE_FRACTION, seed: int = 5
) -> tuple[list[FakeEvent], list[FakeEvent]]:
    """`fraction` of the last four days' events re-timed to be processed 1 s to 30 minutes after `after_ms`
    (a sync's state may be at most an hour ahead of the connector's clock, and the fake's clock moves to
    the last of them while the connector's does not)."""
    rng = random.Random(seed)
    out, late = [], []
    for event in events:
        if day_of(event) >= RECENT and event.processing_ms is not None and rng.random() < fraction:
            event = dataclasses.replace(event, processing_ms=after_ms + 1000 + rng.randrange(MS_PER_DAY // 48))
            late.append(event)
        out.append(event)
    return out, late


@dataclasses.dataclass
class World:
    """A fake with late arrivals: sync 1 runs at `t1`, every late event is visible from `t2`."""

    fake: FakeMixpanel
    t1: int
    t2: int
    late: list[FakeEvent]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """An incremental config over the events' days, in two-day windows, without the history sweep
        (test_sweep.py covers it): these tests count the windows of the recent days."""
        overrides.setdefault("history_sweep_requests", 0)
        return config_for(self.fake, start_date=FIRST.isoformat(), date_window_size=2, **overrides)

    def truth(self, last: dt.date = TODAY, visible_at_ms: int | None = None) -> Keys:
        """What the export holds from FIRST to `last`."""
        return truth(self.fake, FIRST, last, visible_at_ms)


@functools.lru_cache(maxsize=1)
def scenario() -> tuple[int, tuple[FakeEvent, ...], tuple[FakeEvent, ...]]:
    """The module's one history, so tests can share sync 1: its clock t1 (5 minutes ahead of real time when
    first asked), 6,000 events over the eight days before today (about 600 KB of records a day), the late ones."""
    t1 = wall_ms(300)
    events, late = with_late_arrivals(generate_events(6000, FIRST, 8, seed=31), t1)
    return t1, tuple(events), tuple(late)


def make_world(order: str = "shuffled") -> World:
    """A started fake at clock t1 whose late events all lie in (t1, t2)."""
    t1, events, late = scenario()
    fake = make_fake(list(events), now_ms=t1, order=order)
    return World(fake, t1, max(e.processing_ms or 0 for e in late) + 1000, list(late))


@pytest.fixture
def world() -> Iterable[World]:
    """A fresh late-arrival world per test."""
    made = make_world()
    yield made
    made.fake.stop()


def read(tmp_path: Path, config: dict[str, Any], state: dict[str, Any] | None = None, cli: bool = False) -> Run:
    """One incremental read that must succeed and leak no secret: in this process (harness.run_in_process,
    2-3 s of imports less a run), or with `cli` through the real CLI (sync 1 and 2 of two_syncs, the
    clocked run; every kill is a real CLI run too)."""
    runner = run_cli if cli else run_in_process
    run = runner(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state) if state else None)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert_no_secrets(run.stdout, run.stderr)
    return run


def last_state(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stream state of the last STATE among `messages`, as a platform would keep it."""
    states = [m["state"]["stream"]["stream_state"] for m in messages if m.get("type") == "STATE"]
    return states[-1] if states else None


def assert_no_duplicates_within(run: Run) -> None:
    """A sync never emits the same event twice."""
    counted = record_keys(run.records)
    assert not [k for k, n in counted.items() if n > 1]
    assert len({r["event_id"] for r in run.records}) == len(run.records)


# -- kill -9 -----------------------------------------------------------------------------------------------------

def kinds(run: Run) -> list[str]:
    """The message types a run printed, RECORD runs collapsed, to say where a kill landed."""
    out: list[str] = []
    for message in run.messages:
        kind = message["type"]
        if kind == "STATE" or (kind == "RECORD" and out[-1:] != ["RECORD"]):
            out.append(kind)
    return out


def first_record_after_states(n: int) -> Stop:
    """Stop at the first RECORD printed after exactly n STATEs: inside a window's records."""
    return lambda messages: messages[-1]["type"] == "RECORD" and sum(m["type"] == "STATE" for m in messages) == n


def hold_request(fake: FakeMixpanel, number_in_run: int) -> None:
    """Make the run's n-th export request hang, so a kill lands while that window is being fetched."""
    base = len(fake.export_requests)
    fake.inject_when(lambda r: r.number == base + number_in_run, Fault("slow", delay_s=30))


def kill_at(tmp_path: Path, world: World, config: dict[str, Any], state: dict[str, Any] | None, point: str) -> Run:
    """A sync killed at one of the named points; asserts the kill landed where the name says."""
    if point == "before_first_state":
        killed = read_and_kill(tmp_path, config, state, first_record_after_states(0))
        assert killed.returncode == -signal.SIGKILL and kinds(killed) == ["RECORD"]
    elif point == "after_first_state":
        hold_request(world.fake, 2)
        killed = read_and_kill(tmp_path, config, state, nth_state(1))
        assert killed.returncode == -signal.SIGKILL and kinds(killed) == ["RECORD", "STATE"]
    else:
        assert point == "mid_window"
        killed = read_and_kill(tmp_path, config, state, first_record_after_states(1))
        assert killed.returncode == -signal.SIGKILL and kinds(killed) == ["RECORD", "STATE", "RECORD"]
    world.fake.clear_faults()
    return killed


def cut_after_last_record(whole: Run) -> Run:
    """What a kill right after the last record would have left: no checkpoint after it.

    (One write apart in a real run, too close to aim a signal at, so the finished run is cut instead.)
    """
    last_record = max(i for i, m in enumerate(whole.messages) if m["type"] == "RECORD")
    killed = Run(-signal.SIGKILL, "", "", whole.messages[: last_record + 1])
    assert kinds(killed)[-1] == "RECORD" and len(killed.states) <= len(whole.states) - 1
    return killed


KILL_POINTS = ["before_first_state", "after_first_state", "mid_window", "after_last_record"]
FIRST_SYNC_KILL_POINTS = ["before_first_state", "mid_window", "after_last_record"]  # + the double kill below


# -- 1. two syncs around late arrivals ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_syncs(tmp_path_factory: pytest.TempPathFactory) -> Iterable[tuple[World, Run, Run]]:
    """Sync 1 at t1, then sync 2 from its last STATE once every late event has arrived (shared, read-only)."""
    world = make_world()
    tmp = tmp_path_factory.mktemp("two_syncs")
    first = read(tmp, world.config(), cli=True)
    world.fake.now_ms = world.t2
    second = read(tmp, world.config(), first.states[-1], cli=True)
    yield world, first, second
    world.fake.stop()


def test_given_late_arrivals_when_synced_twice_then_union_is_exactly_the_export(two_syncs):
    """Both syncs together hold every event; the only events in both are those processed between sync 1's
    watermark (its earliest request, rounded down) and its clock, on days sync 2 re-reads."""
    world, first, second = two_syncs
    one, two = record_keys(first.records), record_keys(second.records)
    assert_no_duplicates_within(first)
    assert_no_duplicates_within(second)
    assert set(one) | set(two) == set(world.truth())
    watermark = first.states[-1]["watermark_ms"]
    assert watermark <= world.t1
    reread = min(r.params["from_date"] for r in world.fake.export_requests[-3:])
    straddling = keys(
        e
        for e in world.fake.events
        if e.processing_ms and watermark < e.processing_ms <= world.t1 and day_of(e).isoformat() >= reread
    )
    assert set(one) & set(two) == straddling
    assert len(straddling) <= 0.01 * len(world.truth())


def test_given_late_arrivals_when_sync_one_ran_then_it_missed_exactly_the_late_events(two_syncs):
    """Sanity of the setup: about 30% of the last four days arrive late, and sync 1 lacks exactly those."""
    world, first, _ = two_syncs
    recent = [e for e in world.fake.events if day_of(e) >= RECENT]
    assert 0.25 <= len(world.late) / len(recent) <= 0.35
    assert record_keys(first.records) == world.truth(visible_at_ms=world.t1)
    assert set(world.truth()) - set(record_keys(first.records)) == keys(world.late)


def test_given_late_arrivals_when_second_sync_then_it_reads_days_late_events_can_reach_filtered(two_syncs):
    """Sync 2 asks only for events processed after sync 1's watermark, from five days before it."""
    world, first, second = two_syncs
    watermark = first.states[-1]["watermark_ms"]
    requests = world.fake.export_requests[-3:]
    assert sorted(r.params["from_date"] for r in requests) == [(TODAY - n * DAY).isoformat() for n in (5, 3, 1)]
    assert all(f'number(properties["mp_processing_time_ms"]) > {watermark}' in r.params["where"] for r in requests)
    assert keys(world.late) <= set(record_keys(second.records))
    final = second.states[-1]
    assert final["synced_through"] == TODAY.isoformat() and "in_progress" not in final
    assert watermark < final["watermark_ms"] <= world.t2


def test_given_events_without_processing_time_when_synced_twice_then_delivered_once(two_syncs):
    """Events lacking mp_processing_time_ms come with the whole-day read and are not repeated by re-reads."""
    world, first, second = two_syncs
    undated = keys(e for e in world.fake.events if e.processing_ms is None)
    assert undated and undated <= set(record_keys(first.records))
    assert not undated & set(record_keys(second.records))


# -- 2. kill -9 anywhere, then resume ------------------------------------------------------------------------


@pytest.mark.parametrize("point", FIRST_SYNC_KILL_POINTS)
def test_given_first_sync_killed_when_resumed_then_every_event_delivered(tmp_path, world, two_syncs, point):
    """A first sync killed at any point and resumed from the last STATE it printed delivers everything."""
    config = world.config(max_concurrent_requests=1)
    if point == "after_last_record":
        killed = cut_after_last_record(two_syncs[1])
    else:
        killed = kill_at(tmp_path, world, config, None, point)
    resumed = read(tmp_path, config, last_state(killed.messages))
    delivered = record_keys(killed.records) + record_keys(resumed.records)
    assert set(delivered) == set(world.truth(visible_at_ms=world.t1))
    assert_no_duplicates_within(resumed)
    assert resumed.states[-1]["synced_through"] == TODAY.isoformat()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_given_incremental_sync_with_late_data_killed_when_resumed_then_every_event_delivered(
    tmp_path, world, two_syncs, point
):
    """Sync 2 (late arrivals to fetch) killed at any point: sync 1 + killed + resumed hold every event."""
    _, first, second = two_syncs
    config = world.config(max_concurrent_requests=1)
    world.fake.now_ms = world.t2
    if point == "after_last_record":
        killed = cut_after_last_record(second)
    else:
        killed = kill_at(tmp_path, world, config, first.states[-1], point)
    resumed = read(tmp_path, config, last_state(killed.messages) or first.states[-1])
    delivered = record_keys(first.records) + record_keys(killed.records) + record_keys(resumed.records)
    assert set(delivered) == set(world.truth())
    assert_no_duplicates_within(resumed)
    assert resumed.states[-1]["watermark_ms"] > first.states[-1]["watermark_ms"]


def test_given_sync_killed_and_its_resume_killed_when_resumed_again_then_every_event_delivered(tmp_path, world):
    """Killed after four windows, its resume killed after one (still behind): the last resume brings the
    rest, re-reading the first kill's days for late arrivals only."""
    config = world.config(max_concurrent_requests=1)
    hold_request(world.fake, 5)
    killed = read_and_kill(tmp_path, config, None, nth_state(4))
    world.fake.clear_faults()
    reach = killed.states[-1]["in_progress"]
    assert killed.returncode == -signal.SIGKILL and reach["through"] == (TODAY - DAY).isoformat()
    hold_request(world.fake, 2)
    again = read_and_kill(tmp_path, config, killed.states[-1], nth_state(1))
    world.fake.clear_faults()
    assert again.returncode == -signal.SIGKILL and again.states[-1]["in_progress"]["through"] == reach["through"]
    assert again.states[-1]["in_progress"]["watermark_ms"] <= reach["watermark_ms"]
    world.fake.reset_requests()
    resumed = read(tmp_path, config, again.states[-1])
    delivered = record_keys(killed.records) + record_keys(again.records) + record_keys(resumed.records)
    assert set(delivered) == set(world.truth(visible_at_ms=world.t1))
    asked = [(r.params["from_date"], "where" in r.params) for r in world.fake.export_requests]
    assert asked == [((TODAY - n * DAY).isoformat(), n > 0) for n in (5, 3, 1, 0)]


# -- 3. response order ---------------------------------------------------------------------------------------


def without_watermarks(state: dict[str, Any]) -> dict[str, Any]:
    """A state with its clock-dependent watermark fields removed."""
    out = {k: v for k, v in state.items() if k not in WATERMARK_KEYS}
    if "in_progress" in out:
        out["in_progress"] = without_watermarks(out["in_progress"])
    if "history" in out:
        out["history"] = {**out["history"], "checked": [without_watermarks(c) for c in out["history"]["checked"]]}
    return out


def test_given_any_response_order_when_synced_twice_then_same_records_and_states(tmp_path, two_syncs):
    """Time-ordered and reverse answers give the records and checkpoints the shuffled ones gave."""

    def outcome(first: Run, second: Run, late: set[str]) -> tuple[Keys, Keys, list[dict[str, Any]]]:
        arrived = [r for r in second.records if event_key(r["event"], r["properties"]) in late]
        states = [without_watermarks(s) for s in first.states + second.states]
        return record_keys(first.records), record_keys(arrived), states

    shuffled, first, second = two_syncs
    expected = outcome(first, second, keys(shuffled.late))
    for order in ("time", "reverse"):
        world = make_world(order)
        try:
            first = read(tmp_path, world.config())
            world.fake.now_ms = world.t2
            second = read(tmp_path, world.config(), first.states[-1])
        finally:
            world.fake.stop()
        assert outcome(first, second, keys(world.late)) == expected
        assert set(record_keys(first.records)) | set(record_keys(second.records)) == set(world.truth())


# -- 5. the corners: events processed during a sync, end_date, attribution window -------------------------------


def test_given_events_processed_while_a_sync_runs_when_next_sync_then_all_delivered(tmp_path):
    """Events processed during sync 2: after their window was read (sync 3 brings them), while their window
    is asked (sync 2 has them, sync 3 repeats them), and before their window is asked."""
    t1 = wall_ms()
    events = list(generate_events(800, FIRST, 8, seed=41))
    fake = make_fake(events, now_ms=t1)
    try:
        config = config_for(
            fake, start_date=FIRST.isoformat(), date_window_size=2, max_concurrent_requests=1, history_sweep_requests=0
        )
        first = read(tmp_path, config)
        t2 = t1 + 1_800_000  # states may lie at most an hour ahead of the connector's clock
        during = {  # processed 30 s after sync 2's clock jumps forward, which it does as window 2 is asked
            day: FakeEvent("During Sync", day_start_ms(day) + 82_800_000, {"$insert_id": f"during-{day}"}, t2 + 30_000)
            for day in (TODAY - 5 * DAY, TODAY - 3 * DAY, TODAY)
        }
        after = FakeEvent("After Sync", day_start_ms(TODAY - 3 * DAY), {"$insert_id": "after"}, t2 + 90_000)
        fake.add_events([*during.values(), after])
        fake.now_ms = t2

        def jump(request: Any) -> bool:
            if request.params.get("from_date") != (TODAY - 3 * DAY).isoformat():
                return False
            fake.now_ms = t2 + 60_000
            return True

        fake.inject_when(jump, Fault("slow", delay_s=0))
        second = read(tmp_path, config, first.states[-1])
        assert [r.params["from_date"] for r in fake.export_requests[-3:]] == [
            (TODAY - n * DAY).isoformat() for n in (5, 3, 1)
        ]
        assert set(record_keys(second.records)) == keys([during[TODAY - 3 * DAY], during[TODAY]])
        fake.now_ms = t2 + 120_000
        third = read(tmp_path, config, second.states[-1])
        assert set(record_keys(third.records)) == keys([*during.values(), after])
        union = record_keys(first.records) + record_keys(second.records) + record_keys(third.records)
        assert set(union) == set(truth(fake, FIRST, TODAY))
    finally:
        fake.stop()


def test_given_end_date_in_the_past_when_synced_twice_then_late_events_up_to_it_delivered(tmp_path, world):
    """With end_date three days ago, late arrivals up to that day come with sync 2; none after it."""
    end = TODAY - 3 * DAY
    first = read(tmp_path, world.config(end_date=end.isoformat()))
    world.fake.now_ms = world.t2
    second = read(tmp_path, world.config(end_date=end.isoformat()), first.states[-1])
    delivered = record_keys(first.records) + record_keys(second.records)
    assert set(delivered) == set(world.truth(end))
    assert second.states[-1]["synced_through"] == end.isoformat()
    assert keys(e for e in world.late if day_of(e) <= end) <= set(record_keys(second.records))


def test_given_end_date_moved_back_when_synced_then_later_days_still_get_their_late_events(
    tmp_path, world, two_syncs
):
    """Sync 2 stops at an end_date before sync 1's last day; sync 3 (no end_date) still brings the late
    events of the days sync 2 did not read, because sync 2 claims its watermark only for its own days."""
    first = two_syncs[1]
    world.fake.now_ms = world.t2
    end = TODAY - 3 * DAY
    second = read(tmp_path, world.config(end_date=end.isoformat()), first.states[-1])
    final = second.states[-1]
    assert final["synced_through"] == TODAY.isoformat() and final["in_progress"]["through"] == end.isoformat()
    third = read(tmp_path, world.config(), final)
    delivered = record_keys(first.records) + record_keys(second.records) + record_keys(third.records)
    assert set(delivered) == set(world.truth())
    assert keys(e for e in world.late if day_of(e) > end) <= set(record_keys(third.records))


def attribution_world(t1: int) -> tuple[list[FakeEvent], FakeEvent, FakeEvent]:
    """A few ordinary events, plus two processed one second after sync 1: one from 23:59:59 yesterday
    (a day late at most), one from the first second of today."""
    events = list(generate_events(300, FIRST, 8, seed=43))
    yesterday = FakeEvent("Late", day_start_ms(TODAY) - 1000, {"$insert_id": "yesterday"}, t1 + 1000)
    today = FakeEvent("Late", day_start_ms(TODAY) + 1000, {"$insert_id": "today"}, t1 + 1000)
    return events + [yesterday, today], yesterday, today


def test_given_the_connectors_clock_set_days_back_when_read_then_that_day_is_its_today(tmp_path):
    """The harness's clock (integration_tests/clocked.py) reaches the connector: at 23:59 UTC three days
    back it syncs through that day and asks for no later one, whatever the hour the test runs."""
    now_ms = day_start_ms(TODAY - 2 * DAY) - 60_000
    fake = make_fake(list(generate_events(200, FIRST, 8, seed=43)), now_ms=now_ms)
    try:
        run = read(tmp_path, config_for(fake, start_date=FIRST.isoformat(), history_sweep_requests=0), cli=True)
        assert run.states[-1]["synced_through"] == (TODAY - 3 * DAY).isoformat()
        assert max(r.params["to_date"] for r in fake.export_requests) == (TODAY - 3 * DAY).isoformat()
        assert set(record_keys(run.records)) == set(truth(fake, FIRST, TODAY - 3 * DAY, now_ms))
    finally:
        fake.stop()


def test_given_small_attribution_windows_when_event_arrives_within_them_then_delivered(tmp_path):
    """attribution_window 0 re-reads the watermark's day; 1 also the day before it, so an event from just
    before midnight processed after the sync is not lost."""
    t1 = wall_ms()
    events, yesterday, today = attribution_world(t1)
    fake = make_fake(events, now_ms=t1)
    try:
        for attribution, expected in ((0, [today]), (1, [yesterday, today])):
            config = config_for(  # one-day blocks: the recent days are exactly those late events can reach
                fake, start_date=FIRST.isoformat(), attribution_window=attribution,
                date_window_size=attribution + 2, history_sweep_requests=0,
            )
            fake.now_ms = t1
            first = read(tmp_path, config)
            assert not {key(yesterday), key(today)} & set(record_keys(first.records))
            fake.now_ms = t1 + 60_000
            fake.reset_requests()
            second = read(tmp_path, config, first.states[-1])
            assert set(record_keys(second.records)) == keys(expected)
            first_asked = min(r.params["from_date"] for r in fake.export_requests)
            assert first_asked == (TODAY - attribution * DAY).isoformat()
    finally:
        fake.stop()
