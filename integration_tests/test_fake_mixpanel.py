"""Tests of the fake Mixpanel export server itself, over real HTTP, so connector tests can trust it.

Timing note (not asserted): 160,000 generated events over 30 days (90.8 MB uncompressed, 16.5 MB gzipped),
one full-range request with time_in_ms=true on a 2-core box: first request 2.0 s (renders and caches every line),
repeat requests 0.7-0.8 s server time with the body streamed in ~2 MB chunks (time to first byte 0.1 s), so a client
parsing with orjson finishes 0.8 s after sending. Identity encoding: 0.3 s.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import gzip
import json
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from fake_mixpanel import FakeEvent, FakeMixpanel, Fault, RequestRecord, generate_events
from fake_mixpanel.data import AWKWARD_VALUES
from fake_mixpanel.server import (
    ERR_INVALID_CREDENTIALS,
    ERR_NO_PROJECT_PERMISSION,
    ERR_PROJECT_ID_NOT_INTEGER,
    ERR_PROJECT_ID_REQUIRED,
    ERR_TO_DATE_IN_FUTURE,
    ERR_UNABLE_TO_AUTHENTICATE,
)

DAY0 = dt.date(2024, 3, 1)
DAYS = 10
SA = ("sa-user", "sa-secret")
PROJECT_SECRET = ("proj-secret", "")
PROJECT_ID = "12345"


def ms(text: str) -> int:
    """Epoch milliseconds of an ISO UTC timestamp, to keep test clocks readable."""
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp() * 1000)


NOW = ms("2024-03-20T12:00:00")
EVENTS = generate_events(400, DAY0, DAYS, seed=7)
LATE_EVENTS = generate_events(400, DAY0, DAYS, seed=7, late_fraction=0.3)


@pytest.fixture
def server() -> Iterator[FakeMixpanel]:
    """A fresh fake with the standard data set and a fixed clock well after all processing."""
    with FakeMixpanel(EVENTS, now_ms=NOW) as fake:
        yield fake


def export(
    fake: FakeMixpanel, auth: Any = SA, headers: dict[str, str] | None = None, **params: Any
) -> requests.Response:
    """Call the export endpoint with sensible defaults for every required parameter."""
    query = {"from_date": "2024-03-01", "to_date": "2024-03-10", "project_id": PROJECT_ID, **params}
    query = {k: v for k, v in query.items() if v is not None}
    return requests.get(f"{fake.base_url}/api/2.0/export", params=query, auth=auth, headers=headers, timeout=10)


def parse(body: bytes) -> list[dict[str, Any]]:
    """Parse JSON Lines the safe way: split on b"\\n" only, stdlib json so big integers stay exact."""
    return [json.loads(line) for line in body.split(b"\n") if line]


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    """Order-free, comparable form of exported lines."""
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def expected(
    events: list[FakeEvent],
    first: dt.date,
    last: dt.date,
    now_ms: int = NOW,
    legacy_tz: str | None = None,
    time_in_ms: bool = False,
) -> list[str]:
    """What the export must contain, computed independently of the server's index."""
    rows = []
    for event in events:
        shown = event.export_time_ms(legacy_tz)
        day = dt.datetime.fromtimestamp(shown / 1000, dt.UTC).date()
        visible = event.processing_ms is None or event.processing_ms <= now_ms
        if first <= day <= last and visible:
            rows.append(event.export_dict(time_in_ms, legacy_tz))
    return canonical(rows)


def error(response: requests.Response) -> str:
    """The message of a JSON error body."""
    return response.json()["error"]


# -- authentication ---------------------------------------------------------------------------------------------


def test_given_service_account_and_project_id_when_export_then_200(server: FakeMixpanel) -> None:
    """A service account with the right project_id is served."""
    response = export(server)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert server.requests[-1].auth == "service_account"


def test_given_project_secret_without_project_id_when_export_then_200(server: FakeMixpanel) -> None:
    """The deprecated project secret works without project_id."""
    response = export(server, auth=PROJECT_SECRET, project_id=None)
    assert response.status_code == 200
    assert server.requests[-1].auth == "project_secret"


def test_given_service_account_without_project_id_when_export_then_400(server: FakeMixpanel) -> None:
    """project_id is mandatory with a service account."""
    response = export(server, project_id=None)
    assert (response.status_code, error(response)) == (400, ERR_PROJECT_ID_REQUIRED)


