"""State: round trips, migration from the official connector, rejection of malformed state."""

import datetime as dt

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export.state import ExportState, parse_state

D = dt.date


def test_given_no_state_when_parsed_then_empty_and_reads_from_start():
    """No state, {} and the CDK's no-cursor marker all mean 'start from start_date'."""
    for raw in (None, {}, {"__ab_no_cursor_state_message": True}):
        state = parse_state(raw)
        assert state == ExportState() and state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 1)


def test_given_state_when_serialized_and_parsed_then_round_trips():
    """to_dict and parse_state are inverses, including an in-progress part."""
    state = ExportState(D(2024, 1, 10), 1_700_000_000_000, D(2024, 1, 8), 1_700_000_100_000)
    data = state.to_dict()
    assert data["version"] == 2 and data["watermark"].startswith("2023-11-14T22:13:20")
    assert parse_state(data) == state


def test_given_synced_state_when_planning_then_attribution_window_is_reread():
    """The last attribution_window days are read again, never before start_date."""
    state = ExportState(D(2024, 1, 10), 5)
    assert state.first_day(D(2024, 1, 1), 5) == D(2024, 1, 6)
    assert state.first_day(D(2024, 1, 9), 5) == D(2024, 1, 9)
    assert state.first_day(D(2024, 1, 1), 0) == D(2024, 1, 10)
    assert state.coverage() == [(D(2024, 1, 10), 5)]


def test_given_interrupted_sync_when_planning_then_newer_watermark_covers_its_days_first():
    """An in-progress part narrows the days it reached with its own watermark."""
    state = ExportState(D(2024, 1, 10), 5).progressed(D(2024, 1, 7), 9)
    assert state.coverage() == [(D(2024, 1, 7), 9), (D(2024, 1, 10), 5)]
    assert parse_state(state.to_dict()) == state
    assert state.completed(D(2024, 1, 12), 9) == ExportState(D(2024, 1, 12), 9)


def test_given_official_state_when_parsed_then_migrated_without_watermark():
    """{'time': ...} from the official connector becomes a day re-read whole (no loss)."""
    state = parse_state({"time": "2024-03-05T10:11:12Z"})
    assert state.synced_through == D(2024, 3, 5) and state.watermark_ms is None
    assert state.coverage() == [] and state.first_day(D(2024, 1, 1), 5) == D(2024, 3, 1)
    assert state.migrated_from


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
    ],
)
def test_given_malformed_state_when_parsed_then_config_error_names_the_problem(raw, problem):
    """A state that cannot be trusted fails clearly instead of silently re-syncing."""
    with pytest.raises(AirbyteTracedException) as info:
        parse_state(raw)
    assert info.value.failure_type == FailureType.config_error
    assert problem in info.value.message and "Reset" in info.value.message
