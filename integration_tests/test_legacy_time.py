"""Time done right: legacy projects' local days and times, DST, and check's timezone advice.

The matrices run the console script's `run` in this process (harness.run_in_process); the repeated-hour
reads and the empty-sample check are real CLI runs.
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import time
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest

from fake_mixpanel import FakeEvent, FakeMixpanel, generate_events
from integration_tests.harness import (
    assert_no_secrets,
    config_for,
    event_key,
    make_fake,
    record_keys,
    run_cli,
    run_in_process,
    truth,
)

HOUR_MS = 3_600_000
SPRING_US = (dt.date(2024, 3, 8), dt.date(2024, 3, 12))  # US/Pacific springs forward on 2024-03-10
SPRING_EU = (dt.date(2024, 3, 29), dt.date(2024, 4, 2))  # Europe/Berlin on 2024-03-31
FALL = (dt.date(2024, 10, 25), dt.date(2024, 11, 5))  # Berlin falls back on 2024-10-27, US/Pacific on 2024-11-03


def epoch_ms(moment: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    """A UTC instant written the way records carry `time`."""
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reported_ms(event: FakeEvent, legacy_tz: str | None) -> int:
    """The documented `time` of a record: true UTC, except that a wall time of the repeated fall-back hour
    is read as its first pass (so an event of the second pass comes out one hour early)."""
    if legacy_tz is None:
        return event.time_ms
    local = dt.datetime.fromtimestamp(event.time_ms // 1000, ZoneInfo(legacy_tz))
    return epoch_ms(local.replace(fold=0)) + event.time_ms % 1000


def day_starts(zone: str, first: dt.date, last: dt.date) -> list[int]:
    """Epoch ms of every local midnight from `first` to the day after `last`."""
    days = (last - first).days + 2
    return [epoch_ms(dt.datetime.combine(first + dt.timedelta(days=i), dt.time(), ZoneInfo(zone))) for i in range(days)]


def transitions(zone: str, first: dt.date, last: dt.date) -> list[int]:
    """Epoch ms of every UTC-offset change of `zone` between two dates (found hour by hour)."""
    tz = ZoneInfo(zone)
    start = epoch_ms(dt.datetime.combine(first, dt.time(), dt.UTC)) - 86_400_000
    found = []
    for hour in range(((last - first).days + 3) * 24):
        a, b = start + hour * HOUR_MS, start + (hour + 1) * HOUR_MS
        offset = [dt.datetime.fromtimestamp(t / 1000, tz).utcoffset() for t in (a, b)]
        if offset[0] != offset[1]:
            found.append(b)
    return found


def edge(at_ms: int, label: str) -> FakeEvent:
    """A hand-placed event at an instant that matters (local midnight, DST change), processed 1.5 s later."""
    props = {"distinct_id": "edge-user", "$insert_id": f"edge-{label}-{at_ms}", "label": label}
    return FakeEvent("Edge", at_ms, props, at_ms + 1500)


def range_events(zone: str, first: dt.date, last: dt.date, seed: int) -> list[FakeEvent]:
    """Random events from two days before to two days after the range, plus an event one second either
    side of each local midnight and each DST change, and one in each pass of a repeated hour."""
    span = (last - first).days + 5
    events = generate_events(90 * span, first - dt.timedelta(days=2), span, seed=seed)
    for at in day_starts(zone, first, last):
        events += [edge(at - 1000, "before midnight"), edge(at, "midnight"), edge(at + 1000, "after midnight")]
    for at in transitions(zone, first, last):
        events += [edge(at - 1000, "before change"), edge(at + 1000, "after change")]
        events += [edge(at - 30 * 60_000, "first pass"), edge(at + 30 * 60_000, "second pass")]
    return events


@pytest.fixture
def servers() -> Iterator[list[FakeMixpanel]]:
    """Fakes a test starts; all stopped at its end."""
    started: list[FakeMixpanel] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[FakeMixpanel], events: list[FakeEvent], legacy_tz: str | None) -> FakeMixpanel:
    """A started fake with the real clock, as a legacy project in `legacy_tz` or (None) a UTC project."""
    fake = make_fake(events, legacy_timezone=legacy_tz)
    servers.append(fake)
    return fake


def requested_days(fake: FakeMixpanel) -> list[dt.date]:
    """Every day the export requests asked for (a day twice if two windows overlap)."""
    days = []
    for request in fake.export_requests:
        day, last = dt.date.fromisoformat(request.params["from_date"]), dt.date.fromisoformat(request.params["to_date"])
        while day <= last:
            days.append(day)
            day += dt.timedelta(days=1)
    return days


def span(first: dt.date, last: dt.date) -> list[dt.date]:
    """The days from first to last, inclusive."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