def test_given_non_integer_project_id_when_export_then_400(server: FakeMixpanel) -> None:
    """A non-integer project_id is a bad request."""
    response = export(server, project_id="abc")
    assert (response.status_code, error(response)) == (400, ERR_PROJECT_ID_NOT_INTEGER)


def test_given_other_project_id_when_export_then_403(server: FakeMixpanel) -> None:
    """A project the account cannot see is forbidden."""
    response = export(server, project_id="999")
    assert (response.status_code, error(response)) == (403, ERR_NO_PROJECT_PERMISSION)


@pytest.mark.parametrize(
    ("auth", "kind"), [(None, "none"), (("sa-user", "wrong"), "bad"), (("proj-secret", "x"), "bad")]
)
def test_given_missing_or_bad_credentials_when_export_then_401(server: FakeMixpanel, auth: Any, kind: str) -> None:
    """Missing or wrong credentials get 401 Invalid credentials."""
    response = export(server, auth=auth)
    assert (response.status_code, error(response)) == (401, ERR_INVALID_CREDENTIALS)
    assert server.requests[-1].auth == kind


def test_given_400_auth_style_when_bad_credentials_then_400_unable_to_authenticate() -> None:
    """Mixpanel sometimes answers bad credentials with 400; the fake can too."""
    with FakeMixpanel(EVENTS, now_ms=NOW, auth_error_style="400") as fake:
        response = export(fake, auth=("sa-user", "nope"))
    assert (response.status_code, error(response)) == (400, ERR_UNABLE_TO_AUTHENTICATE)


def test_given_bad_authorization_header_when_export_then_401(server: FakeMixpanel) -> None:
    """A non-Basic or undecodable Authorization header is bad credentials, not a crash."""
    for header in ("Bearer abc", "Basic !!!notbase64"):
        response = export(server, auth=None, headers={"Authorization": header})
        assert response.status_code == 401


# -- dates and clock ---------------------------------------------------------------------------------------------


def test_given_one_day_when_export_then_exactly_that_utc_day(server: FakeMixpanel) -> None:
    """from_date == to_date returns that whole UTC day and nothing else."""
    response = export(server, from_date="2024-03-04", to_date="2024-03-04")
    rows = parse(response.content)
    assert rows
    assert canonical(rows) == expected(EVENTS, dt.date(2024, 3, 4), dt.date(2024, 3, 4))


def test_given_range_when_export_then_both_ends_inclusive(server: FakeMixpanel) -> None:
    """Both from_date and to_date are inclusive."""
    rows = parse(export(server, from_date="2024-03-02", to_date="2024-03-04").content)
    assert canonical(rows) == expected(EVENTS, dt.date(2024, 3, 2), dt.date(2024, 3, 4))
    days = {dt.datetime.fromtimestamp(r["properties"]["time"], dt.UTC).date() for r in rows}
    assert days == {dt.date(2024, 3, 2), dt.date(2024, 3, 3), dt.date(2024, 3, 4)}


def test_given_range_without_events_when_export_then_empty_200(server: FakeMixpanel) -> None:
    """An empty result is an empty 200 body."""
    response = export(server, from_date="2023-01-01", to_date="2023-01-31")
    assert (response.status_code, response.content) == (200, b"")


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"from_date": None}, "from_date"),
        ({"to_date": None}, "to_date"),
        ({"from_date": "2024-3-1"}, "from_date"),
        ({"to_date": "2024-02-30"}, "to_date"),
        ({"from_date": "20240301"}, "from_date"),
    ],
)
def test_given_missing_or_invalid_date_when_export_then_400_naming_it(
    server: FakeMixpanel, params: dict[str, Any], named: str
) -> None:
    """Missing or malformed dates are 400 with the parameter named."""
    response = export(server, **params)
    assert response.status_code == 400
    assert named in error(response)


def test_given_from_after_to_when_export_then_400(server: FakeMixpanel) -> None:
    """A reversed range is rejected."""
    response = export(server, from_date="2024-03-05", to_date="2024-03-04")
    assert response.status_code == 400


def test_given_fixed_clock_when_to_date_is_tomorrow_then_400(server: FakeMixpanel) -> None:
    """to_date after the clock's today is refused; today itself is fine."""
    tomorrow = export(server, to_date="2024-03-21")
    assert (tomorrow.status_code, error(tomorrow)) == (400, ERR_TO_DATE_IN_FUTURE)
    assert export(server, to_date="2024-03-20").status_code == 200


