"""Tests of the fake's Engage API (people profiles) over real HTTP, so the profiles stream's tests can trust it.

Timing note: 25,000 generated profiles (13.4 MB of JSON) read over 26 POSTs of 1,000 with gzip on a busy 2-core
box: the fake's own time 0.9 s cold (each profile rendered once), 0.2 s warm; the client's stdlib json parsing
adds 0.8 s and generating the profiles 0.5 s.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fake_mixpanel import ENGAGE_PATH, FakeEvent, FakeMixpanel, FakeProfile, Fault, generate_profiles
from fake_mixpanel.profiles import BIG_INTS, LONG_DISTINCT_ID_CHARS, NUMERIC_DISTINCT_IDS
from fake_mixpanel.server import ERR_INVALID_CREDENTIALS, ERR_PROJECT_ID_REQUIRED
from fake_mixpanel.where import compile_where, evaluate

SA = ("sa-user", "sa-secret")
PROJECT_SECRET = ("proj-secret", "")
PROJECT_ID = "12345"
NOW = int(dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
PROFILES = generate_profiles(2500, seed=5, now_ms=NOW)
SINCE_2024 = 'properties["$last_seen"] >= datetime("2024-01-01T00:00:00")'


@pytest.fixture
def fake() -> Iterator[FakeMixpanel]:
    """A fake holding 2,500 profiles, paging 100 at a time, its clock frozen at NOW."""
    with FakeMixpanel(profiles=PROFILES, now_ms=NOW, engage_page_size=100) as server:
        yield server


def engage(fake: FakeMixpanel, auth: Any = SA, project_id: str | None = PROJECT_ID, **form: Any) -> requests.Response:
    """POST one Engage request, its fields form-encoded as Mixpanel documents."""
    params = {} if project_id is None else {"project_id": project_id}
    data = {k: v if isinstance(v, str | int) else json.dumps(v) for k, v in form.items() if v is not None}
    return requests.post(f"{fake.base_url}{ENGAGE_PATH}", params=params, data=data, auth=auth, timeout=10)


def read_all(fake: FakeMixpanel, **form: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Page like Mixpanel's own loop (while a page is full): every result, and every answer without results."""
    results: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []
    page, session_id = 0, None
    while True:
        response = engage(fake, page=page, session_id=session_id, **form)
        assert response.status_code == 200, response.text
        body = response.json()
        page_results = body.pop("results")
        results.extend(page_results)
        answers.append(body)
        if len(page_results) < body["page_size"]:
            return results, answers
        page, session_id = page + 1, body["session_id"]


def ids(results: list[dict[str, Any]]) -> list[Any]:
    """The distinct_ids of results, in order."""
    return [result["$distinct_id"] for result in results]


# -- paging and sessions ---------------------------------------------------------------------------------------


def test_given_2500_profiles_when_paged_by_100_then_each_once_under_one_session(fake: FakeMixpanel) -> None:
    """25 full pages and an empty 26th, one session id, total on every page, every profile exactly once."""
    results, answers = read_all(fake)
    assert ids(results) == [p.distinct_id for p in PROFILES]
    assert [a["page"] for a in answers] == list(range(26))
    assert {(a["page_size"], a["total"], a["status"], a["session_id"]) for a in answers} == {
        (100, 2500, "ok", answers[0]["session_id"])
    }
    assert [r.params.get("session_id") for r in fake.engage_requests][:2] == [None, answers[0]["session_id"]]


def test_given_page_past_the_end_then_empty_results(fake: FakeMixpanel) -> None:
    """A page beyond the last match answers 200 with no results and the same total."""
    session_id = engage(fake).json()["session_id"]
    body = engage(fake, page=99, session_id=session_id).json()
    assert (body["page"], body["results"], body["total"]) == (99, [], 2500)


