"""The `profiles` stream end to end against the fake's Engage API: exact record sets, faults, kill -9,
incremental changes, the sweep's bound on what `$last_seen` does not show, and the requests each sync sends.

Most runs go through the console script's `run` in this process (harness.run_in_process); the full
refresh under faults and the kill -9 use the real CLI.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_mixpanel import ENGAGE_PATH, FakeEvent, FakeMixpanel, Fault, generate_profiles
from fake_mixpanel.profiles import BIG_INTS, LONG_DISTINCT_ID_CHARS, NUMERIC_DISTINCT_IDS
from integration_tests.harness import (
    FULL_REFRESH,
    INCREMENTAL,
    Run,
    assert_no_secrets,
    catalog,
    config_for,
    make_fake,
    nth_state,
    read_and_kill,
    run_cli,
    run_in_process,
    state_input,
)

NOW = int(dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
SESSION_LOST = "no longer knows the session"


def expected(fake: FakeMixpanel) -> dict[str, dict[str, Any]]:
    """What a full read must give: each stored profile's properties by its distinct_id as text."""
    return {str(p.distinct_id): p.properties for p in fake._profiles.snapshot()}  # noqa: SLF001


def by_id(run: Run) -> dict[str, dict[str, Any]]:
    """The run's profiles records by distinct_id (asserting that none came twice)."""
    records = [r for m in run.of("RECORD") if m["record"]["stream"] == "profiles" for r in [m["record"]["data"]]]
    ids = [r["distinct_id"] for r in records]
    assert len(ids) == len(set(ids)), "a profile was emitted twice"
    return {r["distinct_id"]: r["properties"] for r in records}


def read(tmp_path: Path, fake: FakeMixpanel, mode: str = INCREMENTAL, state: Any = None, **settings: Any) -> Run:
    """One read of the profiles stream in this process; the run must succeed."""
    config = config_for(fake, **settings)
    run = run_in_process(
        tmp_path, "read", config, state=state_input(state, "profiles") if state is not None else None,
        catalog_value=catalog(mode, "profiles"),
    )
    assert run.returncode == 0, run.stderr[-3000:] + run.logs()[-3000:]
    return run


@pytest.fixture(scope="module")
def big() -> Iterator[FakeMixpanel]:
    """25,000 awkward profiles (numeric, long and unicode distinct_ids, big integers), 1,000 to a page."""
    with make_fake([], profiles=generate_profiles(25_000, seed=21, now_ms=NOW), now_ms=NOW) as fake:
        yield fake


def test_given_25000_profiles_and_faults_when_full_refresh_then_each_profile_exactly_once(
    tmp_path: Path, big: FakeMixpanel
) -> None:
    """Over 25+ pages in several ranges: a 429, a 503, a page cut off, one that is not JSON, and a session
    Mixpanel forgets."""
    big.reset_requests()
    big.inject(3, Fault("status", status=429, headers={"Retry-After": "0"}), path=ENGAGE_PATH)
    big.inject(7, Fault("status", status=503), path=ENGAGE_PATH)
    big.inject(12, Fault("cut_off", at_fraction=0.4), path=ENGAGE_PATH)
    big.inject(15, Fault("bad_json"), path=ENGAGE_PATH)
    expired: list[int] = []

    def forget_sessions(request: Any) -> bool:  # at the first page above 0 from request 18 on: no fault of its own
        if not expired and request.number >= 18 and request.params.get("page") not in (None, "0"):
            expired.append(request.number)
            big.expire_sessions()
        return False

    big.inject_when(forget_sessions, Fault("status"), path=ENGAGE_PATH)
    config = config_for(big, profile_range_pages=8)
    run = run_cli(tmp_path, "read", config, catalog_value=catalog(FULL_REFRESH, "profiles"))
    assert run.returncode == 0, run.logs()[-3000:]
    assert by_id(run) == expected(big)
    logs = run.logs()
    assert "429" in logs and "503" in logs and "cut off" in logs and "not complete JSON" in logs
    assert SESSION_LOST in logs
    pages = [r for r in big.engage_requests if r.params.get("page") not in (None, "0")]
    assert len(pages) >= 25 and len(run.states) >= 3
    assert_no_secrets(run.stdout, run.stderr)
    assert_awkward_values_round_trip(by_id(run), expected(big))