def test_given_fixed_clock_when_request_then_date_header_follows_clock(server: FakeMixpanel) -> None:
    """The Date header reports the fake clock, at second resolution."""
    server.now_ms = NOW + 1_999
    response = export(server)
    assert response.headers["Date"] == email.utils.formatdate((NOW + 1_000) / 1000, usegmt=True)
    assert response.headers["Date"] == "Wed, 20 Mar 2024 12:00:01 GMT"


def test_given_late_events_when_clock_advances_then_they_become_visible() -> None:
    """Events appear only once their processing time has passed on the server clock."""
    early_now = ms("2024-03-11T00:00:00")
    with FakeMixpanel(LATE_EVENTS, now_ms=early_now) as fake:
        before = parse(export(fake).content)
        fake.now_ms = NOW
        after = parse(export(fake).content)
    assert canonical(before) == expected(LATE_EVENTS, DAY0, dt.date(2024, 3, 10), early_now)
    assert canonical(after) == expected(LATE_EVENTS, DAY0, dt.date(2024, 3, 10), NOW)
    assert len(before) < len(after) == len(LATE_EVENTS)
    assert all(r["properties"].get("mp_processing_time_ms", 0) <= early_now for r in before)


def test_given_events_added_while_serving_when_export_then_included(server: FakeMixpanel) -> None:
    """add_events makes new data visible to the next request."""
    extra = FakeEvent("Purchase", ms("2024-03-05T10:00:00"), {"distinct_id": "late", "$insert_id": "x1"}, NOW - 1)
    server.add_events([extra])
    rows = parse(export(server, from_date="2024-03-05", to_date="2024-03-05").content)
    assert extra.export_dict() in rows


def gzip_export(base_url: str) -> tuple[requests.Response, bytes]:
    """The gzip answer for 2024-03-01..10 and its raw (still compressed) body."""
    response = requests.get(
        f"{base_url}/api/2.0/export",
        params={"from_date": "2024-03-01", "to_date": "2024-03-10", "project_id": PROJECT_ID},
        auth=SA,
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=10,
    )
    return response, response.raw.read(decode_content=False)


# -- encoding and format -----------------------------------------------------------------------------------------


