"""State: round trips, migration from the official connector, rejection of malformed state."""

import datetime as dt
import random
from dataclasses import replace

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_tests.depth import examples
from source_mixpanel_export.state import ExportState, StateRefused, parse_state, state_file_entries, stream_state_of
from source_mixpanel_export.windows import Planner, plan_segments

D = dt.date


def plan_windows(first, last, size, coverage=()):
    """The windows of a sync told nothing of the volume: `size` days each, segment by segment."""
    planner = Planner(plan_segments(first, last, coverage), size, 10**9, "UTC")
    return list(iter(planner.next, None))


def test_given_no_state_when_parsed_then_empty_and_reads_from_start():
    """No state, {} and the CDK's no-cursor marker all mean 'start from start_date'."""
    for raw in (None, {}, {"__ab_no_cursor_state_message": True}):
        state = parse_state(raw)
        assert state == ExportState() and state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 1)


def test_given_state_when_serialized_and_parsed_then_round_trips():
    """to_dict and parse_state are inverses, including an in-progress part."""
    state = ExportState(D(2024, 1, 10), 1_700_000_000_000, D(2024, 1, 8), 1_700_000_100_000)
    data = state.to_dict()
    assert data["version"] == 3 and data["watermark"].startswith("2023-11-14T22:13:20")
    assert parse_state(data) == state
    swept = replace(state, history_from=D(2023, 1, 1), history=((D(2023, 5, 1), 1_600_000_000_000),
                                                                 (D(2023, 12, 31), 1_690_000_000_000)))
    data = swept.to_dict()
    assert data["history"]["checked"][0] == {
        "through": "2023-05-01", "watermark_ms": 1_600_000_000_000, "watermark": "2020-09-13T12:26:40.000+00:00"
    }
    assert parse_state(data) == swept
    sized = swept.sized(2_500_000.2)
    assert sized.to_dict()["events_per_day"] == 2_500_001 and parse_state(sized.to_dict()) == sized
    assert sized.sized(None) == sized and swept.sized(10**12).events_per_day == 10**10


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO UTC instant, so watermarks in tests stay readable."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


def test_given_synced_state_when_planning_then_days_from_watermark_less_attribution_are_reread():
    """Re-reading starts N days before the watermark: an event at most N days late cannot be older."""
    state = ExportState(D(2024, 1, 10), ms("2024-01-10T12:00:00"))
    assert state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 5)
    assert state.first_day(D(2024, 1, 8), 5) == D(2024, 1, 8)
    assert state.first_day(D(2024, 1, 1), 0) == D(2024, 1, 10)
    assert state.coverage() == [(D(2024, 1, 10), ms("2024-01-10T12:00:00"))]


def test_given_attribution_one_when_planning_then_the_day_before_the_watermark_is_reread():
    """An event from 23:59 yesterday processed just after a sync at 00:05 is one day late at most."""
    state = ExportState(D(2024, 1, 10), ms("2024-01-10T00:05:00"))
    assert state.first_day(D(2024, 1, 1), 1) == D(2024, 1, 9)


def test_given_project_timezone_when_planning_then_watermark_day_is_local():
    """Dates are the ones Mixpanel reads: the watermark's day in the request timezone."""
    state = ExportState(D(2024, 1, 10), ms("2024-01-10T03:00:00"))
    assert state.first_day(D(2024, 1, 1), 1, "UTC") == D(2024, 1, 9)
    assert state.first_day(D(2024, 1, 1), 1, "US/Pacific") == D(2024, 1, 8)


def test_given_end_date_in_the_past_when_planning_then_only_days_late_events_can_reach_are_reread():
    """Days more than N days before the watermark are complete; days never read are read whole."""
    state = ExportState(D(2024, 1, 3), ms("2024-01-20T12:00:00"))
    assert state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 4)
    assert state.first_day(D(2023, 12, 1), 30) == D(2023, 12, 21)
    assert state.first_day(D(2024, 1, 1), 30) == D(2024, 1, 1)


