"""The timezone judgement of `check`: event times against Mixpanel's receive times, on made-up samples."""

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest

from source_mixpanel_export.check import _events, compare_times
from source_mixpanel_export.config import parse_config

NOW = dt.datetime(2024, 7, 2, 12, 0, tzinfo=dt.UTC)  # summer: US/Pacific is -07:00, Europe/Berlin +02:00
SA = {"option_title": "Service Account", "username": "u", "secret": "s3cret", "project_id": 7}


def settings(timezone="UTC", legacy=False):
    return parse_config({"credentials": dict(SA), "project_timezone": timezone, "legacy_local_time": legacy}, now=NOW)


def shown_ms(true: dt.datetime, legacy_zone: str | None) -> int:
    """`time` as a project stores it: true UTC, or (legacy) the local wall time written as if UTC."""
    if legacy_zone is None:
        return int(true.timestamp() * 1000)
    wall = true.astimezone(ZoneInfo(legacy_zone)).replace(tzinfo=dt.UTC)
    return int(wall.timestamp() * 1000)


def sample(legacy_zone=None, count=60, delays_ms=(500, 90_000), start=NOW, seed=3, in_seconds=False):
    """`count` events over the hours before `start`, each received a random delay after it happened."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        true = start - dt.timedelta(minutes=7 * i + 1)
        received = int(true.timestamp() * 1000) + rng.randint(*delays_ms)
        time = shown_ms(true, legacy_zone)
        props = {"time": time // 1000 if in_seconds else time, "$mp_api_timestamp_ms": received}
        events.append({"event": "Page View", "properties": props})
    return events


def test_given_utc_project_read_as_utc_when_compared_then_no_mismatch():
    """A project created since 2023 with the default settings passes."""
    finding = compare_times(sample(), settings())
    assert not finding.mismatch and finding.residual_ms == 0 and finding.events == 60


def test_given_legacy_pacific_project_read_as_utc_when_compared_then_turn_on_legacy():
    """Times 7 h behind their receipt: the message says to turn on legacy_local_time, with the offset seen."""
    finding = compare_times(sample("US/Pacific"), settings())
    assert finding.mismatch and finding.observed_ms == -7 * 3_600_000
    message = finding.problem(settings())
    assert "7 h behind" in message and "UTC-07:00" in message and "turn on legacy_local_time" in message
    assert "Project Settings > Overview" in message


def test_given_legacy_kolkata_project_read_as_utc_when_compared_then_half_hour_offset_found():
    """A +05:30 zone is found as such: 5 h 30 min ahead."""
    finding = compare_times(sample("Asia/Kolkata"), settings())
    message = finding.problem(settings())
    assert finding.mismatch and "5 h 30 min ahead" in message and "UTC+05:30" in message


def test_given_legacy_kathmandu_project_read_as_utc_when_compared_then_quarter_hour_offset_found():
    """+05:45 is a whole quarter hour too."""
    finding = compare_times(sample("Asia/Kathmandu"), settings())
    assert finding.mismatch and finding.observed_ms == (5 * 60 + 45) * 60_000


def test_given_utc_project_read_as_legacy_when_compared_then_turn_off_legacy():
    """A project that stores UTC, configured as legacy US/Pacific: turn legacy_local_time off."""
    config = settings("US/Pacific", legacy=True)
    finding = compare_times(sample(), config)
    message = finding.problem(config)
    assert finding.mismatch and finding.residual_ms == 7 * 3_600_000
    assert "already UTC" in message and "turn off legacy_local_time" in message


def test_given_legacy_berlin_project_read_as_legacy_pacific_when_compared_then_fix_project_timezone():
    """A legacy project in another zone than configured: the message names both offsets and project_timezone."""
    config = settings("US/Pacific", legacy=True)
    finding = compare_times(sample("Europe/Berlin"), config)
    message = finding.problem(config)
    assert finding.mismatch and finding.residual_ms == 9 * 3_600_000
    assert "UTC+02:00" in message and "US/Pacific is UTC-07:00" in message and "set project_timezone" in message


@pytest.mark.parametrize("zone", ["US/Pacific", "Europe/Berlin", "Asia/Kolkata"])
def test_given_legacy_project_read_with_its_zone_when_compared_then_no_mismatch(zone):
    """Right settings pass, and the log line says which offset the sample showed."""
    config = settings(zone, legacy=True)
    finding = compare_times(sample(zone), config)
    assert not finding.mismatch and finding.residual_ms == 0
    assert finding.observed_ms == finding.assumed_ms != 0
    assert f"(legacy_local_time on, project_timezone {zone}) fit" in finding.summary(config)


def test_given_legacy_pacific_sample_across_fall_back_when_read_with_its_zone_then_no_mismatch():
    """A sample spanning the end of daylight saving (outside the repeated hour) still agrees."""
    config = settings("US/Pacific", legacy=True)
    first_half = sample("US/Pacific", count=30, start=dt.datetime(2024, 11, 3, 8, 0, tzinfo=dt.UTC))
    second_half = sample("US/Pacific", count=30, start=dt.datetime(2024, 11, 3, 13, 0, tzinfo=dt.UTC))
    assert not compare_times(first_half[:15] + second_half[:15], config).mismatch


def test_given_few_events_when_compared_then_no_conclusion():
    """Four events are too few to accuse the settings, whatever they show."""
    finding = compare_times(sample("US/Pacific", count=4), settings())
    assert not finding.mismatch and finding.events == 4 and "only 4" in finding.summary(settings())


def test_given_imported_events_with_scattered_delays_when_compared_then_no_conclusion():
    """Events that reached Mixpanel anywhere from minutes to 6 h late show no common offset."""
    finding = compare_times(sample(delays_ms=(0, 6 * 3_600_000)), settings())
    assert not finding.mismatch and finding.residual_ms is None
    assert "not verified" in finding.summary(settings())


def test_given_steady_37_minute_pipeline_delay_when_compared_then_not_taken_for_a_timezone():
    """A delay that is no whole quarter hour is not an offset, even when every event shows it."""
    finding = compare_times(sample(delays_ms=(37 * 60_000, 38 * 60_000)), settings())
    assert not finding.mismatch and "median -37 min" in finding.summary(settings())


def test_given_time_in_seconds_and_processing_time_only_when_compared_then_still_judged():
    """`time` in seconds and mp_processing_time_ms instead of $mp_api_timestamp_ms work too."""
    events = sample("US/Pacific", in_seconds=True)
    for event in events:
        event["properties"]["mp_processing_time_ms"] = event["properties"].pop("$mp_api_timestamp_ms")
    assert compare_times(events, settings()).observed_ms == -7 * 3_600_000


def test_given_events_without_receipt_times_when_compared_then_they_are_left_out():
    """Events lacking a receive time, a numeric time, or any shape at all are not evidence."""
    events = sample("US/Pacific", count=6)
    events[0]["properties"].pop("$mp_api_timestamp_ms")
    events[1]["properties"]["time"] = "yesterday"
    events += [["not", "an", "event"], {"event": "x"}, {"event": "x", "properties": {"time": True}}]
    finding = compare_times(events, settings())
    assert finding.events == 4 and not finding.mismatch


def test_given_a_sample_of_mostly_empty_lines_when_events_read_then_only_the_events_remain():
    """Runs of empty lines (a newline bomb) are skipped; events between them and at either end are kept."""
    body = b'{"event": "A"}\n' + b"\n" * 100_000 + b'{"event": "B"}\n\n  \n{"event": "C"}'
    assert [event["event"] for event in _events(body)] == ["A", "B", "C"]
