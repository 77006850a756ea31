"""Reliability through the real CLI: rate limits, retries, cut-off bodies, split windows, bad lines, bad input.

Every test runs the installed console script against the fake Mixpanel with faults injected by request
number or by predicate, and compares the emitted records with the exact true set.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
import time

import pytest

from fake_mixpanel import FakeEvent, Fault
from integration_tests import harness
from integration_tests.conftest import FIRST_DAY, LAST_DAY, TODAY
from integration_tests.harness import (
    INCREMENTAL,
    Run,
    assert_no_secrets,
    catalog,
    config_for,
    make_fake,
    record_keys,
    state_input,
    truth,
    write_json,
)

ONE_DAY = dt.timedelta(days=1)


def run_cli(*args, **kwargs) -> Run:
    """The console script in this process (harness.run_in_process: 2-3 s of imports less a run), or as a
    real CLI run when a `timeout` bounds the process; failing with a plain explanation when stdout is not
    one JSON message per line."""
    try:
        if "timeout" in kwargs:
            return harness.run_cli(*args, **kwargs)
        return harness.run_in_process(*args, **kwargs)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"the connector's stdout holds a line that is not one protocol message ({exc}); typically a LOG "
            "from a download thread written into the middle of a RECORD line"
        ) from exc


def daily(fake, **overrides) -> dict:
    """One window per day from FIRST_DAY to today: eleven requests when nothing fails."""
    return config_for(fake, **{"start_date": FIRST_DAY.isoformat(), "date_window_size": 1, **overrides})


def requests_per_window(fake) -> collections.Counter[tuple[str, str, str]]:
    """How often each window (dates and where) was asked for."""
    return collections.Counter(
        (r.params["from_date"], r.params["to_date"], r.params.get("where", "")) for r in fake.export_requests
    )


def assert_exact_and_clean(run, fake, first=FIRST_DAY, last=TODAY) -> None:
    """Exit 0, every true record exactly once, stream COMPLETE, no secret in any output."""
    assert run.returncode == 0, run.stdout[-3000:]
    assert record_keys(run.records) == truth(fake, first, last)
    assert run.statuses[-1] == "COMPLETE" and not run.errors
    assert_no_secrets(run.stdout, run.stderr)


# -- transient failures: each alone, then all together ------------------------------------------------------

FAULTS = {  # the trailer's other spellings and the other statuses: test_client.py and the test below
    "429": Fault("status", status=429),
    "503-text": Fault("status", status=503, body="Service Unavailable", headers={"Content-Type": "text/plain"}),
    "cut_off": Fault("cut_off", at_fraction=0.5),
    "[terminated early]": Fault("terminated_early", trailer="[terminated early]", at_fraction=0.1),
    "drop": Fault("drop"),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_given_one_fault_when_read_then_window_retried_whole_and_records_exact(tmp_path, fake, fault):
    """One failed attempt: that window is asked for again, nothing of the failed attempt is emitted."""
    fake.inject(2, fault)
    run = run_cli(tmp_path, "read", daily(fake))
    assert_exact_and_clean(run, fake)
    failed = fake.export_requests[1]
    asked = requests_per_window(fake)
    assert asked[(failed.params["from_date"], failed.params["to_date"], "")] == 2
    assert sum(asked.values()) == 12
    assert f"{failed.params['from_date']} attempt 1 failed" in run.logs() and "retrying in" in run.logs()


def test_given_four_5xx_a_cut_off_a_trailer_and_a_drop_when_read_then_exact_records_and_exit_0(tmp_path, fake):
    """The issue's measurement: what made the official connector deliver nothing is absorbed, nothing lost."""
    faults = [
        Fault("status", status=429),
        Fault("status", status=500),
        Fault("status", status=502, body="<html>Bad Gateway</html>", headers={"Content-Type": "text/html"}),
        Fault("status", status=503, headers={"Retry-After": "0"}),
        Fault("cut_off", at_fraction=0.3),
        Fault("terminated_early", trailer="export terminated early"),
        Fault("drop"),
    ]
    for number, fault in enumerate(faults, start=1):
        fake.inject(number, fault)
    # retries from 10 ms: the harness's 50 ms, doubled over these seven faults, waited ~2 s more
    run = run_cli(tmp_path, "read", daily(fake, retry_initial_backoff_seconds=0.01), mode=INCREMENTAL)
    assert_exact_and_clean(run, fake)
    assert len(fake.export_requests) == 11 + len(faults)
    assert run.states[-1]["synced_through"] == TODAY.isoformat()