def test_given_interrupted_first_sync_when_planning_then_resumes_near_its_reach():
    """A first sync killed after some windows: its days are re-read for late arrivals only."""
    state = ExportState().progressed(D(2024, 1, 7), ms("2024-01-20T12:00:00"))
    assert state.synced_through is None and state.reached() == D(2024, 1, 7)
    assert state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 8)
    assert state.first_day(D(2024, 1, 1), 15) == D(2024, 1, 5)


def test_given_interrupted_sync_when_planning_then_newer_watermark_covers_its_days_first():
    """An in-progress part narrows the days it reached with its own watermark."""
    state = ExportState(D(2024, 1, 10), 5).progressed(D(2024, 1, 7), 9)
    assert state.coverage() == [(D(2024, 1, 7), 9), (D(2024, 1, 10), 5)]
    assert parse_state(state.to_dict()) == state
    assert state.completed(D(2024, 1, 12), 9) == ExportState(D(2024, 1, 12), 9)


def test_given_resumed_sync_behind_its_predecessor_when_progressing_then_keeps_the_reach():
    """A resumed sync that is killed again before catching up re-reads nothing whole."""
    state = ExportState(None, None, D(2024, 1, 8), 900)
    assert state.progressed(D(2024, 1, 3), 1000) == ExportState(None, None, D(2024, 1, 8), 900)
    assert state.progressed(D(2024, 1, 3), 800) == ExportState(None, None, D(2024, 1, 8), 800)
    assert state.progressed(D(2024, 1, 9), 1000) == ExportState(None, None, D(2024, 1, 9), 1000)


def test_given_end_date_moved_back_when_completed_then_later_days_keep_their_older_watermark():
    """A sync that stops short of the last synced day cannot claim its watermark for the days after."""
    state = ExportState(D(2024, 1, 10), 500).completed(D(2024, 1, 7), 900)
    assert state == ExportState(D(2024, 1, 10), 500, D(2024, 1, 7), 900)
    assert state.coverage() == [(D(2024, 1, 7), 900), (D(2024, 1, 10), 500)]
    first_sync = ExportState(None, None, D(2024, 1, 8), 700).completed(D(2024, 1, 5), 900)
    assert first_sync.coverage() == [(D(2024, 1, 5), 900), (D(2024, 1, 8), 700)]


def test_given_official_state_when_parsed_then_migrated_without_watermark():
    """{'time': ...} from the official connector becomes a day re-read whole (no loss)."""
    state = parse_state({"time": "2024-03-05T10:11:12Z"})
    assert state.synced_through == D(2024, 3, 5) and state.watermark_ms is None
    assert state.coverage() == [] and state.first_day(D(2024, 1, 1), 5) == D(2024, 3, 1)
    assert state.migrated_from


@pytest.mark.parametrize(
    "raw",
    [{"time": 1709633472}, {"time": 1709633472123}, {"time": "2024-03-05"}, {"date": "2024-03-05"}],
)
def test_given_official_state_in_any_of_its_forms_when_parsed_then_same_day(raw):
    """Epoch seconds, epoch milliseconds, a plain date or the older 'date' key all name the same day."""
    assert parse_state(raw).synced_through == D(2024, 3, 5)


def test_given_state_after_a_partial_sync_when_printed_and_read_back_then_plans_the_same_windows():
    """What a sync checkpoints is exactly what the next one plans from, through its JSON form."""
    state = ExportState(D(2024, 1, 10), ms("2024-01-10T09:00:00")).progressed(D(2024, 1, 7), ms("2024-01-11T09:00:00"))
    again = parse_state(state.to_dict())
    assert again == state and again.first_day(D(2024, 1, 1), 5) == state.first_day(D(2024, 1, 1), 5)
    assert plan_windows(D(2024, 1, 5), D(2024, 1, 12), 30, again.coverage()) == plan_windows(
        D(2024, 1, 5), D(2024, 1, 12), 30, state.coverage()
    )


def _v3(**parts):
    """A version-3 state synced through 2024-01-01, with `parts` added."""
    return {"version": 3, "synced_through": "2024-01-01", "watermark_ms": 1_704_100_000_000, **parts}


