"""The history sweep against the fake (kills and a failing sync as real CLI runs): events that arrive weeks late.

A 63-day history is synced once; then events dated 10, 30 and 55 days back arrive (processed "now",
as an /import backfill would). The recent days' re-read finds what lies within them; the sweep finds
the rest within the number of syncs the user guide states, each event once, none lost from the normal
windows, also across a kill -9 in the middle of the sweep.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime as dt
import signal
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from fake_mixpanel import FakeEvent, FakeMixpanel, Fault, generate_events
from integration_tests.conftest import TODAY
from integration_tests.harness import (
    INCREMENTAL,
    Run,
    Stop,
    config_for,
    event_key,
    make_fake,
    read_and_kill,
    record_keys,
    reread_from,
    run_cli,
    state_input,
    truth,
)
from integration_tests.test_incremental_lossless import day_start_ms, read
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.records import SCHEMA
from source_mixpanel_export.state import parse_state, sync_plan
from source_mixpanel_export.sweep import block_days, block_start, syncs_per_pass

DAY = dt.timedelta(days=1)
FIRST = TODAY - 63 * DAY  # events on the 63 days before today (none today: nothing is processed during sync 1)
LATE_DAYS_BACK = (10, 30, 55)
BLOCK = block_days(30, 5)  # the defaults: date_window_size 30, attribution_window 5


@dataclasses.dataclass
class History:
    fake: FakeMixpanel
    first: Run  # sync 1, which read the whole history
    late: list[FakeEvent]  # what arrives after sync 1

    def config(self, **overrides: Any) -> dict[str, Any]:
        return defaults(self.fake, **overrides)

    def bound(self) -> int:
        """The user guide's bound: ceil(blocks of history / sweep requests per sync), from sync 1's state."""
        history = (reread_from(self.first.states[-1]) - FIRST).days
        bound = syncs_per_pass(history, BLOCK, 2)
        assert bound is not None and 1 <= bound <= 3
        return bound


def defaults(fake: FakeMixpanel, **overrides: Any) -> dict[str, Any]:
    """The connector's defaults for windows, attribution, budget and sweep (the harness's are smaller)."""
    overrides = {
        "start_date": FIRST.isoformat(), "date_window_size": 30, "requests_per_hour": 60, "requests_per_second": 3,
        **overrides,
    }
    return config_for(fake, **overrides)


@dataclasses.dataclass(frozen=True)
class FirstSync:
    """Sync 1 over the 63 days, as it ended: the events and the fake's clock it ran at, and what it printed."""

    events: list[FakeEvent]
    now_ms: int
    run: Run


@pytest.fixture(scope="module")
def first_sync(tmp_path_factory) -> FirstSync:
    """Sync 1 over 63 days, run once for the module: the tests only read its output and state, and each
    gets a fake of its own in the same place (history)."""
    events = list(generate_events(3000, FIRST, 63, seed=71))
    now_ms = max(e.processing_ms or 0 for e in events) + 60_000
    fake = make_fake(events, now_ms=now_ms)
    try:
        first = read(tmp_path_factory.mktemp("first_sync"), defaults(fake), None)
        assert record_keys(first.records) == truth(fake, FIRST, TODAY)
    finally:
        fake.stop()
    return FirstSync(events, now_ms, first)


@pytest.fixture
def history(first_sync: FirstSync) -> Iterator[History]:
    """After sync 1 (first_sync), on a fresh fake holding the same events at the same clock: three events
    dated 10, 30 and 55 days back are processed a minute later."""
    fake = make_fake(list(first_sync.events), now_ms=first_sync.now_ms)
    try:
        arrival = fake.now_ms + 60_000
        late = [
            FakeEvent("Imported", day_start_ms(TODAY - n * DAY) + 43_200_000,
                      {"$insert_id": f"imported-{n}", "distinct_id": f"user-{n}", "$user_id": f"user-{n}",
                       "$device_id": f"device-{n}"}, arrival)
            for n in LATE_DAYS_BACK
        ]
        fake.add_events(late)
        fake.now_ms = arrival + 60_000
        yield History(fake, first_sync.run, late)
    finally:
        fake.stop()