def assert_awkward_values_round_trip(got: dict[str, Any], want: dict[str, Any]) -> None:
    """A number, a string and a 5,000-character distinct_id; nested objects; integers beyond 2^53 and 2^64."""
    for number in NUMERIC_DISTINCT_IDS:
        assert got[str(number)] == want[str(number)]
    long_ids = [key for key in got if len(key) >= LONG_DISTINCT_ID_CHARS]
    assert long_ids and got[long_ids[0]] == want[long_ids[0]]
    values = [v for props in got.values() for v in props.values()]
    assert all(n in values for n in BIG_INTS)
    assert any(isinstance(v, dict) and isinstance(v.get("geo"), dict) for v in values)


def test_given_a_kill_in_the_middle_of_a_multi_range_read_when_resumed_then_nothing_is_lost(
    tmp_path: Path, small: FakeMixpanel
) -> None:
    """kill -9 after the third STATE of ranges of 3 pages; the resume starts at the range after it."""
    config = config_for(small, profile_range_pages=3)
    killed = read_and_kill(tmp_path, config, None, nth_state(3), name="profiles")
    first = by_id(killed)
    state = killed.states[-1]
    assert state["walk"]["kind"] == "pass" and state["walk"]["unseen_done"] and state["walk"]["from"]
    small.reset_requests()
    resumed = read(tmp_path, small, INCREMENTAL, state, profile_range_pages=3)
    assert {**first, **by_id(resumed)} == expected(small)
    assert 0 < len(by_id(resumed)) < len(expected(small))  # it did not start over
    assert all(r.params.get("where", "").startswith('properties["$last_seen"] >=') for r in small.engage_requests)


@pytest.fixture
def small() -> Iterator[FakeMixpanel]:
    """2,500 profiles, 100 to a page, the clock at NOW."""
    with make_fake([], profiles=generate_profiles(2_500, seed=8, now_ms=NOW), now_ms=NOW, engage_page_size=100) as fake:
        yield fake


def test_given_changed_profiles_when_synced_incrementally_then_they_arrive_in_the_next_sync(
    tmp_path: Path, small: FakeMixpanel
) -> None:
    """Updates after a complete pass come in the next sync, which reads only the changes and the sweep."""
    first = read(tmp_path, small, profile_sweep_requests=3)
    assert by_id(first) == expected(small)
    small.now_ms = NOW + 2 * HOUR_MS
    changed = [p.distinct_id for p in small._profiles.snapshot()[10:40]]  # noqa: SLF001
    for distinct_id in changed:
        small.update_profile(distinct_id, {"plan": "changed"})
    small.reset_requests()
    second = read(tmp_path, small, state=first.states[-1], profile_sweep_requests=3)
    got = by_id(second)
    assert all(got[str(d)]["plan"] == "changed" for d in changed)
    assert len(got) < len(expected(small)) // 2
    # the changes: profiles seen in the last hours (one range, a few pages), plus at most 3 for the sweep
    changes_pages = math.ceil((len(changed) + 1) / 100) + 2
    assert len(small.engage_requests) <= changes_pages + 3


def test_given_updates_that_keep_last_seen_when_syncing_then_they_arrive_within_the_stated_syncs(
    tmp_path: Path, small: FakeMixpanel
) -> None:
    """UI edits and $ignore_time updates reach the destination through the sweep, within
    ceil(profiles / (page size x (sweep requests - 2))) + 1 syncs (docs/mixpanel-export.md)."""
    sweep = 8
    state = read(tmp_path, small, profile_sweep_requests=sweep).states[-1]
    quiet = [p.distinct_id for p in small._profiles.snapshot()[::97]]  # noqa: SLF001
    for distinct_id in quiet:
        small.update_profile(distinct_id, {"plan": "quietly changed"}, ignore_time=True)
    bound = math.ceil(2_500 / (100 * (sweep - 2))) + 1
    arrived: set[str] = set()
    syncs = 0
    while len(arrived) < len(quiet):
        syncs += 1
        assert syncs <= bound, f"{len(quiet) - len(arrived)} quiet updates missing after {bound} syncs"
        small.now_ms = (small.now_ms or NOW) + HOUR_MS
        small.reset_requests()
        run = read(tmp_path, small, state=state, profile_sweep_requests=sweep)
        state = run.states[-1]
        arrived |= {d for d, props in by_id(run).items() if props.get("plan") == "quietly changed"}
        assert len(small.engage_requests) <= 2 + sweep  # an empty changes range, and the sweep's bound


