"""Recent days first against the fake (kills as real CLI runs): a first sync of 90 days, recent_first_days 7.

The window target is small (window_target_events 100; ~15 events a day, ~180 on the recent days, one old day
of 300), so that the recent days come in pieces and the backfill in a few dozen volume-sized windows, one day of
them in pieces, as a project of billions would at the default target. One first sync, an oldest-first one
and a kill in the backfill are run once for the module; each test reads them, and those that move a clock or
add events get a fake of their own.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from fake_mixpanel import FakeEvent, FakeMixpanel, Fault, generate_events
from integration_tests.conftest import TODAY
from integration_tests.harness import (
    Run,
    Stop,
    config_for,
    event_key,
    make_fake,
    read_and_kill,
    record_keys,
    truth,
)
from integration_tests.test_incremental_lossless import day_start_ms, last_state, read

DAY = dt.timedelta(days=1)
FIRST = TODAY - 90 * DAY  # events on the 90 days before today
RECENT = TODAY - 6 * DAY  # recent_first_days 7: TODAY-6..TODAY come first
HEAVY = TODAY - 40 * DAY  # 300 events: the backfill reads it in pieces
TARGET = 100


def day_of(record: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(record["time"][:10])


def config(fake: FakeMixpanel, **overrides: Any) -> dict[str, Any]:
    """Volume-sized windows (date_window_size 30) at a small target, two downloads at once."""
    settings = {"start_date": FIRST.isoformat(), "date_window_size": 30, "window_target_events": TARGET,
                "recent_first_days": 7, "max_concurrent_requests": 2}
    return config_for(fake, **{**settings, **overrides})


def requested(fake: FakeMixpanel) -> list[tuple[str, str, str]]:
    """(from_date, to_date, where) of every export request the fake answered 200, in order."""
    return [(r.params["from_date"], r.params["to_date"], r.params.get("where", ""))
            for r in fake.export_requests if r.status == 200]


def between_states(run: Run) -> list[list[dt.date]]:
    """The days of the records a run printed between one STATE and the next (the records of a window, or
    of a day's pieces), for each such stretch that holds records."""
    groups: list[list[dt.date]] = [[]]
    for message in run.messages:
        if message["type"] == "STATE":
            groups.append([])
        elif message["type"] == "RECORD":
            groups[-1].append(day_of(message["record"]["data"]))
    return [group for group in groups if group]


def newest_first(groups: list[list[dt.date]]) -> bool:
    """Whether each stretch's days all come after the next stretch's."""
    return all(min(one) > max(two) for one, two in zip(groups, groups[1:], strict=False))


def since_last_state(run: Run) -> collections.Counter[str]:
    """The records a run printed after its last STATE: what a resume reads again."""
    last = max((i for i, m in enumerate(run.messages) if m["type"] == "STATE"), default=-1)
    return record_keys([m["record"]["data"] for m in run.messages[last + 1:] if m["type"] == "RECORD"])


@dataclasses.dataclass
class Module:
    events: list[FakeEvent]
    fake: FakeMixpanel  # at the clock every run of the module uses; tests clear what they inject
    first: Run  # the first sync, recent days first
    first_requests: list[tuple[str, str, str]]
    oldest: Run  # the same first sync with recent_first_days 0
    oldest_requests: list[tuple[str, str, str]]
    killed: Run  # a first sync killed in the pieces of HEAVY, in the backfill

    def truth(self) -> collections.Counter[str]:
        return truth(self.fake, FIRST, TODAY)

    def new_fake(self, now_ms: int) -> FakeMixpanel:
        return make_fake(list(self.events), now_ms=now_ms)


def in_heavy_pieces(messages: list[dict[str, Any]]) -> bool:
    """Stop in the second piece of HEAVY: its earlier pieces are out, its STATE is not."""
    heavy = [m for m in messages if m["type"] == "RECORD" and day_of(m["record"]["data"]) == HEAVY]
    return len(heavy) >= 100


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Module]:
    # ~15 events a day, ~180 on the recent days (a day's records fill more than a pipe: a kill lands inside them),
    # and 300 on HEAVY
    events = generate_events(1350, FIRST, 90, seed=81) + generate_events(1000, RECENT, 6, seed=84)
    events = sorted(events + generate_events(300, HEAVY, 1, seed=82), key=lambda e: e.time_ms)
    fake = make_fake(events, now_ms=day_start_ms(TODAY) + 3_600_000)  # 01:00: every event processed
    tmp = tmp_path_factory.mktemp("recent_first")
    try:
        first = read(tmp, config(fake))
        first_requests = requested(fake)
        fake.reset_requests()
        oldest = read(tmp, config(fake, recent_first_days=0))
        oldest_requests = requested(fake)
        fake.reset_requests()
        killed = read_and_kill(tmp, config(fake), None, in_heavy_pieces)
        assert killed.returncode == -signal.SIGKILL
        fake.reset_requests()
        yield Module(events, fake, first, first_requests, oldest, oldest_requests, killed)
    finally:
        fake.stop()