def late_keys(history: History) -> set[str]:
    return {event_key(e.name, e.export_properties(time_in_ms=True)) for e in history.late}


def test_given_events_weeks_late_when_synced_on_then_each_arrives_once_within_the_stated_syncs(tmp_path, history):
    """Syncs 2..(1 + bound) deliver all three imported events, each once; a further sync finds nothing
    more; every event of the normal windows came with sync 1. The records validate, with user_id and
    device_id."""
    state, delivered, per_sync = history.first.states[-1], [], []
    for _ in range(history.bound() + 1):
        run = read(tmp_path, history.config(), state)
        delivered += run.records
        per_sync.append(len(run.records))
        state = run.states[-1]
    assert sorted(record_keys(delivered).values()) == [1, 1, 1]
    assert set(record_keys(delivered)) == late_keys(history)
    assert per_sync[-1] == 0  # nothing doubled by later sweeps
    for record in delivered:
        jsonschema.validate(record, SCHEMA)
        assert record["user_id"].startswith("user-") and record["device_id"].startswith("device-")
    union = record_keys(history.first.records) + record_keys(delivered)
    assert union == truth(history.fake, FIRST, TODAY)
    checked = state["history"]["checked"]
    assert state["history"]["from"] == FIRST.isoformat() and 1 <= len(checked) <= 4


def test_given_sweep_on_and_off_when_synced_then_requests_differ_by_the_sweeps(tmp_path, history):
    """At the defaults, a sync the same day costs 1 request for the recent days; the sweep adds 2, each
    filtered by the watermark its days were last checked at. With 0 it finds only the recent arrival."""
    state = history.first.states[-1]
    off = read(tmp_path, history.config(history_sweep_requests=0), state)
    assert len(history.fake.export_requests) == 1
    recent = reread_from(state)
    assert history.fake.export_requests[0].params["from_date"] == recent.isoformat()
    in_recent = [e for e in history.late if e.time_ms >= day_start_ms(recent)]
    assert len(off.records) == len(in_recent)

    history.fake.reset_requests()
    on = read(tmp_path, history.config(), state)
    requests = history.fake.export_requests
    assert len(requests) == 3
    sweeps = [r for r in requests if r.params["to_date"] < recent.isoformat()]
    assert len(sweeps) == 2
    ranges = [(c["through"], c["watermark_ms"]) for c in state["history"]["checked"]]  # sync 1's: <= its watermark
    for sweep in sweeps:
        mark = next(m for through, m in ranges if sweep.params["to_date"] <= through)
        assert 0 < mark <= state["watermark_ms"]
        assert f'number(properties["mp_processing_time_ms"]) > {mark}' in sweep.params["where"]
    assert "History sweep: 2 window(s)" in on.logs()
    assert f"history takes {history.bound()} syncs like this one" in on.logs()  # the user guide's bound, logged
    assert len(on.records) >= len(off.records)


def first_sweep_state(start: dict[str, Any]) -> Stop:
    """Stop at the first STATE in which days of the history are checked at a watermark newer than the
    starting state's: the STATE after the first sweep window (the recent days' STATE keeps the old ones)."""

    def stop(messages: list[dict[str, Any]]) -> bool:
        if messages[-1]["type"] != "STATE":
            return False
        checked = messages[-1]["state"]["stream"]["stream_state"]["history"]["checked"]
        return any(c["watermark_ms"] > start["watermark_ms"] for c in checked)

    return stop