def test_given_both_streams_when_read_in_one_sync_then_each_has_its_records_and_its_state(
    tmp_path: Path,
) -> None:
    """One sync of `export` and `profiles`: records of both, a STATE of each, each stream complete."""
    events = [
        FakeEvent("Signup", NOW - HOUR_MS * k, {"distinct_id": f"user-{k}", "$insert_id": f"i{k}"}, NOW - HOUR_MS * k)
        for k in range(1, 30)
    ]
    with make_fake(events, profiles=generate_profiles(300, seed=2, now_ms=NOW), now_ms=NOW) as fake:
        both = catalog(INCREMENTAL, "export")
        both["streams"] += catalog(INCREMENTAL, "profiles")["streams"]
        run = run_in_process(tmp_path, "read", config_for(fake, start_date="2024-05-25"), catalog_value=both)
        assert run.returncode == 0, run.logs()[-3000:]
        streams = [m["record"]["stream"] for m in run.of("RECORD")]
        assert streams.count("export") == 29 and streams.count("profiles") == 300
        named = {m["state"]["stream"]["stream_descriptor"]["name"] for m in run.of("STATE")}
        assert named == {"export", "profiles"}
        assert run.statuses.count("COMPLETE") == 2


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ({"version": 3}, "version 3"),
        ({"version": 1, "walk": {"kind": "sideways", "started": "2024-06-01T00:00:00"}}, "'walk.kind'"),
        ({"version": 1, "watermark": "2030-01-01T00:00:00"}, "lies in the future"),
        ({"version": 1, "watermark": 17}, "'watermark'"),
        ({"version": 1, "sweep": {"started": "2024-06-01T00:00:00"}}, "'sweep.until'"),
        ({"version": 1, "walk": {"kind": "pass", "started": "2024-06-01T00:00:00", "span": -1}}, "'walk.span'"),
    ],
)
def test_given_a_state_it_could_not_have_written_when_read_then_a_config_error_names_the_key(
    tmp_path: Path, small: FakeMixpanel, state: dict[str, Any], words: str
) -> None:
    """Refused before any request, naming the stream and the key."""
    small.reset_requests()
    config = config_for(small)
    run = run_in_process(
        tmp_path, "read", config, state=state_input(state, "profiles"), catalog_value=catalog(INCREMENTAL, "profiles")
    )
    assert run.returncode != 0
    message = run.errors[0]["message"]
    assert "stream 'profiles'" in message and words in message, message
    assert run.errors[0]["failure_type"] == "config_error" and "Traceback" not in message
    assert small.engage_requests == []


def test_given_profile_properties_and_a_cohort_when_read_then_only_those(tmp_path: Path, small: FakeMixpanel) -> None:
    """output_properties (with $last_seen added) and filter_by_cohort reach Mixpanel."""
    run = read(tmp_path, small, FULL_REFRESH, profile_properties=["plan"], profile_cohort_id=2)
    got = by_id(run)
    members = {str(p.distinct_id) for p in small._profiles.snapshot() if 2 in p.cohorts}  # noqa: SLF001
    assert set(got) == members
    assert all(set(props) <= {"plan", "$last_seen"} for props in got.values())




def test_given_credentials_the_query_api_refuses_when_check_then_failed_naming_that_api(
    tmp_path: Path, small: FakeMixpanel
) -> None:
    """The export answers and the Query API says 403: check fails, and says which API and what to check."""
    small.inject(1, Fault("status", status=403, body='{"error": "not allowed"}'), path=ENGAGE_PATH)
    run = run_in_process(tmp_path, "check", config_for(small))
    status = run.of("CONNECTION_STATUS")[-1]["connectionStatus"]
    assert status["status"] == "FAILED"
    assert "the Query API" in status["message"] and "403" in status["message"], status
    assert_no_secrets(run.stdout, run.stderr)
    ok = run_in_process(tmp_path, "check", config_for(small))
    assert ok.of("CONNECTION_STATUS")[-1]["connectionStatus"]["status"] == "SUCCEEDED"