def test_given_accept_gzip_when_export_then_gzip_body_equal_to_plain(server: FakeMixpanel) -> None:
    """gzip is applied on request and decodes to the same bytes as the identity response."""
    zipped, raw = gzip_export(server.base_url)
    plain = export(server, headers={"Accept-Encoding": "identity"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(raw) == plain.content
    assert [r.gzip for r in server.requests] == [True, False]


def test_given_time_in_ms_when_export_then_milliseconds_else_floored_seconds(server: FakeMixpanel) -> None:
    """time_in_ms=true gives ms; otherwise integer seconds, floored."""
    by_id = {e.insert_id: e for e in EVENTS if e.insert_id}
    for flag, convert in (("true", lambda t: t), (None, lambda t: t // 1000)):
        rows = parse(export(server, time_in_ms=flag).content)
        for row in rows:
            event = by_id.get(row["properties"].get("$insert_id"))
            if event is not None:
                assert row["properties"]["time"] == convert(event.time_ms)
                assert isinstance(row["properties"]["time"], int)


def test_given_event_without_processing_time_when_export_then_fields_absent(server: FakeMixpanel) -> None:
    """Events lacking mp_processing_time_ms export neither it nor $mp_api_timestamp_ms; others carry both."""
    rows = parse(export(server).content)
    missing = [r for r in rows if "mp_processing_time_ms" not in r["properties"]]
    assert missing and all("$mp_api_timestamp_ms" not in r["properties"] for r in missing)
    present = [r["properties"] for r in rows if "mp_processing_time_ms" in r["properties"]]
    assert all(p["mp_processing_time_ms"] == p["$mp_api_timestamp_ms"] for p in present)


def test_given_awkward_values_when_split_on_newline_only_then_round_trip_exactly(server: FakeMixpanel) -> None:
    """U+2028/U+2029/U+0085, escaped CR/LF, emoji and >64-bit integers survive a b"\\n"-only split."""
    body = export(server, headers={"Accept-Encoding": "gzip"}).content
    for raw in ("\u2028", "\u2029", "\u0085"):
        assert raw.encode("utf-8") in body  # sent raw, not escaped, as Mixpanel does
    assert len(body.decode("utf-8").splitlines()) > body.count(b"\n")  # str.splitlines would break lines
    rows = parse(body)
    assert canonical(rows) == expected(EVENTS, DAY0, dt.date(2024, 3, 10))
    values = [row["properties"].get(key) for row in rows for key in ("big_int", "huge_int")]
    assert {2**63 - 1, 12345678901234567890, -(2**63), 2**64, 123456789012345678901234567890} <= set(values)
    for line in body.split(b"\n"):
        if line and b"huge_int" not in line:
            assert orjson.loads(line) == json.loads(line)


def test_given_generated_data_then_every_awkward_kind_is_served(server: FakeMixpanel) -> None:
    """Every awkward (name, value) pair from the catalogue reaches the client unchanged."""
    rows = parse(export(server).content)
    seen = {json.dumps([k, v]) for row in rows for k, v in row["properties"].items()}
    for name, value in AWKWARD_VALUES:
        assert json.dumps([name, value]) in seen, name


@pytest.mark.parametrize("order", ["shuffled", "time", "reverse"])
def test_given_any_order_option_when_export_then_same_set(order: str) -> None:
    """The order option changes only the order; shuffled is not time-sorted and is stable per request."""
    with FakeMixpanel(EVENTS, now_ms=NOW, order=order) as fake:  # type: ignore[arg-type]
        first = export(fake, time_in_ms="true").content
        second = export(fake, time_in_ms="true").content
    rows = parse(first)
    times = [r["properties"]["time"] for r in rows]
    assert first == second
    assert canonical(rows) == expected(EVENTS, DAY0, dt.date(2024, 3, 10), time_in_ms=True)
    if order == "time":
        assert times == sorted(times)
    elif order == "reverse":
        assert times == sorted(times, reverse=True)
    else:
        assert times != sorted(times) and times != sorted(times, reverse=True)


# -- legacy timezone projects ------------------------------------------------------------------------------------


def _event(at: str, name: str = "Page View") -> FakeEvent:
    """A plain event at an ISO UTC instant, processed a second later."""
    time_ms = ms(at)
    return FakeEvent(name, time_ms, {"distinct_id": "u1", "$insert_id": at}, time_ms + 1000)


def test_given_us_pacific_project_when_dst_starts_then_offset_changes_from_8_to_7_hours() -> None:
    """Legacy time is wall-clock-as-UTC: −8 h before 2024-03-10 02:00 PST, −7 h after; processing stays UTC."""
    winter, summer = _event("2024-03-09T20:00:00"), _event("2024-03-11T20:00:00")
    with FakeMixpanel([winter, summer], now_ms=NOW, legacy_timezone="US/Pacific") as fake:
        rows = parse(export(fake, to_date="2024-03-12", time_in_ms="true").content)
    by_id = {r["properties"]["$insert_id"]: r["properties"] for r in rows}
    assert by_id[winter.insert_id]["time"] == winter.time_ms - 8 * 3_600_000
    assert by_id[summer.insert_id]["time"] == summer.time_ms - 7 * 3_600_000
    assert by_id[summer.insert_id]["mp_processing_time_ms"] == summer.processing_ms


def test_given_us_pacific_project_when_export_one_day_then_local_day_membership() -> None:
    """Day filters use the local date: 2024-03-10T05:00Z is still 2024-03-09 in Los Angeles."""
    evening = _event("2024-03-10T05:00:00")
    with FakeMixpanel([evening], now_ms=NOW, legacy_timezone="US/Pacific") as fake:
        on_ninth = parse(export(fake, from_date="2024-03-09", to_date="2024-03-09").content)
        on_tenth = parse(export(fake, from_date="2024-03-10", to_date="2024-03-10").content)
    assert [r["properties"]["$insert_id"] for r in on_ninth] == [evening.insert_id]
    assert on_tenth == []


def test_given_kolkata_project_when_export_then_plus_5h30_and_next_local_day() -> None:
    """Asia/Kolkata shifts by +5:30, moving a 20:00Z event to the next local day."""
    late_evening = _event("2024-03-01T20:00:00")
    with FakeMixpanel([late_evening], now_ms=NOW, legacy_timezone="Asia/Kolkata") as fake:
        rows = parse(export(fake, from_date="2024-03-02", to_date="2024-03-02", time_in_ms="true").content)
        assert parse(export(fake, from_date="2024-03-01", to_date="2024-03-01").content) == []
    assert rows[0]["properties"]["time"] == late_evening.time_ms + 5 * 3_600_000 + 30 * 60_000


def test_given_legacy_timezone_when_to_date_is_local_today_then_judged_in_that_zone() -> None:
    """'Today' for to_date is the project's local day, not the UTC day."""
    utc_now = ms("2024-03-20T03:00:00")  # 2024-03-19 20:00 in Los Angeles, 08:30 in Kolkata
    with FakeMixpanel([], now_ms=utc_now, legacy_timezone="US/Pacific") as pacific:
        assert export(pacific, to_date="2024-03-20").status_code == 400
        assert export(pacific, to_date="2024-03-19").status_code == 200
    with FakeMixpanel([], now_ms=utc_now, legacy_timezone="Asia/Kolkata") as kolkata:
        assert export(kolkata, to_date="2024-03-20").status_code == 200


# -- filters -----------------------------------------------------------------------------------------------------


def test_given_event_filter_when_export_then_only_those_names(server: FakeMixpanel) -> None:
    """The event parameter (JSON array) keeps only the named events."""
    rows = parse(export(server, event=json.dumps(["Purchase", "Sign Up"])).content)
    wanted = [e for e in EVENTS if e.name in ("Purchase", "Sign Up")]
    assert rows and canonical(rows) == expected(wanted, DAY0, dt.date(2024, 3, 10))


@pytest.mark.parametrize("value", ["Purchase", '{"a": 1}', "[1, 2]", "[unclosed"])
def test_given_malformed_event_filter_when_export_then_400(server: FakeMixpanel, value: str) -> None:
    """The event parameter must be a JSON array of strings."""
    response = export(server, event=value)
    assert response.status_code == 400 and "event" in error(response)


def test_given_limit_when_export_then_truncated(server: FakeMixpanel) -> None:
    """limit truncates the result; out-of-range limits are refused."""
    assert len(parse(export(server, limit="5").content)) == 5
    for bad in ("0", "100001", "ten"):
        response = export(server, limit=bad)
        assert response.status_code == 400 and "limit" in error(response)


def test_given_processing_time_where_when_export_then_only_later_arrivals() -> None:
    """The connector's arrival filter on mp_processing_time_ms selects exactly the later-processed events."""
    cutoff = ms("2024-03-08T00:00:00")
    with FakeMixpanel(LATE_EVENTS, now_ms=NOW) as fake:
        rows = parse(export(fake, where=f'number(properties["mp_processing_time_ms"]) > {cutoff}').content)
    wanted = [e for e in LATE_EVENTS if e.processing_ms is not None and e.processing_ms > cutoff]
    assert rows and canonical(rows) == expected(wanted, DAY0, dt.date(2024, 3, 10))


def test_given_plan_and_processing_where_when_export_then_conjunction(server: FakeMixpanel) -> None:
    """A parenthesised and-expression combines a string test with the processing-time filter."""
    cutoff = ms("2024-03-05T00:00:00")
    where = f'(properties["plan"] == "pro") and (number(properties["mp_processing_time_ms"]) > {cutoff})'
    rows = parse(export(server, where=where).content)
    wanted = [
        e for e in EVENTS if e.properties["plan"] == "pro" and e.processing_ms is not None and e.processing_ms > cutoff
    ]
    assert rows and canonical(rows) == expected(wanted, DAY0, dt.date(2024, 3, 10))


def test_given_time_window_where_when_export_then_half_open_hour(server: FakeMixpanel) -> None:
    """$time compared with datetime(epoch seconds) selects a half-open window."""
    start = ms("2024-03-03T00:00:00") // 1000
    where = f'properties["$time"] >= datetime({start}) and properties["$time"] < datetime({start + 86_400})'
    rows = parse(export(server, where=where).content)
    wanted = [e for e in EVENTS if start * 1000 <= e.time_ms < (start + 86_400) * 1000]
    assert rows and canonical(rows) == expected(wanted, DAY0, dt.date(2024, 3, 10))


def test_given_unparseable_where_when_export_then_400_with_reason(server: FakeMixpanel) -> None:
    """A where expression the fake cannot parse is a 400 that says why."""
    response = export(server, where='properties["plan" == "pro"')
    assert response.status_code == 400
    assert error(response).startswith("invalid where expression: ")


# -- faults ------------------------------------------------------------------------------------------------------


def test_given_status_fault_when_export_then_that_status_headers_and_body(server: FakeMixpanel) -> None:
    """A status fault answers with the injected status, body and headers, then service resumes."""
    server.inject(1, Fault("status", status=429, headers={"Retry-After": "1"}))
    first, second = export(server), export(server)
    assert (first.status_code, first.headers["Retry-After"]) == (429, "1")
    assert "error" in first.json()
    assert second.status_code == 200
    assert [(r.status, r.fault) for r in server.requests] == [(429, "status"), (200, None)]


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_given_cut_off_fault_when_reading_body_then_client_sees_short_read(server: FakeMixpanel, encoding: str) -> None:
    """A cut-off body declares the full Content-Length but ends early, which the client must notice."""
    server.inject(1, Fault("cut_off", at_fraction=0.4))
    response = requests.get(
        f"{server.base_url}/api/2.0/export",
        params={"from_date": "2024-03-01", "to_date": "2024-03-10", "project_id": PROJECT_ID},
        auth=SA,
        headers={"Accept-Encoding": encoding},
        stream=True,
        timeout=10,
    )
    declared = int(response.headers["Content-Length"])
    with pytest.raises(requests.exceptions.RequestException):
        response.content  # noqa: B018 (reading the body is the action under test)
    record = server.requests[0]
    assert declared > 0 and record.fault == "cut_off"
    assert 0 < record.lines < len(parse(export(server).content))


@pytest.mark.parametrize("trailer", ["terminated early", "export terminated early", "[terminated early]"])
def test_given_terminated_early_fault_when_export_then_prefix_and_trailer_line(
    server: FakeMixpanel, trailer: str
) -> None:
    """An early-terminated export is a 200 with some valid lines and a final non-JSON trailer line."""
    server.inject(1, Fault("terminated_early", trailer=trailer, at_fraction=0.25))
    body = export(server).content
    lines = body.split(b"\n")
    assert lines[-1] == b"" and lines[-2] == trailer.encode()
    valid = [json.loads(line) for line in lines[:-2]]
    total = len(expected(EVENTS, DAY0, dt.date(2024, 3, 10)))
    assert len(valid) == server.requests[0].lines == total // 4


def test_given_drop_fault_when_export_then_connection_error(server: FakeMixpanel) -> None:
    """A dropped connection gives the client no response at all."""
    server.inject(1, Fault("drop"))
    with pytest.raises(requests.exceptions.ConnectionError):
        export(server)
    assert export(server).status_code == 200
    assert [(r.number, r.status, r.fault) for r in server.requests] == [(1, 0, "drop"), (2, 200, None)]


def test_given_bad_json_fault_when_export_then_exactly_one_corrupt_line(server: FakeMixpanel) -> None:
    """bad_json puts one unparseable line in an otherwise valid body."""
    server.inject(1, Fault("bad_json"))
    lines = [line for line in export(server).content.split(b"\n") if line]
    broken = []
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            broken.append(line)
    assert broken == [b'{"event": "Broken", "properties": {']
    assert len(lines) - 1 == len(expected(EVENTS, DAY0, dt.date(2024, 3, 10)))


def test_given_slow_fault_when_export_then_answer_delayed(server: FakeMixpanel) -> None:
    """A slow fault holds the answer back (a client with a short read timeout gives up), then it is normal."""
    server.inject(1, Fault("slow", delay_s=60))
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{server.base_url}/api/2.0/export", params={"project_id": PROJECT_ID}, auth=SA, timeout=0.05)
    server.release_slow()
    server.inject(2, Fault("slow", delay_s=60))
    assert export(server).status_code == 200 and server.requests[-1].fault == "slow"


def test_given_predicate_fault_when_matching_requests_then_first_n_fail(server: FakeMixpanel) -> None:
    """inject_when fails only the first `times` matching requests, whatever their number."""
    server.inject_when(lambda r: r.params.get("from_date") == "2024-03-02", Fault("status", status=503), times=2)
    statuses = [
        export(server, from_date=day, to_date=day).status_code
        for day in ("2024-03-01", "2024-03-02", "2024-03-02", "2024-03-02", "2024-03-03")
    ]
    assert statuses == [200, 503, 503, 200, 200]


def test_given_body_fault_on_error_reply_then_fault_not_recorded(server: FakeMixpanel) -> None:
    """A body fault cannot corrupt an error answer, so the log does not claim it was applied."""
    server.inject(1, Fault("bad_json"))
    assert export(server, to_date="2099-01-01").status_code == 400
    assert server.requests[0].fault is None


def test_given_plain_text_status_fault_when_export_then_its_content_type(server: FakeMixpanel) -> None:
    """A status fault can carry a plain-text body with its own Content-Type, as some Mixpanel errors do."""
    server.inject(1, Fault("status", status=502, body="Bad Gateway", headers={"Content-Type": "text/html"}))
    response = export(server)
    assert (response.status_code, response.text, response.headers["Content-Type"]) == (502, "Bad Gateway", "text/html")


def test_given_unknown_fault_kind_then_value_error() -> None:
    """Typos in fault kinds fail at construction."""
    with pytest.raises(ValueError):
        Fault("explode")  # type: ignore[arg-type]


# -- observation and other endpoints -----------------------------------------------------------------------------


def test_given_requests_when_logged_then_numbered_export_only_without_secrets(server: FakeMixpanel) -> None:
    """The log numbers export requests from 1, records params, timing, status and line counts, never secrets."""
    export(server, from_date="2024-03-02", to_date="2024-03-02")
    requests.get(f"{server.base_url}/api/query/events/names", auth=SA, params={"project_id": PROJECT_ID}, timeout=5)
    requests.get(f"{server.base_url}/nope", timeout=5)
    export(server, auth=PROJECT_SECRET, project_id=None)
    records = server.requests
    assert [(r.number, r.path, r.status) for r in records] == [
        (1, "/api/2.0/export", 200),
        (0, "/api/query/events/names", 200),
        (0, "/nope", 404),
        (2, "/api/2.0/export", 200),
    ]
    first = records[0]
    assert isinstance(first, RequestRecord)
    assert first.params == {"from_date": "2024-03-02", "to_date": "2024-03-02", "project_id": PROJECT_ID}
    assert first.lines == len(expected(EVENTS, dt.date(2024, 3, 2), dt.date(2024, 3, 2)))
    assert first.arrived_monotonic <= (first.finished_monotonic or 0) and first.arrived_wall > 0
    assert [r.number for r in server.export_requests] == [1, 2]
    text = repr(records)
    assert "sa-secret" not in text and "proj-secret" not in text
    server.reset_requests()
    assert server.requests == []
    export(server)
    assert server.requests[0].number == 1


def test_given_event_names_endpoint_when_called_then_names_by_frequency(server: FakeMixpanel) -> None:
    """The Query API event-name list returns every name, most frequent first."""
    response = requests.get(
        f"{server.base_url}/api/query/events/names", auth=SA, params={"project_id": PROJECT_ID}, timeout=5
    )
    names = response.json()
    assert set(names) == {e.name for e in EVENTS}
    assert names[0] == "Page View"


def test_given_top_properties_endpoint_when_called_then_counts(server: FakeMixpanel) -> None:
    """Top properties of one event come back with counts."""
    response = requests.get(
        f"{server.base_url}/api/query/events/properties/top",
        auth=SA,
        params={"project_id": PROJECT_ID, "event": "Purchase", "limit": "3"},
        timeout=5,
    )
    top = response.json()
    purchases = sum(e.name == "Purchase" for e in EVENTS)
    assert len(top) == 3 and top["distinct_id"] == {"count": purchases}


def test_given_concurrent_requests_when_served_then_all_complete(server: FakeMixpanel) -> None:
    """Requests are served in parallel threads, so one slow answer does not block others."""
    from concurrent.futures import ThreadPoolExecutor

    server.inject(1, Fault("slow", delay_s=60))
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(export, server)
        while not server.requests:  # the slow one has arrived (and waits)
            time.sleep(0.001)
        others = [pool.submit(export, server, from_date=f"2024-03-0{d}", to_date=f"2024-03-0{d}") for d in (2, 3, 4)]
        assert all(f.result().status_code == 200 for f in others)
        assert not first.done()
        server.release_slow()
        assert first.result().status_code == 200


# -- generator ---------------------------------------------------------------------------------------------------


def test_given_same_seed_then_same_events_and_other_seed_differs() -> None:
    """generate_events is a pure function of its arguments."""
    again = generate_events(400, DAY0, DAYS, seed=7)
    assert [e.export_line(True) for e in again] == [e.export_line(True) for e in EVENTS]
    assert generate_events(50, DAY0, DAYS, seed=8)[0] != again[0]


def test_given_late_fraction_then_same_content_only_processing_differs() -> None:
    """late_fraction changes processing times of about that share of events and nothing else."""
    assert [(e.name, e.time_ms, e.properties) for e in LATE_EVENTS] == [
        (e.name, e.time_ms, e.properties) for e in EVENTS
    ]
    late = [e for e in LATE_EVENTS if e.processing_ms is not None and e.processing_ms - e.time_ms >= 2 * 3_600_000]
    assert 0.2 < len(late) / len(LATE_EVENTS) < 0.4
    assert all(e.processing_ms - e.time_ms < 4 * 86_400_000 + 2 * 3_600_000 for e in late)  # type: ignore[operator]
    normal = [e for e in EVENTS if e.processing_ms is not None]
    assert all(1_000 <= e.processing_ms - e.time_ms <= 601_000 for e in normal)  # type: ignore[operator]


def test_given_generated_events_then_shape_and_proportions_are_as_documented() -> None:
    """Events sit in the requested days, some lack $insert_id or processing time, and lines average ~550 bytes."""
    events = generate_events(5000, DAY0, DAYS, seed=3)
    first, end = ms("2024-03-01T00:00:00"), ms("2024-03-11T00:00:00")
    assert all(first <= e.time_ms < end for e in events)
    assert [e.time_ms for e in events] == sorted(e.time_ms for e in events)
    assert 0.01 < sum(e.insert_id is None for e in events) / len(events) < 0.06
    assert 0.002 < sum(e.processing_ms is None for e in events) / len(events) < 0.025
    assert all("time" not in e.properties and "mp_processing_time_ms" not in e.properties for e in events)
    average = sum(len(e.export_line()) for e in events) / len(events)
    assert 450 < average < 700
    assert {e.name for e in events} >= {"Sign Up", "Purchase", "Page View", "Add To Cart", "Search", "Logout"}


def test_given_huge_integer_then_line_rendered_by_stdlib_and_exact() -> None:
    """Integers beyond 64 bits, which orjson cannot write, still render exactly."""
    event = FakeEvent("Purchase", ms("2024-03-01T00:00:00"), {"distinct_id": "u", "n": 2**70, "s": "\u2028"}, None)
    line = event.export_line(True)
    assert line.endswith(b"}\n") and line.count(b"\n") == 1
    assert json.loads(line)["properties"]["n"] == 2**70
    assert "\u2028".encode() in line


# -- CLI ---------------------------------------------------------------------------------------------------------


def test_given_cli_when_started_then_serves_and_stops_on_sigterm() -> None:
    """python -m fake_mixpanel prints its URL, serves the generated data and exits 0 on SIGTERM."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "fake_mixpanel", *"--port 0 --events 200 --days 2 --end-date 2024-03-02".split()],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        assert first_line.startswith("fake mixpanel listening on http://127.0.0.1:")
        url = first_line.rsplit(" ", 1)[1]
        assert "sa-user:sa-secret" in process.stdout.readline()
        response = requests.get(
            f"{url}/api/2.0/export",
            params={"from_date": "2024-03-01", "to_date": "2024-03-02", "project_id": PROJECT_ID},
            auth=SA,
            timeout=5,
        )
        assert response.status_code == 200 and len(parse(response.content)) == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_given_gzip_stream_when_decoded_incrementally_then_single_member() -> None:
    """The streamed gzip body is one gzip member, so a plain zlib decoder reads all of it."""
    with FakeMixpanel(EVENTS, now_ms=NOW) as fake:
        response, raw = gzip_export(fake.base_url)
    decoder = zlib.decompressobj(wbits=31)
    body = decoder.decompress(raw)
    assert decoder.eof and decoder.unused_data == b""
    assert len(parse(body)) == len(EVENTS)


def test_given_clock_endpoint_when_advanced_then_late_events_become_visible():
    """/_fake/clock lets another process (the demo) move the ingestion clock forward."""
    import datetime as dt

    import requests

    from fake_mixpanel import FakeEvent, FakeMixpanel

    day = dt.date(2024, 1, 2)
    start = int(dt.datetime(2024, 1, 2, tzinfo=dt.UTC).timestamp() * 1000)
    event = FakeEvent("Late", start, {"distinct_id": "d", "$insert_id": "x"}, start + 86_400_000)
    with FakeMixpanel([event], now_ms=start + 3_600_000) as fake:
        export = f"{fake.base_url}/api/2.0/export"
        params = {"from_date": day.isoformat(), "to_date": day.isoformat(), "project_id": "12345"}
        auth = ("sa-user", "sa-secret")
        assert requests.get(export, params=params, auth=auth, timeout=10).text == ""
        moved = requests.get(f"{fake.base_url}/_fake/clock", params={"advance_seconds": 2 * 86400}, timeout=10)
        assert moved.json()["now_ms"] == start + 3_600_000 + 2 * 86_400_000
        assert "Late" in requests.get(export, params=params, auth=auth, timeout=10).text