def test_given_sweep_killed_midway_when_resumed_then_nothing_is_lost(tmp_path, history):
    """kill -9 after the first sweep window's STATE, while the second is being fetched: the resumed
    syncs deliver every imported event, and the normal windows' STATE came before the sweep's records."""
    state = history.first.states[-1]
    now = dt.datetime.fromtimestamp(history.fake.current_ms() / 1000, dt.UTC)
    config = parse_config(history.config(), now=now)
    second = sync_plan(config, parse_state(state, now=now), config.today(now)).sweep[1]  # both are sent at once
    held = second.first_day.isoformat(), second.last_day.isoformat()
    history.fake.inject_when(lambda r: (r.params.get("from_date"), r.params.get("to_date")) == held,
                             Fault("slow", delay_s=30))
    killed = read_and_kill(tmp_path, history.config(), state, first_sweep_state(state))
    history.fake.release_slow()
    history.fake.clear_faults()
    assert killed.returncode == -signal.SIGKILL
    states = killed.states
    assert states[-2]["synced_through"] == TODAY.isoformat() and "in_progress" not in states[-2]
    assert states[-1]["history"] != states[-2]["history"]  # the first sweep window's days, checked anew
    # killed while the second was held: its days are not yet checked anew
    holding = next(c for c in states[-1]["history"]["checked"] if c["through"] >= second.last_day.isoformat())
    assert holding["watermark_ms"] <= state["watermark_ms"]
    delivered = list(killed.records)
    state = states[-1]
    for _ in range(history.bound() + 1):
        run = read(tmp_path, history.config(), state)
        delivered += run.records
        state = run.states[-1]
    assert set(record_keys(delivered)) == late_keys(history)
    assert max(record_keys(delivered).values()) == 1


def test_given_budget_short_when_synced_then_sweep_skipped_with_a_log_line(tmp_path, history):
    """With 2 export queries an hour, the sweep (2) does not fit after the recent days' request:
    skipped, said so, and the history keeps its watermarks for the next sync."""
    state = history.first.states[-1]
    run = read(tmp_path, history.config(requests_per_hour=2), state)
    assert len(history.fake.export_requests) == 1
    assert "Skipping the history sweep this sync" in run.logs()
    assert run.states[-1]["history"]["checked"][0] == state["history"]["checked"][0]


def test_given_sweep_fails_when_synced_then_fresh_data_stays_checkpointed(tmp_path, history):
    """Mixpanel answers every sweep request 500: the sync fails after its retries, but its last STATE
    already covers the recent days it read, and a later sync (fault gone) sweeps as usual."""
    state = history.first.states[-1]
    recent = reread_from(state).isoformat()
    history.fake.inject_when(lambda r: r.params.get("to_date", "9") < recent, Fault("status", status=500), times=100)
    config = history.config(max_retry_seconds=0)
    failed = run_cli(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state))
    assert failed.returncode != 0 and failed.errors
    last = failed.states[-1]
    assert last["synced_through"] == TODAY.isoformat() and "in_progress" not in last
    assert last["watermark_ms"] > state["watermark_ms"]
    history.fake.clear_faults()
    delivered = list(failed.records)
    state = last
    for _ in range(history.bound() + 1):
        run = read(tmp_path, history.config(), state)
        delivered += run.records
        state = run.states[-1]
    assert set(record_keys(delivered)) == late_keys(history)


def test_given_attribution_window_raised_past_the_recent_days_when_synced_on_then_late_events_come_once(
    tmp_path, history
):
    """attribution_window 5 -> 45 after sync 1 (sweep off to isolate it): the syncs re-read history
    days for late arrivals, and those days then count as checked at the sync's watermark, so an event
    imported 40 days back comes once, not on every sync (found by review)."""
    state = history.first.states[-1]
    event = FakeEvent("Imported40", day_start_ms(TODAY - 40 * DAY) + 1000, {"$insert_id": "imp-40"},
                      history.fake.now_ms - 30_000)
    history.fake.add_events([event])
    counts = []
    for _ in range(4):
        run = read(tmp_path, history.config(attribution_window=45, history_sweep_requests=0), state)
        counts.append(sum(1 for r in run.records if r["event"] == "Imported40"))
        state = run.states[-1]
        history.fake.now_ms += 3_600_000
    assert counts == [1, 0, 0, 0]