# -- read: exact records and true UTC times ------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone,legacy,dates",
    [
        ("US/Pacific", True, SPRING_US),
        ("US/Pacific", True, FALL),
        ("Europe/Berlin", True, SPRING_EU),
        ("Europe/Berlin", True, FALL),
        ("Asia/Kolkata", True, SPRING_US),
        ("US/Pacific", False, FALL),
        ("Europe/Berlin", False, SPRING_EU),
    ],
    ids=["pacific-spring", "pacific-fall", "berlin-spring", "berlin-fall", "kolkata", "utc-pacific", "utc-berlin"],
)
def test_given_project_and_dst_change_when_read_then_its_days_exactly_and_true_utc_times(
    tmp_path, servers, zone, legacy, dates
):
    """Legacy projects: the project's own days, `time` true UTC, properties.time untouched; newer ones: UTC days."""
    first, last = dates
    legacy_tz = zone if legacy else None
    fake = serve(servers, range_events(zone if legacy else "UTC", first, last, seed=first.toordinal()), legacy_tz)
    config = config_for(
        fake, start_date=first.isoformat(), end_date=last.isoformat(), project_timezone=zone, legacy_local_time=legacy
    )
    run = run_in_process(tmp_path, "read", config)
    assert run.returncode == 0, run.stdout[-2000:]
    assert_no_secrets(run.stdout, run.stderr)
    assert record_keys(run.records) == truth(fake, first, last, legacy_tz=legacy_tz)
    assert sorted(requested_days(fake)) == span(first, last)  # each day once (windows arrive in any order)
    by_key = {event_key(e.name, e.export_properties(time_in_ms=True, legacy_tz=legacy_tz)): e for e in fake.events}
    wrong = []
    for record in run.records:
        event = by_key[event_key(record["event"], record["properties"])]
        if record["time"] != iso(reported_ms(event, legacy_tz)):
            wrong.append((record["time"], iso(event.time_ms), record["properties"].get("label")))
    assert wrong == []
    early = [r for r in run.records if r["time"] != iso(by_key[event_key(r["event"], r["properties"])].time_ms)]
    assert bool(early) == (legacy and dates == FALL and zone != "Asia/Kolkata")  # second passes of a repeated hour


@pytest.mark.parametrize(
    "zone,night,wall",
    [("US/Pacific", dt.date(2024, 11, 3), "01:30"), ("Europe/Berlin", dt.date(2024, 10, 27), "02:30")],
)
def test_given_events_in_both_passes_of_the_repeated_hour_when_read_then_both_read_as_the_first_pass(
    tmp_path, servers, zone, night, wall
):
    """The documented limit: a wall time of the repeated fall-back hour is taken as daylight time (first pass)."""
    hour, minute = map(int, wall.split(":"))
    local = dt.datetime.combine(night, dt.time(hour, minute), ZoneInfo(zone))
    first_pass, second_pass = epoch_ms(local.replace(fold=0)), epoch_ms(local.replace(fold=1))
    assert second_pass - first_pass == HOUR_MS
    fake = serve(servers, [edge(first_pass, "first pass"), edge(second_pass, "second pass")], zone)
    config = config_for(fake, start_date=night.isoformat(), end_date=night.isoformat(), project_timezone=zone,
                        legacy_local_time=True)
    run = run_cli(tmp_path, "read", config)
    assert run.returncode == 0, run.stdout[-2000:]
    times = {r["properties"]["label"]: (r["time"], r["properties"]["time"]) for r in run.records}
    wall_ms = first_pass + int(local.utcoffset().total_seconds() * 1000)
    assert times == {"first pass": (iso(first_pass), wall_ms), "second pass": (iso(first_pass), wall_ms)}