def test_given_profiles_changed_mid_read_then_pages_come_from_the_page_0_snapshot(fake: FakeMixpanel) -> None:
    """Edits, deletions and additions after page 0 do not shift or change that session's pages."""
    first = engage(fake).json()
    deleted, edited = PROFILES[150].distinct_id, PROFILES[250].distinct_id
    fake.delete_profile(PROFILES[0].distinct_id)
    fake.delete_profile(deleted)
    fake.update_profile(edited, {"plan": "changed"})
    fake.add_profiles([FakeProfile("newcomer", {"$last_seen": "2024-06-01T12:00:00"})])
    later = [engage(fake, page=page, session_id=first["session_id"]).json() for page in (1, 2)]
    assert ids(first["results"] + later[0]["results"] + later[1]["results"]) == [p.distinct_id for p in PROFILES[:300]]
    assert later[1]["results"][50]["$properties"]["plan"] == PROFILES[250].properties["plan"]
    assert later[1]["total"] == 2500
    fresh, _ = read_all(fake)
    assert len(fresh) == 2499 and deleted not in ids(fresh) and ids(fresh)[-1] == "newcomer"


def test_given_page_above_0_without_session_id_then_400(fake: FakeMixpanel) -> None:
    """A page above 0 needs the session id of a page 0."""
    response = engage(fake, page=1)
    assert response.status_code == 400
    assert response.json() == {"error": "session_id is required when page is above 0", "status": "error"}


def test_given_unknown_session_id_then_400_invalid_or_expired(fake: FakeMixpanel) -> None:
    """A session id the fake never gave is refused like an expired one."""
    response = engage(fake, page=1, session_id="nope")
    assert (response.status_code, response.json()) == (
        400,
        {"error": "session_id nope is invalid or has expired", "status": "error"},
    )


def test_given_session_older_than_ttl_on_fake_clock_then_400(fake: FakeMixpanel) -> None:
    """A session lives engage_session_ttl_ms of the fake's clock after its page 0, not a moment more."""
    fake.engage_session_ttl_ms = 60_000
    session_id = engage(fake).json()["session_id"]
    fake.now_ms = NOW + 60_000
    assert engage(fake, page=1, session_id=session_id).status_code == 200
    fake.now_ms = NOW + 60_001
    response = engage(fake, page=2, session_id=session_id)
    assert response.status_code == 400
    assert response.json()["error"] == f"session_id {session_id} is invalid or has expired"


def test_given_expire_sessions_then_open_sessions_refused_and_page_0_starts_anew(fake: FakeMixpanel) -> None:
    """expire_sessions ends every session; a new page 0 gets a new id that works."""
    old = engage(fake).json()["session_id"]
    fake.expire_sessions()
    assert engage(fake, page=1, session_id=old).status_code == 400
    new = engage(fake, session_id=old).json()["session_id"]
    assert new != old and engage(fake, page=1, session_id=new).status_code == 200


def test_given_25000_profiles_when_read_by_1000_then_served_in_about_a_second() -> None:
    """25,000 profiles over 25 full pages of 1,000 (the default page size): the fake's own time stays small."""
    many = generate_profiles(25_000, seed=6, now_ms=NOW)
    with FakeMixpanel(profiles=many, now_ms=NOW) as big:
        results, answers = read_all(big)
        served_s = sum((r.finished_monotonic or 0) - r.arrived_monotonic for r in big.engage_requests)
    assert len(results) == 25_000 and len(answers) == 26 and answers[0]["page_size"] == 1000
    assert served_s < 3  # 0.4-1 s on a busy 2-core box (each profile rendered once); client parsing not counted


# -- where, filters, output_properties ----------------------------------------------------------------------------


def test_given_where_on_last_seen_then_string_dates_compare_as_datetimes(fake: FakeMixpanel) -> None:
    """`properties["$last_seen"] >= datetime(...)` compares the profile's zone-less string as a UTC datetime."""
    results, answers = read_all(fake, where=SINCE_2024)
    expected = [p.distinct_id for p in PROFILES if p.properties.get("$last_seen", "") >= "2024-01-01T00:00:00"]
    assert 0 < len(expected) < len(PROFILES)
    assert ids(results) == expected and answers[0]["total"] == len(expected)