def test_given_90_days_and_recent_first_days_7_when_synced_then_the_last_7_days_before_any_older_record(module):
    """Every record of the last 7 days comes before any older one, and their complete STATE before those;
    then the backfill's windows go back from the 8th day to start_date, newest first; exactly the truth."""
    run = module.first
    assert record_keys(run.records) == module.truth()
    days = [day_of(r) for r in run.records]
    older = next(i for i, day in enumerate(days) if day < RECENT)
    assert older > 0 and all(day >= RECENT for day in days[:older])
    first_older = [i for i, m in enumerate(run.messages) if m["type"] == "RECORD"][older]
    recent_done = [m for m in run.messages[:first_older] if m["type"] == "STATE"][-1]["state"]["stream"]["stream_state"]
    assert recent_done["synced_through"] == TODAY.isoformat() and "in_progress" not in recent_done
    assert recent_done["history"]["checked"][0] == {"through": (RECENT - DAY).isoformat(), "watermark_ms": 0,
                                                    "watermark": "1970-01-01T00:00:00.000+00:00"}
    backfill = [group for group in between_states(run) if max(group) < RECENT]
    assert newest_first(backfill) and backfill[-1][-1] >= FIRST
    complete = [state["history"]["checked"][0] for state in run.states if "in_progress" not in state]
    unread = [c["through"] for c in complete if c["watermark_ms"] == 0]  # the recent days', then the backfill's
    assert unread == sorted(set(unread), reverse=True) and len(unread) >= 10  # a STATE after each window
    pieces = [(a, b) for a, b, where in module.first_requests if a == b == HEAVY.isoformat() and "$time" in where]
    assert len(pieces) >= 4  # HEAVY, heavier than the target, came in pieces
    final = run.states[-1]
    assert final["history"]["from"] == FIRST.isoformat()
    marks = [c["watermark_ms"] for c in final["history"]["checked"]]  # this sync's (its lowest so far)
    assert all(0 < final["watermark_ms"] - mark < 60_000 or mark == final["watermark_ms"] for mark in marks)
    assert "Backfill: 84 days of history were never read" in run.logs()  # FIRST..RECENT - 1
    assert "days of history left, about" in run.logs()
    estimate = next(m for m in run.of("TRACE") if m["trace"]["type"] == "ESTIMATE"
                    and m["trace"]["estimate"].get("row_estimate"))
    assert estimate["trace"]["estimate"]["row_estimate"] > 5 * older  # the history counts in it


def test_given_oldest_first_when_compared_then_the_same_records_in_another_order(module):
    """recent_first_days 0 reads the same days from start_date forward: the same record set (a destination
    deduplicating on event_id ends with the same table); only the order and a request or two differ."""
    assert record_keys(module.oldest.records) == record_keys(module.first.records)
    assert day_of(module.oldest.records[0]) < RECENT <= day_of(module.first.records[0])
    assert module.oldest_requests[0][0] == FIRST.isoformat()
    # a few more: the backfill's first window is sized (a probe) by the recent days, heavier than the old ones
    assert len(module.oldest_requests) <= len(module.first_requests) <= 1.15 * len(module.oldest_requests)


def first_record(messages: list[dict[str, Any]]) -> bool:
    return messages[-1]["type"] == "RECORD"


def recent_days_done(messages: list[dict[str, Any]]) -> bool:
    """The STATE that says the recent days are complete (no part in progress) has been printed."""
    return any(m["type"] == "STATE" and "in_progress" not in m["state"]["stream"]["stream_state"] for m in messages)


def kill_where(module: Module, tmp_path: Any, point: str) -> Run:
    """A first sync killed at `point`; the fake's faults are cleared after."""
    fake = module.fake
    if point == "in_a_backfill_day_s_pieces":
        return module.killed
    stop: Stop = first_record
    if point == "after_the_recent_days_state":  # while the backfill's first window is held
        fake.inject_when(lambda r: r.params.get("to_date") == (RECENT - DAY).isoformat(), Fault("slow", delay_s=30))
        stop = recent_days_done
    try:
        killed = read_and_kill(tmp_path, config(fake), None, stop)
    finally:
        fake.release_slow()
        fake.clear_faults()
    assert killed.returncode == -signal.SIGKILL
    return killed