# -- check: which setting to change ---------------------------------------------------------------------------


def recent_events(now_ms: int, count: int = 200, seed: int = 11) -> list[FakeEvent]:
    """Events every 13 min 7 s over the last ~44 hours, each received 0.5–90 s after it happened."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        at = now_ms - 2 * 60_000 - i * 787_000
        props = {"distinct_id": f"user-{i % 17}", "$insert_id": f"recent-{i}"}
        events.append(FakeEvent("Page View", at, props, at + rng.randint(500, 90_000)))
    return events


def status_of(run) -> dict:
    """The one CONNECTION_STATUS of a check run."""
    (status,) = run.of("CONNECTION_STATUS")
    return status["connectionStatus"]


def local_today(zone: str, at: float | None = None) -> dt.date:
    """Today's date in a zone (now, or at an epoch second)."""
    return dt.datetime.fromtimestamp(time.time() if at is None else at, ZoneInfo(zone)).date()


def failed_check(tmp_path, fake: FakeMixpanel, **overrides) -> str:
    """Run check, assert it FAILED cleanly without leaking a secret, and return its message."""
    run = run_in_process(tmp_path, "check", config_for(fake, **overrides))
    assert_no_secrets(run.stdout, run.stderr)
    status = status_of(run)
    assert run.returncode == 0 and status["status"] == "FAILED", status
    return status["message"]


def test_given_configured_today_ahead_of_the_projects_when_check_then_failed_naming_the_setting(tmp_path, servers):
    """Mixpanel refuses today's date: one request, and the message says which setting to change.

    Which mismatch can show this depends on the hour the test runs: before 11:00 UTC, a legacy project in
    Pacific/Pago_Pago (-11) is still on yesterday while the config says UTC; from 10:00 UTC on,
    Pacific/Kiritimati (+14), configured as a legacy zone for a UTC project, is already on tomorrow.
    """
    now, soon = time.time(), time.time() + 180
    scenarios = [
        ("Pacific/Pago_Pago", {}, "UTC", "turn on legacy_local_time"),
        (None, {"project_timezone": "Pacific/Kiritimati", "legacy_local_time": True}, "Pacific/Kiritimati",
         "turn off legacy_local_time"),
    ]
    fitting = [
        scenario
        for scenario in scenarios
        if all(local_today(scenario[0] or "UTC", t) < local_today(scenario[2], t) for t in (now, soon))
    ]
    if not fitting:
        pytest.skip("no zone has a date behind the configured one at this moment")
    project_tz, overrides, config_tz, advice = fitting[0]
    fake = serve(servers, recent_events(int(now * 1000)), project_tz)
    message = failed_check(tmp_path, fake, **overrides)
    today = local_today(config_tz, now)
    assert f"Mixpanel refused {today}, today in {config_tz}" in message and advice in message
    (request,) = fake.export_requests
    assert request.params["to_date"] == today.isoformat() and request.params["limit"] == "100"


def test_given_legacy_zone_a_day_ahead_of_the_projects_when_check_then_failed_naming_project_timezone(
    tmp_path, servers
):
    """Kiritimati (+14) configured for a legacy Pago_Pago (-11) project: always a day ahead, always refused."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), "Pacific/Pago_Pago")
    message = failed_check(tmp_path, fake, project_timezone="Pacific/Kiritimati", legacy_local_time=True)
    assert "timezone behind Pacific/Kiritimati" in message and "Set project_timezone" in message
    assert "Project Settings > Overview" in message and len(fake.export_requests) == 1


def test_given_legacy_kolkata_project_configured_as_utc_when_check_then_failed_with_offset(tmp_path, servers):
    """Event times 5 h 30 min ahead of their receipt: turn on legacy_local_time."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), "Asia/Kolkata")
    message = failed_check(tmp_path, fake)
    assert "5 h 30 min ahead" in message and "UTC+05:30" in message and "turn on legacy_local_time" in message
    assert len(fake.export_requests) <= 2 and {r.params["limit"] for r in fake.export_requests} == {"100"}