# -- the rate budget, as the server sees it -----------------------------------------------------------------


def test_given_2_concurrent_requests_when_read_then_never_more_than_2_in_flight(tmp_path, fake):
    """max_concurrent_requests bounds requests in flight: with every answer held back, two arrive and no
    third, until the answers are released. (The per-second and hourly rates are asserted with a fake
    clock in unit_tests/test_budget.py.)"""
    fake.inject_when(lambda r: r.number > 1, Fault("slow", delay_s=60), times=100)
    held: list[int] = []

    def release_when_two_wait() -> None:
        for _ in range(20_000):  # at most ~20 s
            if sum(r.finished_monotonic is None for r in fake.export_requests) >= 2:
                break
            time.sleep(0.001)
        time.sleep(0.05)  # room for a third request, were one allowed
        held.append(len(fake.export_requests))
        fake.release_slow()

    watcher = threading.Thread(target=release_when_two_wait, daemon=True)
    watcher.start()
    run = run_cli(tmp_path, "read", daily(fake, max_concurrent_requests=2, date_window_size=2))
    watcher.join()
    assert_exact_and_clean(run, fake)
    assert held == [3]  # the first window (read alone) and two held back
    requests = fake.export_requests
    edges = sorted([(r.arrived_monotonic, 1) for r in requests] + [(r.finished_monotonic, -1) for r in requests])
    in_flight, most = 0, 0
    for _, step in edges:
        in_flight += step
        most = max(most, in_flight)
    assert most == 2


def test_given_429_with_retry_after_when_read_then_next_request_waits_that_long(tmp_path, fake):
    """Retry-After is what the retry waits (the wait itself is asserted with a fake clock in
    unit_tests/test_client.py; here it is 0.04 s, so that the test does not sleep)."""
    fake.inject(1, Fault("status", status=429, headers={"Retry-After": "0.04"}))
    run = run_cli(tmp_path, "read", daily(fake, max_concurrent_requests=1))
    assert_exact_and_clean(run, fake)
    first, second = fake.export_requests[:2]
    assert second.params == first.params and (first.status, second.status) == (429, 200)
    assert "attempt 1 failed (429 rate limited" in run.logs() and "retrying in 0.0 s" in run.logs()


# -- windows too large for Mixpanel -------------------------------------------------------------------------


def piece(request) -> bool:
    """Whether a request is for a piece of a split day (narrowed by time)."""
    return "$time" in request.params.get("where", "")


def edge_events(day: dt.date) -> list[FakeEvent]:
    """Events on and around every split bound of a day: midnight, 3 h, 6 h, 12 h, 18 h, the last millisecond."""
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() * 1000)
    offsets = [0, 1, 3 * 3600_000, 6 * 3600_000 - 1, 6 * 3600_000, 12 * 3600_000 - 1, 12 * 3600_000,
               18 * 3600_000 - 1, 18 * 3600_000, 86_400_000 - 1, 86_400_000, -1]
    return [
        FakeEvent("Edge", start + offset, {"distinct_id": f"edge-{i}", "$insert_id": f"edge-{i}"}, start + offset + 5)
        for i, offset in enumerate(offsets)
    ]


def test_given_timeout_errors_when_read_then_windows_split_down_and_pieces_partition_the_day(tmp_path, events):
    """400 `Timeout Error.`: 4 days → 2 → 1 → 6-hour pieces → 3 hours; every event once, bounds included."""
    day = FIRST_DAY + 2 * ONE_DAY
    fake = make_fake([*events, *edge_events(day)], now_ms=int(time.time() * 1000))
    try:
        too_large = Fault("status", status=400, body='{"error": "Timeout Error."}')
        first_four_days = (FIRST_DAY.isoformat(), (FIRST_DAY + 3 * ONE_DAY).isoformat())
        fake.inject_when(lambda r: (r.params["from_date"], r.params["to_date"]) == first_four_days, too_large)
        fake.inject_when(lambda r: r.params["from_date"] == day.isoformat() and not piece(r), too_large, times=10)
        fake.inject_when(lambda r: piece(r) and ">=" not in r.params["where"], too_large)  # the first 6 hours
        run = run_cli(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat(), date_window_size=4),
                      mode=INCREMENTAL)
        assert_exact_and_clean(run, fake)
        assert run.logs().count("splitting it into") == 4
        pieces = [r for r in fake.export_requests if r.status == 200 and piece(r)]
        assert len(pieces) == 5 and {r.params["from_date"] for r in pieces} == {day.isoformat()}
        assert sum(r.lines for r in pieces) == sum(truth(fake, day, day).values())
        assert sum(1 for r in pieces if ">=" not in r.params["where"]) == 1  # one piece open at the start
        assert sum(1 for r in pieces if "<" not in r.params["where"]) == 1  # and one open at the end
        assert_checkpoints_cover_what_came_before(run)
    finally:
        fake.stop()