def _range(through: str) -> dict:
    return {"through": through, "watermark_ms": 1_700_000_000_000}


@pytest.mark.parametrize(
    "raw,problem",
    [
        ([1, 2], "not a JSON object"),
        ({"version": 1, "synced_through": "2024-01-01"}, "version"),
        ({"version": 2, "synced_through": "yesterday", "watermark_ms": 1}, "synced_through"),
        ({"version": 2, "synced_through": "2024-01-01", "watermark_ms": "soon"}, "watermark_ms"),
        ({"version": 2, "watermark_ms": 5}, "synced_through"),
        ({"version": 2, "cursor": 5}, "unknown keys"),
        ({"version": 2, "in_progress": {"through": "2024-01-01"}}, "in_progress"),
        ({"time": "not a date"}, "'time'"),
        ({"foo": "bar"}, "neither"),
        ({"version": 2, "synced_through": "2024-01-01", "watermark_ms": -1}, "watermark_ms"),
        ({"version": 2, "synced_through": "2024-01-01", "watermark_ms": True}, "watermark_ms"),
        ({"version": 2, "in_progress": "2024-01-01"}, "in_progress"),
        ({"version": 2, "in_progress": {"through": "2024-01-01", "watermark_ms": 1.5}}, "in_progress.watermark_ms"),
        ({"version": 2, "synced_through": "2024-01-01", "history": {"from": "2023-01-01", "checked": []}},
         "unknown keys"),
        ({"version": True, "synced_through": "2024-01-01"}, "version"),
        (_v3(history=[]), "'history' must be an object"),
        (_v3(history={"from": "2023-01-01"}), "'checked' list"),
        (_v3(history={"from": "2023-01-01", "checked": [], "extra": 1}), "'history' must be an object"),
        (_v3(history={"from": "2023-13-01", "checked": []}), "history.from"),
        (_v3(history={"from": "2023-01-01", "checked": [{"through": "2023-02-01"}]}), "history.checked[0]"),
        (_v3(history={"from": "2023-01-01", "checked": [{"through": "2023-02-01", "watermark_ms": "1"}]}),
         "history.checked[0].watermark_ms"),
        (_v3(history={"from": "2023-01-01", "checked": [_range("2023-02-01"), _range("2023-02-01")]}),
         "history.checked[1].through"),
        (_v3(history={"from": "2023-03-01", "checked": [_range("2023-02-01")]}), "history.checked[0].through"),
        (_v3(history={"from": "2023-01-01", "checked": [_range("2024-02-01")]}), "past the days this state has read"),
        (_v3(history={"from": "2023-01-01", "checked": [_range("2023-01-02")] * 10_001}), "at most 10000"),
        (_v3(history={"from": "2023-01-01", "checked": ["2023-02-01"]}), "history.checked[0]"),
        (_v3(events_per_day=-1), "'events_per_day' must be a whole number"),
        (_v3(events_per_day=1.5), "'events_per_day' must be a whole number"),
        (_v3(events_per_day=True), "'events_per_day' must be a whole number"),
        (_v3(events_per_day="1000"), "'events_per_day' must be a whole number"),
        (_v3(events_per_day=10**10 + 1), "'events_per_day' must be a whole number from 0 to 10000000000"),
        (_v3(events_per_day=10**400), "'events_per_day' must be a whole number"),
        ({"version": 2, "synced_through": "2024-01-01", "events_per_day": 5}, "unknown keys"),
    ],
)
def test_given_malformed_state_when_parsed_then_config_error_names_the_problem(raw, problem):
    """A state that cannot be trusted fails clearly instead of silently re-syncing."""
    with pytest.raises(AirbyteTracedException) as info:
        parse_state(raw)
    assert info.value.failure_type == FailureType.config_error
    assert problem in info.value.message and "Reset" in info.value.message


NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
NOW_MS = int(NOW.timestamp() * 1000)
YEAR_MS = 365 * 86_400_000


def error_of(raw) -> str:
    with pytest.raises(AirbyteTracedException) as info:
        parse_state(raw, now=NOW)
    assert info.value.failure_type == FailureType.config_error
    assert "Reset" in info.value.message
    return info.value.message