def test_given_legacy_pacific_project_configured_as_utc_when_check_then_told_to_turn_on_legacy(tmp_path, servers):
    """Refused date (UTC night) or offset times (UTC day): either way, the advice is legacy_local_time."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), "US/Pacific")
    message = failed_check(tmp_path, fake)
    assert "turn on legacy_local_time" in message and "project_timezone" in message


def test_given_utc_project_configured_as_legacy_when_check_then_told_to_turn_off_legacy(tmp_path, servers):
    """A project that stores UTC, configured as legacy US/Pacific: its times would be shifted; turn it off."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), None)
    message = failed_check(tmp_path, fake, project_timezone="US/Pacific", legacy_local_time=True)
    assert "already UTC" in message and "turn off legacy_local_time" in message


def test_given_legacy_berlin_project_configured_as_legacy_pacific_when_check_then_told_to_fix_project_timezone(
    tmp_path, servers
):
    """A legacy project in another zone than configured: set project_timezone, both offsets named."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), "Europe/Berlin")
    message = failed_check(tmp_path, fake, project_timezone="US/Pacific", legacy_local_time=True)
    berlin = dt.datetime.now(ZoneInfo("Europe/Berlin")).utcoffset()
    assert f"UTC+0{int(berlin.total_seconds() // 3600)}:00" in message
    assert "US/Pacific is UTC-0" in message and "set project_timezone" in message


@pytest.mark.parametrize(
    "project_tz,overrides",
    [
        ("US/Pacific", {"project_timezone": "US/Pacific", "legacy_local_time": True}),
        ("Asia/Kolkata", {"project_timezone": "Asia/Kolkata", "legacy_local_time": True}),
        (None, {"project_timezone": "US/Pacific"}),
    ],
    ids=["legacy-pacific", "legacy-kolkata", "utc"],
)
def test_given_settings_that_fit_the_project_when_check_then_succeeded_after_judging_a_sample(
    tmp_path, servers, project_tz, overrides
):
    """Right settings pass: today's date in the project's zone first, at most two requests of 100 events."""
    fake = serve(servers, recent_events(int(time.time() * 1000)), project_tz)
    run = run_in_process(tmp_path, "check", config_for(fake, **overrides))
    assert_no_secrets(run.stdout, run.stderr)
    assert run.returncode == 0 and status_of(run)["status"] == "SUCCEEDED", status_of(run)
    requests = fake.export_requests
    assert 1 <= len(requests) <= 2 and {r.params["limit"] for r in requests} == {"100"}
    today = local_today(project_tz or "UTC")
    assert requests[0].params["from_date"] == requests[0].params["to_date"] == today.isoformat()
    assert "fit: in " in run.logs() and " sampled events `time` minus receipt is a median -" in run.logs()


def test_given_no_events_today_or_yesterday_when_check_then_succeeded_after_two_requests(tmp_path, servers):
    """An empty sample proves the connection but not the timezone: today, then yesterday, then SUCCEEDED."""
    two_days_ago = int(time.time() * 1000) - 2 * 86_400_000 - HOUR_MS
    fake = serve(servers, recent_events(two_days_ago), "US/Pacific")
    run = run_cli(tmp_path, "check", config_for(fake, project_timezone="US/Pacific", legacy_local_time=True))
    assert status_of(run)["status"] == "SUCCEEDED"
    today = local_today("US/Pacific")
    asked = [r.params["from_date"] for r in fake.export_requests]
    assert asked == [today.isoformat(), (today - dt.timedelta(days=1)).isoformat()]
    assert "not verified: only 0" in run.logs()
    assert collections.Counter(r.status for r in fake.export_requests) == {200: 2}