def test_given_where_not_defined_or_before_then_the_complement(fake: FakeMixpanel) -> None:
    """`not defined(...)` finds profiles without $last_seen; with `or <` it is the complement of `>=`."""
    missing, _ = read_all(fake, where='not defined(properties["$last_seen"])')
    assert ids(missing) == [p.distinct_id for p in PROFILES if "$last_seen" not in p.properties] != []
    rest, _ = read_all(
        fake,
        where='not defined(properties["$last_seen"]) or properties["$last_seen"] < datetime("2024-01-01T00:00:00")',
    )
    since, _ = read_all(fake, where=SINCE_2024)
    assert sorted(map(str, ids(rest) + ids(since))) == sorted(str(p.distinct_id) for p in PROFILES)


def test_given_where_with_and_on_plan_and_date_then_both_hold(fake: FakeMixpanel) -> None:
    """`and` combines a string equality with a date bound."""
    results, _ = read_all(fake, where=f'properties["plan"] == "pro" and {SINCE_2024}')
    assert results and all(r["$properties"]["plan"] == "pro" for r in results)
    assert all(r["$properties"]["$last_seen"] >= "2024-01-01T00:00:00" for r in results)


def test_given_invalid_where_then_400(fake: FakeMixpanel) -> None:
    """An expression the fake cannot parse is refused with the reason."""
    response = engage(fake, where='properties["$last_seen"] >=')
    assert response.status_code == 400 and response.json()["error"].startswith("invalid where expression")


@pytest.mark.parametrize("page", ["-1", "one", "²", "1.0"])
def test_given_malformed_page_then_400(fake: FakeMixpanel, page: str) -> None:
    """A page that is not a non-negative integer is refused, never a server error."""
    response = engage(fake, page=page)
    assert (response.status_code, response.json()) == (
        400,
        {"error": "page must be a non-negative integer", "status": "error"},
    )


def test_given_string_dates_only_when_asked_then_event_filters_unchanged() -> None:
    """Event filters still never order a string against a datetime; profile filters do, naive meaning UTC."""
    props = {"$last_seen": "2024-03-01T00:00:00", "bad": "not a date"}
    assert not evaluate(SINCE_2024, props)
    assert evaluate(SINCE_2024, props, string_dates=True)
    assert evaluate('datetime("2024-03-01T00:00:00Z") == properties["$last_seen"]', props, string_dates=True)
    assert not evaluate('properties["bad"] < datetime("2099-01-01T00:00:00")', props, string_dates=True)
    assert compile_where(SINCE_2024) is not compile_where(SINCE_2024, string_dates=True)


def test_given_output_properties_then_only_those_properties(fake: FakeMixpanel) -> None:
    """output_properties keeps only the named properties (absent ones are simply missing)."""
    body = engage(fake, output_properties=["$email", "$last_seen"]).json()
    assert body["total"] == 2500 and len(body["results"]) == 100
    for result, profile in zip(body["results"], PROFILES, strict=False):
        wanted = {k: v for k, v in profile.properties.items() if k in ("$email", "$last_seen")}
        assert result == {"$distinct_id": profile.distinct_id, "$properties": wanted}


def test_given_filter_by_cohort_then_only_members(fake: FakeMixpanel) -> None:
    """filter_by_cohort {"id": N} answers the profiles carrying cohort N; include_all_users is accepted."""
    results, _ = read_all(fake, filter_by_cohort={"id": 2}, include_all_users="false")
    assert ids(results) == [p.distinct_id for p in PROFILES if 2 in p.cohorts] != []
    assert engage(fake, filter_by_cohort={"id": 99}).json()["total"] == 0
    assert engage(fake, filter_by_cohort="12345").status_code == 400