def test_given_end_date_in_the_past_when_swept_then_nothing_after_it_is_emitted(tmp_path, history):
    """end_date 50 days back: the sweep keeps to it (found by review), and still finds the event 55 days back."""
    end = TODAY - 50 * DAY
    state, delivered = history.first.states[-1], []
    for _ in range(history.bound() + 1):
        run = read(tmp_path, history.config(end_date=end.isoformat()), state)
        delivered += run.records
        state = run.states[-1]
    assert [r["time"][:10] for r in delivered] == [(TODAY - 55 * DAY).isoformat()]


def test_given_days_skipped_by_a_later_start_date_when_it_comes_back_then_they_are_read_whole(tmp_path):
    """Synced to 40 days back (end_date), then start_date 20 days back: the days between were never read
    (checked at 0). With start_date back, they are read whole, events without mp_processing_time_ms
    included, not filtered by `> 0` (found by review)."""
    events = list(generate_events(3000, FIRST, 63, seed=72, missing_processing_fraction=0.05))
    fake = make_fake(events, now_ms=max(e.processing_ms or 0 for e in events) + 60_000)
    try:
        run = read(tmp_path, defaults(fake, end_date=(TODAY - 40 * DAY).isoformat()), None)
        delivered = list(run.records)
        run = read(tmp_path, defaults(fake, start_date=(TODAY - 20 * DAY).isoformat()), run.states[-1])
        delivered += run.records
        state = run.states[-1]
        assert [c for c in state["history"]["checked"] if c["watermark_ms"] == 0]
        for _ in range(4):
            fake.now_ms += 3_600_000
            run = read(tmp_path, defaults(fake), state)
            delivered += run.records
            state = run.states[-1]
        assert set(record_keys(delivered)) == set(truth(fake, FIRST, TODAY))
    finally:
        fake.stop()


def test_given_a_block_cut_into_ranges_when_swept_then_one_request_reads_each_past_its_own_watermark(
    tmp_path, history
):
    """A block the history holds as three ranges (syncs that stopped partway), the middle one checked
    at an older watermark (midnight of its fifth day): one sweep request reads the whole block, and
    brings each day's events processed after its own range's watermark: the middle's last days come
    again, the later range's days (all processed after that older watermark) do not."""
    state = copy.deepcopy(history.first.states[-1])
    (whole,) = state["history"]["checked"]  # sync 1 read every day at its one watermark
    mark, through = whole["watermark_ms"], dt.date.fromisoformat(whole["through"])
    start = block_start(through, BLOCK) - BLOCK * DAY  # a whole block, all of it history
    lowered = day_start_ms(start + 12 * DAY)
    cuts = [(start + 7 * DAY, mark), (start + 15 * DAY, lowered), (through, mark)]
    state["history"]["checked"] = [{"through": day.isoformat(), "watermark_ms": ms} for day, ms in cuts]

    run = read(tmp_path, history.config(history_sweep_requests=1), state)

    sweeps = [r for r in history.fake.export_requests if r.params["to_date"] < reread_from(state).isoformat()]
    assert [(r.params["from_date"], r.params["to_date"]) for r in sweeps] == [
        (start.isoformat(), (start + (BLOCK - 1) * DAY).isoformat())
    ]

    def after_its_mark(event: FakeEvent) -> bool:
        day = dt.datetime.fromtimestamp(event.time_ms / 1000, dt.UTC).date()
        if day >= reread_from(state):  # the recent days: re-read past the state's watermark
            return event.processing_ms is not None and event.processing_ms > state["watermark_ms"]
        own = lowered if start + 8 * DAY <= day <= start + 15 * DAY else mark
        return start <= day < start + BLOCK * DAY and event.processing_ms is not None and event.processing_ms > own

    expected = [e for e in history.fake.events if after_its_mark(e)]
    assert sum(e.processing_ms is not None and e.processing_ms <= mark for e in expected) > 20  # the middle's days
    assert record_keys(run.records) == collections.Counter(
        event_key(e.name, e.export_properties(time_in_ms=True)) for e in expected
    )
    checked = run.states[-1]["history"]["checked"]
    assert len({c["watermark_ms"] for c in checked if start.isoformat() <= c["through"]}) <= 2  # the block: one range