def assert_checkpoints_cover_what_came_before(run) -> None:
    """Every STATE's `through` day has all its records (and none later) emitted before that STATE."""
    seen: collections.Counter[str] = collections.Counter()
    expected = collections.Counter(r["time"][:10] for r in run.records)
    for message in run.messages:
        if message["type"] == "RECORD":
            seen[message["record"]["data"]["time"][:10]] += 1
        elif message["type"] == "STATE":
            state = message["state"]["stream"]["stream_state"]
            through = state.get("in_progress", {}).get("through") or state.get("synced_through")
            assert all(seen[d] == n for d, n in expected.items() if d <= through)


def test_given_timeout_even_at_one_hour_when_read_then_system_error_saying_how_to_narrow(tmp_path, fake):
    """A day Mixpanel cannot answer even hour by hour ends the sync with advice, not a silent gap."""
    day = FIRST_DAY + ONE_DAY
    fake.inject_when(lambda r: r.params["from_date"] == day.isoformat(), Fault("status", status=400), times=1000)
    run = run_cli(tmp_path, "read", daily(fake), mode=INCREMENTAL)
    assert run.returncode != 0
    (error,) = run.errors
    assert error["failure_type"] == "system_error"
    assert "one hour" in error["message"] and "events or where" in error["message"]
    assert record_keys(run.records) == truth(fake, FIRST_DAY, FIRST_DAY)
    assert run.states[-1]["in_progress"]["through"] == FIRST_DAY.isoformat()
    assert_no_secrets(run.stdout, run.stderr)


def test_given_mixpanels_today_behind_ours_when_read_then_to_date_clamped_and_said(tmp_path, fake):
    """400 `to_date cannot be later than today`: read up to Mixpanel's today, log it, state says so."""
    midnight = int(dt.datetime.combine(TODAY, dt.time(), dt.UTC).timestamp() * 1000)
    fake.now_ms = midnight - 1
    config = config_for(fake, start_date=FIRST_DAY.isoformat())
    run = run_cli(tmp_path, "read", config, mode=INCREMENTAL, now_ms=midnight + 60_000)  # ours: a minute into TODAY
    assert run.returncode == 0, run.stdout[-3000:]
    assert record_keys(run.records) == truth(fake, FIRST_DAY, LAST_DAY, visible_at_ms=fake.now_ms)
    assert f"Reading up to {LAST_DAY} instead" in run.logs()
    assert run.states[-1]["synced_through"] == LAST_DAY.isoformat()
    assert max(r.params["to_date"] for r in fake.export_requests if r.status == 200) == LAST_DAY.isoformat()
    assert_no_secrets(run.stdout, run.stderr)


# -- failures the user must fix: at once, no retries -------------------------------------------------------


def test_given_wrong_secret_during_read_when_read_then_config_error_without_retries(tmp_path, fake):
    """401 fails fast as a config error quoting Mixpanel; no window is asked for twice (403/402: test_client.py)."""
    config = daily(fake)
    config["credentials"]["secret"] = "not-the-secret-9d1"
    run = run_cli(tmp_path, "read", config)
    assert run.returncode != 0 and run.records == []
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert "Invalid credentials" in error["message"] and "credentials.username / credentials.secret" in error["message"]
    asked = requests_per_window(fake)
    assert max(asked.values()) == 1 and sum(asked.values()) <= 3
    assert "not-the-secret-9d1" not in run.stdout + run.stderr
    assert_no_secrets(run.stdout, run.stderr)