def test_given_distinct_ids_then_only_those_profiles(fake: FakeMixpanel) -> None:
    """distinct_ids (a JSON array) selects profiles; a numeric id matches written as number or string."""
    body = engage(fake, distinct_ids=[4, str(2**53 + 1), "user-000004", "unknown"]).json()
    assert ids(body["results"]) == [4, 2**53 + 1, "user-000004"] and body["total"] == 3


def test_given_data_group_id_then_only_that_groups_profiles(fake: FakeMixpanel) -> None:
    """Group profiles are a separate set: data_group_id answers only them, and user queries never see them."""
    fake.add_profiles([FakeProfile("acme", {"$name": "Acme"}), FakeProfile(7, {"$name": "Seven"})], data_group_id="3")
    body = engage(fake, data_group_id="3").json()
    assert body["results"] == [
        {"$distinct_id": "acme", "$properties": {"$name": "Acme"}},
        {"$distinct_id": 7, "$properties": {"$name": "Seven"}},
    ]
    assert engage(fake).json()["total"] == 2500 and engage(fake, data_group_id="4").json()["total"] == 0
    assert [p.distinct_id for p in fake.group_profiles("3")] == ["acme", 7]


# -- data ---------------------------------------------------------------------------------------------------------


def test_given_big_ints_then_served_as_exact_json_integers(fake: FakeMixpanel) -> None:
    """Integers past 2**53 and past 64 bits arrive as JSON integer literals, exact."""
    results, _ = read_all(fake, output_properties=["account id"])
    raw = engage(fake, output_properties=["account id"]).content
    assert {r["$properties"]["account id"] for r in results} == set(BIG_INTS)
    assert b'"account id":1000000000000000000000000000001' in raw and b'"account id":9007199254740993' in raw


def test_given_numeric_and_long_distinct_ids_then_served_exactly(fake: FakeMixpanel) -> None:
    """Numeric distinct_ids are JSON numbers (2**53 + 1 exact); the long one has all its 5,000 characters."""
    raw = engage(fake).content
    assert raw.count(b'"$distinct_id":4,') == 1 and b'"$distinct_id":9007199254740993,' in raw
    first = json.loads(raw)["results"]
    assert ids(first)[:2] == list(NUMERIC_DISTINCT_IDS)
    assert len(first[2]["$distinct_id"]) == LONG_DISTINCT_ID_CHARS


def test_given_unicode_separators_then_sent_raw_and_parsed(fake: FakeMixpanel) -> None:
    """U+2028 travels raw in the JSON body, and a JSON parser reads it back."""
    results, _ = read_all(fake)
    notes = {r["$properties"].get("note") for r in results}
    assert "line\u2028separator" in notes and "emoji 🎉 🚀 👩\u200d💻 🇯🇵" in notes
    raw = engage(fake, distinct_ids=[PROFILES[0].distinct_id]).content
    assert PROFILES[0].properties["note"] == "line\u2028separator" and "\u2028".encode() in raw