@pytest.mark.parametrize(
    "raw,problem",
    [
        ({"time": "2100-01-01T00:00:00Z"}, "future"),
        ({"time": 4102444800}, "future"),
        ({"time": 4102444800000}, "future"),
        ({"time": 10**20}, "'time'"),
        ({"time": float("nan")}, "'time'"),
        ({"time": float("inf")}, "'time'"),
        ({"time": True}, "neither"),
        ({"time": "0001-01-01T00:00:00Z"}, "2009-01-01"),
        ({"version": 2, "synced_through": "2026-11-30", "watermark_ms": NOW_MS + YEAR_MS}, "future"),
        ({"version": 2, "synced_through": "2026-11-30", "watermark_ms": 10**20}, "future"),
        ({"version": 2, "synced_through": "2026-11-30", "watermark_ms": 10**5000}, "watermark_ms"),
        ({"version": 2, "synced_through": "9999-12-31", "watermark_ms": NOW_MS}, "future"),
        ({"version": 2, "synced_through": "2026-12-01", "watermark_ms": NOW_MS}, "synced_through"),
        ({"version": 2, "synced_through": "0001-01-01", "watermark_ms": 1}, "2009-01-01"),
        ({"version": 2, "synced_through": "2026-11-01", "watermark_ms": NOW_MS + 3_600_001}, "watermark_ms"),
        (
            {"version": 2, "synced_through": "2026-11-01", "watermark_ms": 1,
             "in_progress": {"through": "2100-01-01", "watermark_ms": 1}},
            "in_progress.through",
        ),
        (
            {"version": 2, "synced_through": "2026-11-01", "watermark_ms": 1,
             "in_progress": {"through": "2026-11-02", "watermark_ms": NOW_MS + YEAR_MS}},
            "in_progress.watermark_ms",
        ),
    ],
)
def test_given_state_from_the_future_or_out_of_range_when_parsed_then_config_error_says_reset(raw, problem):
    """A state after the present (or before Mixpanel) would lose data silently or crash: refused, naming it."""
    assert problem in error_of(raw)


def test_given_state_within_the_clock_skew_allowance_when_parsed_then_brought_back_with_a_note():
    """Tomorrow's date is read as today, a watermark up to an hour ahead as an hour before now (the clock
    that wrote it was up to that much ahead: re-reading is harmless, skipping is not), each with a note."""
    raw = {"version": 2, "synced_through": "2026-11-30", "watermark_ms": NOW_MS + 60_000}
    state = parse_state(raw, now=NOW)
    assert (state.synced_through, state.watermark_ms) == (D(2026, 11, 29), NOW_MS - 3_600_000)
    assert len(state.notes) == 2 and "an hour before now" in state.notes[1]
    official = parse_state({"time": "2026-11-30T23:00:00Z"}, now=NOW)
    assert official.synced_through == D(2026, 11, 29) and "read as 2026-11-29" in official.notes[0]
    assert parse_state({"version": 2, "synced_through": "2026-11-29", "watermark_ms": NOW_MS}, now=NOW).notes == ()


def test_given_history_ranges_after_today_when_parsed_then_cut_at_today():
    """History past today covered days that have not come: a range ending tomorrow ends today, or is
    dropped when the range before it already ends today."""
    ranges = [{"through": "2026-11-20", "watermark_ms": 5}, {"through": "2026-11-30", "watermark_ms": 6}]
    raw = _v3(synced_through="2026-11-30", watermark_ms=NOW_MS, history={"from": "2026-11-01", "checked": ranges})
    state = parse_state(raw, now=NOW)
    assert state.history == ((D(2026, 11, 20), 5), (D(2026, 11, 29), 6)) and state.synced_through == D(2026, 11, 29)
    ranges.insert(1, {"through": "2026-11-29", "watermark_ms": 7})
    assert parse_state(raw, now=NOW).history == ((D(2026, 11, 20), 5), (D(2026, 11, 29), 7))