def test_given_failure_while_other_windows_wait_for_mixpanel_when_read_then_process_exits_without_them(
    tmp_path, fake
):
    """A failed sync ends when its error is reported, not when downloads still under way finish."""
    # The first window is read alone (its volume sizes the rest); then three at once: the 401 and two slow.
    first, second = FIRST_DAY.isoformat(), (FIRST_DAY + dt.timedelta(days=1)).isoformat()
    fake.inject_when(lambda r: r.params["from_date"] == second, Fault("status", status=401, body='{"error": "no"}'))
    fake.inject_when(lambda r: r.params["from_date"] not in (first, second), Fault("slow", delay_s=90), times=10)
    run = run_cli(tmp_path, "read", daily(fake), timeout=45)  # TimeoutExpired if it waits for the slow ones
    assert run.returncode != 0 and run.errors[-1]["failure_type"] == "config_error"
    faults = [r.fault for r in fake.export_requests]
    assert faults[0] is None and sorted(faults[1:]) == ["slow", "slow", "status"]


# -- retries exhausted: checkpoint, fail, resume -----------------------------------------------------------


def test_given_window_failing_past_retry_budget_when_read_then_transient_error_after_state_and_resume_exact(
    tmp_path, fake
):
    """The sync stops with a transient error after a STATE that holds exactly what was emitted; resuming
    from that STATE delivers exactly the rest."""
    failing = FIRST_DAY + 4 * ONE_DAY
    fake.inject_when(lambda r: r.params["from_date"] == failing.isoformat(), Fault("status", status=503), times=1000)
    config = daily(fake, max_retry_seconds=0.5)
    first = run_cli(tmp_path, "read", config, mode=INCREMENTAL)
    assert first.returncode != 0
    (error,) = first.errors
    assert error["failure_type"] == "transient_error"
    assert failing.isoformat() in error["message"] and "max_retry_seconds" in error["message"]
    assert record_keys(first.records) == truth(fake, FIRST_DAY, failing - ONE_DAY)
    last_state = first.states[-1]
    assert last_state["in_progress"]["through"] == (failing - ONE_DAY).isoformat()
    kinds = [m["type"] for m in first.messages if m["type"] in ("RECORD", "STATE")]
    assert kinds[-1] == "STATE"  # nothing emitted after the last checkpoint
    assert first.statuses[-1] == "INCOMPLETE"
    assert_no_secrets(first.stdout, first.stderr)

    fake.clear_faults()
    fake.reset_requests()
    second = run_cli(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(last_state))
    assert second.returncode == 0, second.stdout[-3000:]
    assert record_keys(second.records) == truth(fake, failing, TODAY)
    assert record_keys(first.records) + record_keys(second.records) == truth(fake, FIRST_DAY, TODAY)
    assert second.states[-1]["synced_through"] == TODAY.isoformat()


def test_given_unreachable_host_when_read_then_transient_error_naming_the_host_and_no_secret(tmp_path, fake):
    """Connection refused everywhere: retried, then a transient error that names the host; nothing leaks."""
    run = run_cli(tmp_path, "read", daily(fake, api_base_url="http://127.0.0.1:9", max_retry_seconds=0.3))
    assert run.returncode != 0 and run.records == []
    (error,) = run.errors
    assert error["failure_type"] == "transient_error" and "http://127.0.0.1:9" in error["message"]
    assert "Traceback" not in error["message"]
    assert_no_secrets(run.stdout, run.stderr)


# -- lines that are not JSON -------------------------------------------------------------------------------


def test_given_one_corrupt_line_once_when_read_then_window_asked_again_and_records_exact(tmp_path, fake):
    """A corrupt line seen once is reported with its position, and the window's clean answer is used."""
    fake.inject(3, Fault("bad_json"))
    run = run_cli(tmp_path, "read", daily(fake))
    assert_exact_and_clean(run, fake)
    assert "1 line(s) are not JSON objects (first at line" in run.logs()
    assert "asking for the window once more" in run.logs() and len(fake.export_requests) == 12