def test_given_generate_profiles_then_deterministic_and_dated_up_to_now() -> None:
    """Same arguments, same profiles; created <= last_seen <= now; some never seen; nested values present."""
    again = generate_profiles(2500, seed=5, now_ms=NOW)
    assert [(p.distinct_id, p.properties, p.cohorts) for p in again] == [
        (p.distinct_id, p.properties, p.cohorts) for p in PROFILES
    ]
    now_text = dt.datetime.fromtimestamp(NOW / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    seen = [p for p in PROFILES if "$last_seen" in p.properties]
    assert 0.8 < len(seen) / len(PROFILES) < 0.97
    assert all(p.properties["$created"] <= p.properties["$last_seen"] <= now_text for p in seen)
    assert min(p.properties["$created"] for p in PROFILES) < "2022-07-01"
    assert len({str(p.distinct_id) for p in PROFILES}) == len(PROFILES)
    assert isinstance(PROFILES[5].properties["address"]["geo"], dict) and isinstance(
        PROFILES[5].properties["devices"], list
    )


def test_given_update_profile_then_last_seen_moves_unless_ignore_time(fake: FakeMixpanel) -> None:
    """A $set moves $last_seen to the fake's now; $ignore_time (and UI edits) leave it alone."""
    quiet, loud = PROFILES[10], PROFILES[11]
    fake.now_ms = NOW + 5_000
    fake.update_profile(quiet.distinct_id, {"plan": "enterprise"}, ignore_time=True)
    fake.update_profile(loud.distinct_id, {"plan": "enterprise"})
    stored = {p.distinct_id: p for p in fake.profiles}
    assert stored[quiet.distinct_id].properties["$last_seen"] == quiet.properties.get("$last_seen")
    assert stored[loud.distinct_id].properties["$last_seen"] == "2024-06-01T12:00:05"
    assert stored[quiet.distinct_id].properties["plan"] == stored[loud.distinct_id].properties["plan"] == "enterprise"
    assert quiet.properties["plan"] == PROFILES[10].properties["plan"]  # the stored profile was replaced, not mutated


# -- the request: auth, form, recording ----------------------------------------------------------------------------


def test_given_form_body_then_fields_recorded_with_query_params_and_method(fake: FakeMixpanel) -> None:
    """The form fields and the query's project_id land in one params dict; the record says POST."""
    engage(fake, where=SINCE_2024, output_properties=["$email"])
    record = fake.engage_requests[0]
    assert (record.number, record.method, record.status) == (1, "POST", 200)
    assert record.params == {"project_id": PROJECT_ID, "where": SINCE_2024, "output_properties": '["$email"]'}


def test_given_credentials_then_export_auth_rules(fake: FakeMixpanel) -> None:
    """Service account needs project_id; the project secret goes without; bad credentials are 401."""
    assert engage(fake, project_id=None).json() == {"error": ERR_PROJECT_ID_REQUIRED}
    assert engage(fake, auth=PROJECT_SECRET, project_id=None).json()["total"] == 2500
    response = engage(fake, auth=("sa-user", "wrong"))
    assert (response.status_code, response.json()) == (401, {"error": ERR_INVALID_CREDENTIALS})


# -- faults -------------------------------------------------------------------------------------------------------


def test_given_engage_and_export_requests_then_numbered_apart(fake: FakeMixpanel) -> None:
    """Engage requests count from 1 on their own; export numbering and export faults do not see them."""
    fake.add_events([FakeEvent("Sign Up", NOW - 3_600_000, {"distinct_id": "d"}, NOW - 3_599_000)])
    fake.inject(2, Fault("status", status=503))  # the second export request, whatever Engage does
    export = f"{fake.base_url}/api/2.0/export"
    query = {"from_date": "2024-06-01", "to_date": "2024-06-01", "project_id": PROJECT_ID}
    statuses = [
        engage(fake).status_code,
        requests.get(export, params=query, auth=SA, timeout=10).status_code,
        engage(fake).status_code,
        requests.get(export, params=query, auth=SA, timeout=10).status_code,
    ]
    assert statuses == [200, 200, 200, 503]
    assert [(r.path, r.number) for r in fake.requests] == [
        (ENGAGE_PATH, 1),
        ("/api/2.0/export", 1),
        (ENGAGE_PATH, 2),
        ("/api/2.0/export", 2),
    ]


def test_given_429_with_retry_after_on_engage_then_answered_then_normal(fake: FakeMixpanel) -> None:
    """inject(n, path=ENGAGE_PATH) fails the nth Engage request; the retry is served."""
    fake.inject(1, Fault("status", status=429, headers={"Retry-After": "7"}), path=ENGAGE_PATH)
    response = engage(fake)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert response.json() == {"error": "Query rate limit exceeded"}
    assert engage(fake).status_code == 200
    assert [r.fault for r in fake.engage_requests] == ["status", None]


def test_given_predicate_fault_on_engage_then_it_sees_form_fields(fake: FakeMixpanel) -> None:
    """inject_when(path=ENGAGE_PATH) predicates see the page and session id from the form body."""
    fake.inject_when(lambda r: r.params.get("page") == "2", Fault("status", status=500), times=2, path=ENGAGE_PATH)
    session_id = engage(fake).json()["session_id"]
    statuses = [engage(fake, page=page, session_id=session_id).status_code for page in (1, 2, 2, 2)]
    assert statuses == [200, 500, 500, 200]


def test_given_export_predicate_fault_then_engage_untouched(fake: FakeMixpanel) -> None:
    """A fault without path stays an export fault, so `lambda r: True` rules do not hit profile requests."""
    fake.inject_when(lambda r: True, Fault("status", status=500), times=100)
    assert engage(fake).status_code == 200


def test_given_drop_and_slow_on_engage_then_connection_error_and_delay(fake: FakeMixpanel) -> None:
    """drop hangs up without an answer; slow holds it back until released."""
    fake.inject(1, Fault("drop"), path=ENGAGE_PATH)
    fake.inject(2, Fault("slow", delay_s=60), path=ENGAGE_PATH)
    with pytest.raises(requests.exceptions.ConnectionError):
        engage(fake)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{fake.base_url}{ENGAGE_PATH}", params={"project_id": PROJECT_ID}, auth=SA, timeout=0.05)
    fake.release_slow()
    assert engage(fake).status_code == 200
    assert [r.fault for r in fake.engage_requests] == ["drop", "slow", None]


@pytest.mark.parametrize("gzip", [False, True])
def test_given_cut_off_on_engage_page_then_body_short_of_its_content_length(fake: FakeMixpanel, gzip: bool) -> None:
    """cut_off announces the whole page's length, sends part of it and hangs up: the client's read fails."""
    fake.inject(1, Fault("cut_off", at_fraction=0.5), path=ENGAGE_PATH)
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.post(
            f"{fake.base_url}{ENGAGE_PATH}", params={"project_id": PROJECT_ID}, auth=SA, headers=headers, timeout=10
        )
    record = fake.engage_requests[0]
    assert (record.status, record.fault) == (200, "cut_off") and record.sent_bytes > 0


def test_given_cut_off_with_consistent_length_then_complete_answer_of_broken_json(fake: FakeMixpanel) -> None:
    """consistent_length sends the cut JSON as a complete answer of that length: only parsing can tell."""
    whole = engage(fake).content
    fake.inject(2, Fault("cut_off", at_fraction=0.5, consistent_length=True), path=ENGAGE_PATH)
    response = engage(fake)
    assert response.status_code == 200
    assert response.content == whole[: len(whole) // 2]  # the session id, the only difference, is at the end
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)
    assert engage(fake).json()["total"] == 2500


def test_given_bad_json_on_engage_page_then_unparseable_body(fake: FakeMixpanel) -> None:
    """bad_json splices a broken fragment into the middle of the page."""
    fake.inject(1, Fault("bad_json"), path=ENGAGE_PATH)
    response = engage(fake)
    assert response.status_code == 200 and b'{"event": "Broken", "properties": {' in response.content
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_given_body_fault_on_engage_error_then_not_applied(fake: FakeMixpanel) -> None:
    """A body fault cannot corrupt an error answer (an expired session here), so it is not recorded."""
    fake.inject(1, Fault("cut_off"), path=ENGAGE_PATH)
    response = engage(fake, page=1, session_id="gone")
    assert response.status_code == 400 and response.json()["status"] == "error"
    assert fake.engage_requests[0].fault is None


# -- CLI ----------------------------------------------------------------------------------------------------------


def test_given_cli_with_profiles_then_engage_serves_them() -> None:
    """python -m fake_mixpanel --profiles N serves N generated profiles beside the events."""
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "fake_mixpanel", *"--port 0 --events 10 --profiles 120".split()],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        assert "120 profiles" in process.stdout.readline()
        response = requests.post(f"{url}{ENGAGE_PATH}", params={"project_id": PROJECT_ID}, auth=SA, timeout=5)
        assert response.json()["total"] == 120 and len(response.json()["results"]) == 120
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