def test_given_a_legacy_zone_ahead_of_utc_when_parsed_then_its_today_is_the_zone_s():
    """A state's days are dates of the zone it was read in: Kiritimati's today is not a day in the future."""
    raw = {"version": 2, "synced_through": "2026-11-30", "watermark_ms": NOW_MS}
    assert parse_state(raw, now=NOW, timezone="Pacific/Kiritimati").notes == ()


def _messages(*entries):
    from airbyte_cdk.models import AirbyteStateMessageSerializer

    return [AirbyteStateMessageSerializer.load(entry) for entry in entries]


def _stream(name="export", state=None, namespace=None):
    descriptor = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"type": "STREAM", "stream": {"stream_descriptor": descriptor, "stream_state": state}}


def test_given_per_stream_state_when_extracted_then_the_export_blob_as_a_dict():
    """The export entry's stream_state, whatever other streams the file names; None without one."""
    blob = {"version": 2, "synced_through": "2024-01-01", "watermark_ms": 5}
    assert stream_state_of(_messages(_stream("other", {"x": 1}), _stream(state=blob)), "export") == blob
    assert stream_state_of(_messages(_stream("other", {"x": 1})), "export") is None
    assert stream_state_of(None, "export") is None and stream_state_of([], "export") is None
    assert stream_state_of(_messages(_stream(state=blob, namespace="ns")), "export") == blob  # namespace ignored


@pytest.mark.parametrize(
    "entries,problem",
    [
        (
            [{"type": "GLOBAL", "global": {"shared_state": {"a": 1}, "stream_states": [
                {"stream_descriptor": {"name": "export"}, "stream_state": {"time": "2024-01-01"}}]}}],
            "GLOBAL",
        ),
        ([{"type": "LEGACY", "data": {"export": {"time": "2024-01-01"}}}], "LEGACY"),
        ([_stream(state={"time": "2024-01-01"}), _stream(state={"time": "2024-02-01"})], "2 entries"),
    ],
)
def test_given_state_this_connector_never_writes_when_extracted_then_config_error(entries, problem):
    """GLOBAL, LEGACY or a doubled export entry: a config error saying to reset, never a crash or a guess."""
    with pytest.raises(AirbyteTracedException) as info:
        stream_state_of(_messages(*entries), "export")
    assert info.value.failure_type == FailureType.config_error
    assert problem in info.value.message and "Reset" in info.value.message



def test_given_another_streams_name_when_extracted_then_its_blob_and_errors_name_it():
    """The stream is the one named: its entry is found, and its errors say which stream's state it was."""
    blob = {"page": 3}
    assert stream_state_of(_messages(_stream(state={"version": 3}), _stream("people", blob)), "people") == blob
    assert stream_state_of(_messages(_stream(state={"version": 3})), "people") is None
    with pytest.raises(AirbyteTracedException) as info:
        stream_state_of(_messages(_stream("people", blob), _stream("people", blob)), "people")
    assert info.value.message.startswith("The saved state of stream 'people' cannot be used: it holds 2 entries")
    assert "'export'" not in info.value.message


def test_given_a_state_refused_when_parsed_then_a_config_error_that_names_no_stream_until_named():
    """parse_state says what is wrong; the source, which knows the stream, names it (StateRefused.named)."""
    with pytest.raises(StateRefused) as info:
        parse_state({"version": 99})
    refused = info.value
    assert refused.failure_type == FailureType.config_error
    assert refused.message.startswith("The saved state cannot be used: version 99")
    named = refused.named("export")
    assert named.failure_type == FailureType.config_error
    assert named.message == refused.message.replace("The saved state ", "The saved state of stream 'export' ", 1)

# A model of the whole incremental loop, without HTTP: Mixpanel as a list of (event date, processing
# time) pairs, a sync as plan_windows over first_day/coverage whose every window sees what was
# processed by the moment it was asked, killed at any window or stopped short by an end_date.
BASE = D(2024, 1, 1)
MS_DAY = 86_400_000
BASE_MS = ms("2024-01-01T00:00:00")