@pytest.mark.parametrize("point", ["in_the_recent_days", "after_the_recent_days_state", "in_a_backfill_day_s_pieces"])
def test_given_a_first_sync_killed_when_resumed_then_the_union_is_the_truth_and_duplicates_only_the_cut(
    tmp_path, module, point
):
    """kill -9 in the recent days, right after their STATE, or inside a backfill window (the pieces of a heavy
    day): the killed sync and its resume hold every event; an event comes twice only if the killed sync
    emitted it after its last STATE."""
    killed = kill_where(module, tmp_path, point)
    if point == "in_the_recent_days":
        assert killed.records and not killed.states
    elif point == "after_the_recent_days_state":
        assert "in_progress" not in killed.states[-1] and min(day_of(r) for r in killed.records) >= RECENT
    else:
        unread = killed.states[-1]["history"]["checked"][0]
        assert unread["watermark_ms"] == 0 and unread["through"] == HEAVY.isoformat()
    resumed = read(tmp_path, config(module.fake), last_state(killed.messages))
    union = record_keys(killed.records) + record_keys(resumed.records)
    assert set(union) == set(module.truth())
    duplicates = union - module.truth()
    assert not duplicates - since_last_state(killed)
    assert max(record_keys(resumed.records).values()) == 1


def test_given_a_backfill_killed_when_synced_a_day_later_then_the_new_day_first_and_the_backfill_goes_on(
    tmp_path, module
):
    """A day later (the kill left the backfill at HEAVY), with events of the new day and one imported into a
    day not yet backfilled: the next sync emits the new day before any backfill record, goes on newest first
    from HEAVY to start_date, and delivers the import once, with its day; the union is the truth."""
    now = day_start_ms(TODAY + DAY) + 12 * 3_600_000  # noon of the new day
    fake = module.new_fake(now)
    try:
        new_day = [e for e in generate_events(60, TODAY + DAY, 1, seed=83) if (e.processing_ms or 0) <= now]
        imported = FakeEvent("Imported", day_start_ms(HEAVY - 10 * DAY) + 1000, {"$insert_id": "imported-unread"},
                             module.fake.current_ms() + 3_600_000)
        fake.add_events([*new_day, imported])
        second = read(tmp_path, config(fake), last_state(module.killed.messages))
        days = [day_of(r) for r in second.records]
        assert max(i for i, day in enumerate(days) if day == TODAY + DAY) < days.index(HEAVY)
        assert [b for _, b, _ in requested(fake) if b <= HEAVY.isoformat()][0] == HEAVY.isoformat()
        backfill = [group for group in between_states(second) if max(group) <= HEAVY]
        assert newest_first(backfill) and backfill[0][0] == HEAVY
        union = record_keys(module.killed.records) + record_keys(second.records)
        assert set(union) == set(truth(fake, FIRST, TODAY + DAY))
        assert union[event_key(imported.name, imported.export_properties(time_in_ms=True))] == 1
        assert not (union - truth(fake, FIRST, TODAY + DAY)) - since_last_state(module.killed)
        assert not any(c["watermark_ms"] == 0 for c in second.states[-1]["history"]["checked"])
    finally:
        fake.stop()


def test_given_a_v3_state_written_before_recent_first_when_synced_then_as_oldest_first(tmp_path, module):
    """A state an oldest-first sync wrote (as every sync did before recent_first_days): the next sync sends
    the same requests and emits the same records with recent_first_days 7 as with 0."""
    fake = module.new_fake(module.fake.current_ms() + 3_600_000)
    try:
        state = module.oldest.states[-1]
        assert not any(c["watermark_ms"] == 0 for c in state["history"]["checked"])
        outcomes = []
        for recent_first_days in (7, 0):
            fake.reset_requests()
            run = read(tmp_path, config(fake, recent_first_days=recent_first_days), state)
            outcomes.append((requested(fake), record_keys(run.records)))
        assert sorted(outcomes[0][0]) == sorted(outcomes[1][0]) and outcomes[0][1] == outcomes[1][1]
        assert any("mp_processing_time_ms" in where for _, _, where in outcomes[0][0])  # re-reads and the sweep
    finally:
        fake.stop()