def test_given_corrupt_line_every_time_when_read_then_sync_fails_after_checkpoint_without_that_window(tmp_path, fake):
    """A corrupt line that persists fails the sync (no silent loss) before any record of its window."""
    bad_day = FIRST_DAY + 3 * ONE_DAY
    fake.inject_when(lambda r: r.params["from_date"] == bad_day.isoformat(), Fault("bad_json"), times=2)
    run = run_cli(tmp_path, "read", daily(fake), mode=INCREMENTAL)
    assert run.returncode != 0
    (error,) = run.errors
    assert error["failure_type"] == "system_error"
    assert "1 lines are not JSON events (first at line" in error["message"] and "skip_bad_lines" in error["message"]
    assert record_keys(run.records) == truth(fake, FIRST_DAY, bad_day - ONE_DAY)
    assert run.states[-1]["in_progress"]["through"] == (bad_day - ONE_DAY).isoformat()
    assert_no_secrets(run.stdout, run.stderr)


def test_given_corrupt_line_every_time_and_skip_bad_lines_when_read_then_exact_set_without_it(tmp_path, fake):
    """With skip_bad_lines the persistent corrupt line is dropped, logged, and everything else delivered."""
    bad_day = FIRST_DAY + 3 * ONE_DAY
    fake.inject_when(lambda r: r.params["from_date"] == bad_day.isoformat(), Fault("bad_json"), times=2)
    run = run_cli(tmp_path, "read", daily(fake, skip_bad_lines=True))
    assert_exact_and_clean(run, fake)
    assert "skipped because skip_bad_lines is on" in run.logs()


# -- bad input ---------------------------------------------------------------------------------------------


def read_with_files(tmp_path, fake, config_text=None, catalog_text=None, state_text=None, config_path=None):
    """Run read with the input files written as given (text, not necessarily JSON)."""
    config_file = config_path or write_json(tmp_path / "in_config.json", daily(fake))
    if config_text is not None:
        config_file = tmp_path / "in_config.json"
        config_file.write_text(config_text)
    catalog_file = tmp_path / "in_catalog.json"
    catalog_file.write_text(catalog_text if catalog_text is not None else json.dumps(catalog(INCREMENTAL)))
    extra = ["--config", str(config_file), "--catalog", str(catalog_file)]
    if state_text is not None:
        state_file = tmp_path / "in_state.json"
        state_file.write_text(state_text)
        extra += ["--state", str(state_file)]
    return run_cli(tmp_path, "read", extra=extra)


def bad_sync_mode() -> str:
    value = catalog()
    value["streams"][0]["sync_mode"] = "sideways"
    return json.dumps(value)


BAD_INPUTS = {
    "config not JSON": (dict(config_text="{not json"), ["config file", "valid JSON"]),
    "config missing": (dict(config_path="/nonexistent/config.json"), ["config file", "No such file"]),
    "catalog not JSON": (dict(catalog_text="[1, 2"), ["catalog file", "valid JSON"]),
    "catalog not a catalog": (dict(catalog_text='{"stream": "export"}'), ["catalog"]),
    "catalog with bad sync mode": (dict(catalog_text=bad_sync_mode()), ["catalog"]),
    "state not a list of messages": (dict(state_text='[{"type": "STREAM"}]'), ["state file"]),
}


@pytest.mark.parametrize("inputs,words", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_given_bad_input_file_when_read_then_config_error_naming_it_and_no_request(tmp_path, fake, inputs, words):
    """Unreadable or invalid config, catalog or state: one clear config error, nothing sent to Mixpanel."""
    run = read_with_files(tmp_path, fake, **inputs)
    assert run.returncode != 0 and run.records == []
    (error,) = run.errors
    assert error["failure_type"] == "config_error"
    assert all(word in error["message"] for word in words), error["message"]
    assert fake.export_requests == []
    assert_no_secrets(run.stdout, run.stderr)


def test_given_catalog_with_bad_sync_mode_when_read_then_error_names_the_field(tmp_path, fake):
    """The message says which part of the catalog is wrong, not just that validation failed."""
    run = read_with_files(tmp_path, fake, catalog_text=bad_sync_mode())
    assert "sideways" in run.errors[-1]["message"] and "sync_mode" in run.errors[-1]["message"]


@pytest.mark.parametrize("setting,value", [("requests_per_second", 0), ("max_retry_seconds", "long")])
def test_given_invalid_reliability_setting_when_read_then_config_error_naming_it(tmp_path, fake, setting, value):
    """Rate and retry settings out of range are refused by name before any request."""
    run = run_cli(tmp_path, "read", daily(fake, **{setting: value}))
    assert run.returncode != 0 and run.errors[-1]["failure_type"] == "config_error"
    assert setting in run.errors[-1]["message"] and fake.export_requests == []