def _sync(state, events, now_ms, attribution, size, end_day, kill_after, delivered):
    """One modelled sync: returns the state it leaves (its last checkpoint when killed)."""
    today = BASE + dt.timedelta(days=(now_ms - BASE_MS) // MS_DAY)
    end = min(end_day or today, today)
    first = state.first_day(BASE, attribution)
    windows = plan_windows(first, end, size, state.coverage()) if first <= end else []
    watermark = None
    for number, window in enumerate(windows):
        if kill_after is not None and number == kill_after:
            return state
        asked_ms = now_ms + number * 1000
        for index, (day, processed) in enumerate(events):
            if window.first_day <= day <= window.last_day and processed <= asked_ms:
                if (mark := window.mark_on(day)) is None or processed > mark:
                    delivered.add(index)
        watermark = asked_ms - 250 if watermark is None else min(watermark, asked_ms - 250)
        state = state.progressed(window.last_day, watermark)
    if watermark is not None and end >= first:
        state = state.completed(end, watermark)
    return state


def _history(seed: int) -> tuple[list[int], list[tuple[int, int | None, int | None, int]], int]:
    """A random history: event lateness in minutes or days, syncs hours or days apart, some killed,
    some with an end_date (also one moved back), one attribution window."""
    rng = random.Random(seed)
    lateness = [rng.choice((rng.randrange(600_000), rng.randrange(9 * MS_DAY))) for _ in range(60)]
    happened = [rng.randrange(19 * MS_DAY) for _ in lateness]
    syncs = [
        (
            rng.randrange(1, 3 * MS_DAY),
            rng.choice((None, None, rng.randrange(26))),
            rng.choice((None, None, rng.randrange(5))),
            rng.randint(1, 4),
        )
        for _ in range(rng.randint(1, 8))
    ]
    return list(zip(happened, lateness, strict=True)), syncs, rng.randint(0, 6)


@settings(max_examples=examples(300), deadline=None)
@given(seed=st.integers(0, 2**32))
def test_given_any_history_of_syncs_when_a_last_sync_completes_then_no_event_within_attribution_is_lost(seed):
    """Late arrivals, kills, resumes and end_date changes in any order: nothing at most N days late is lost."""
    happenings, syncs, attribution = _history(seed)
    events = [(BASE + dt.timedelta(days=t // MS_DAY), BASE_MS + t + late) for t, late in happenings]
    delivered: set[int] = set()
    state, now = ExportState(), BASE_MS + MS_DAY // 2
    for gap, end, kill, size in syncs:
        now += gap
        end_day = None if end is None else BASE + dt.timedelta(days=end)
        state = parse_state(_sync(state, events, now, attribution, size, end_day, kill, delivered).to_dict())
    now = max([now, *(p for _, p in events)]) + 1000
    _sync(state, events, now, attribution, 3, None, None, delivered)
    missing = [i for i, (_, late) in enumerate(happenings) if late <= attribution * MS_DAY and i not in delivered]
    assert missing == []


def _entry(name, watermark):
    return {"type": "STREAM", "stream": {"stream_descriptor": {"name": name}, "stream_state": {"w": watermark}}}


def _message(name, watermark):
    return {"type": "STATE", "state": {**_entry(name, watermark), "sourceStats": {"recordCount": 1.0}}}


def test_given_state_file_forms_when_read_then_the_same_entries():
    """A STATE message, a list of them (the last per stream wins), its state object, the CDK's list."""
    cdk_list = [_entry("export", 2)]
    assert state_file_entries(cdk_list) == cdk_list
    assert state_file_entries(_entry("export", 2)) == cdk_list
    assert state_file_entries(_message("export", 2)) == [_message("export", 2)["state"]]
    several = [_message("export", 1), _message("other", 7), _message("export", 2)]
    assert state_file_entries(several) == [_message("other", 7)["state"], _message("export", 2)["state"]]
    for empty in (None, [], {}):
        assert state_file_entries(empty) == []


def test_given_cdk_list_with_two_entries_when_read_then_both_kept_for_refusal():
    """Two plain entries for `export` are not collapsed: stream_state_of refuses them (no guessing)."""
    entries = state_file_entries([_entry("export", 1), _entry("export", 2)])
    assert len(entries) == 2
