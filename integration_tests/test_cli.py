"""The CLI (spec, check, discover, read) against the fake Mixpanel: exact records, clean failures.

Each command runs as a real CLI process at least once (spec, a check, discover, a full refresh, two
incremental syncs, a config error, stdout's purity); the other cases run the console script's `run` in
this process (harness.run_in_process: the same command line and files, 2-3 s of imports less each).
"""

from __future__ import annotations

import datetime as dt
import json

import jsonschema
import pytest

from fake_mixpanel import Fault
from integration_tests.conftest import FIRST_DAY, LAST_DAY, TODAY
from integration_tests.harness import (
    API_SECRET,
    INCREMENTAL,
    assert_no_secrets,
    catalog,
    config_for,
    record_keys,
    reread_from,
    run_cli,
    run_in_process,
    state_input,
    truth,
)
from source_mixpanel_export.records import SCHEMA


def test_spec_prints_one_spec_with_secrets_marked(tmp_path):
    """spec: one SPEC message; both secrets are airbyte_secret."""
    run = run_cli(tmp_path, "spec")
    assert run.returncode == 0
    (spec,) = run.of("SPEC")
    options = spec["spec"]["connectionSpecification"]["properties"]["credentials"]["oneOf"]
    assert options[0]["properties"]["secret"]["airbyte_secret"] is True
    assert options[1]["properties"]["api_secret"]["airbyte_secret"] is True


def status_of(run) -> dict:
    (status,) = run.of("CONNECTION_STATUS")
    return status["connectionStatus"]


def test_given_service_account_when_check_then_succeeded_after_a_small_sample(tmp_path, fake):
    """check samples today (limit=100) and, today being empty here, yesterday; then succeeds."""
    run = run_cli(tmp_path, "check", config_for(fake))
    assert run.returncode == 0 and status_of(run)["status"] == "SUCCEEDED"
    today, yesterday = fake.export_requests
    assert (today.params["from_date"], yesterday.params["from_date"]) == (TODAY.isoformat(), LAST_DAY.isoformat())
    assert today.params["limit"] == yesterday.params["limit"] == "100"
    assert today.params["project_id"] == "12345" and today.auth == "service_account"


def test_given_project_secret_when_check_then_succeeded(tmp_path, fake):
    """The deprecated project secret works, without a project_id."""
    config = config_for(fake, credentials={"option_title": "Project Secret", "api_secret": API_SECRET})
    run = run_in_process(tmp_path, "check", config)
    assert status_of(run)["status"] == "SUCCEEDED" and fake.export_requests[0].auth == "project_secret"


def test_given_wrong_secret_when_check_then_failed_naming_credentials_without_the_secret(tmp_path, fake):
    """A wrong secret: FAILED, exit 0, the message names the fields, no secret anywhere."""
    config = config_for(fake)
    config["credentials"]["secret"] = "wrong-secret-123"
    run = run_in_process(tmp_path, "check", config)
    status = status_of(run)
    assert run.returncode == 0 and status["status"] == "FAILED"
    assert "credentials.username / credentials.secret" in status["message"]
    assert "wrong-secret-123" not in run.stdout + run.stderr
    assert_no_secrets(run.stdout, run.stderr)


def test_given_400_style_auth_error_when_check_then_failed_naming_credentials(tmp_path, fake):
    """Mixpanel's 400 'Unable to authenticate request' is a credentials problem too."""
    fake.auth_error_style = "400"
    config = config_for(fake, credentials={"option_title": "Project Secret", "api_secret": "nope"})
    assert "credentials.api_secret" in status_of(run_in_process(tmp_path, "check", config))["message"]


def test_given_wrong_project_id_when_check_then_failed_naming_project_id(tmp_path, fake):
    """403: the message says which project and what to check."""
    config = config_for(fake)
    config["credentials"]["project_id"] = 999
    message = status_of(run_in_process(tmp_path, "check", config))["message"]
    assert "403" in message and "project_id" in message and "999" in message


def test_given_plan_limit_when_check_then_failed_saying_so(tmp_path, fake):
    """402: the plan does not allow raw export."""
    fake.inject(1, Fault("status", status=402, body='{"error": "Payment required"}'))
    assert "plan" in status_of(run_in_process(tmp_path, "check", config_for(fake)))["message"]


def test_given_unreachable_host_when_check_then_failed_saying_so(tmp_path, fake):
    """A host nobody listens on: FAILED with the host named."""
    run = run_in_process(tmp_path, "check", config_for(fake, api_base_url="http://127.0.0.1:9"))
    status = status_of(run)
    assert run.returncode == 0 and status["status"] == "FAILED"
    assert "Could not reach http://127.0.0.1:9" in status["message"]


def test_given_invalid_config_when_check_then_failed_naming_the_field_without_requests(tmp_path, fake):
    """An unparseable start_date fails before any request is sent."""
    run = run_in_process(tmp_path, "check", config_for(fake, start_date="2024-02-30"))
    assert "start_date" in status_of(run)["message"] and fake.export_requests == []


def test_discover_offers_both_streams_with_both_modes_cursor_and_key(tmp_path, fake):
    """discover: export and profiles, full refresh + incremental, source-defined cursor and primary key."""
    run = run_cli(tmp_path, "discover", config_for(fake))
    (message,) = run.of("CATALOG")
    stream, profiles = message["catalog"]["streams"]
    assert profiles["name"] == "profiles" and set(profiles["supported_sync_modes"]) == {"full_refresh", "incremental"}
    assert profiles["default_cursor_field"] == ["last_seen"]
    assert profiles["source_defined_primary_key"] == [["distinct_id"]]
    assert stream["name"] == "export"
    assert set(stream["supported_sync_modes"]) == {"full_refresh", "incremental"}
    assert stream["source_defined_cursor"] is True and stream["default_cursor_field"] == ["time"]
    assert stream["source_defined_primary_key"] == [["event_id"]]
    assert stream["json_schema"] == SCHEMA


def test_given_full_refresh_when_read_then_exact_records_valid_and_typed(tmp_path, fake):
    """Every event of the range exactly once, schema-valid, values lossless, time true UTC."""
    run = run_cli(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()))
    assert run.returncode == 0, run.stdout[-2000:]
    assert record_keys(run.records) == truth(fake, FIRST_DAY, TODAY)
    for record in run.records:
        jsonschema.validate(record, SCHEMA)
    by_id = {r["insert_id"]: r for r in run.records if r.get("insert_id")}
    for event in fake.events:
        if event.insert_id in by_id:
            record = by_id[event.insert_id]
            moment = dt.datetime.fromtimestamp(event.time_ms / 1000, dt.UTC)
            assert record["time"] == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    huge = [r for r in run.records if "huge_int" in r["properties"]]
    assert huge and all(isinstance(r["properties"]["huge_int"], int) for r in huge)
    assert len({r["event_id"] for r in run.records}) == len(run.records)
    assert run.statuses == ["STARTED", "RUNNING", "COMPLETE"]
    assert_no_secrets(run.stdout, run.stderr)


def test_given_requests_when_read_then_gzip_whole_days_and_no_date_after_today(tmp_path, fake):
    """Requests ask for gzip, time in ms, and never a to_date after today."""
    run_in_process(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()))
    assert fake.export_requests and all(r.gzip for r in fake.export_requests)
    assert all(r.params["time_in_ms"] == "true" for r in fake.export_requests)
    assert max(r.params["to_date"] for r in fake.export_requests) == TODAY.isoformat()


def test_given_events_and_where_when_read_then_only_matching_events(tmp_path, fake):
    """events and where reach Mixpanel and narrow the export."""
    config = config_for(fake, start_date=FIRST_DAY.isoformat(), events=["Purchase", "Sign Up"])
    config["where"] = 'properties["mp_lib"] == "web"'
    run = run_in_process(tmp_path, "read", config)
    assert run.records and all(r["event"] in ("Purchase", "Sign Up") for r in run.records)
    assert all(r["properties"]["mp_lib"] == "web" for r in run.records)
    expected = sum(
        1 for e in fake.events if e.name in ("Purchase", "Sign Up") and e.properties.get("mp_lib") == "web"
    )
    assert len(run.records) == expected


def test_given_incremental_when_synced_twice_then_second_sync_reads_only_new_events(tmp_path, fake, events):
    """Sync 2 re-reads the recent days (the attribution window and up to a block before it) for late
    arrivals only, and emits just what is new (no history sweep here: test_sweep.py has it)."""
    config = config_for(fake, start_date=FIRST_DAY.isoformat(), history_sweep_requests=0)
    first = run_cli(tmp_path, "read", config, mode=INCREMENTAL)
    assert first.returncode == 0 and record_keys(first.records) == truth(fake, FIRST_DAY, TODAY)
    final = first.states[-1]
    assert final["synced_through"] == TODAY.isoformat() and "in_progress" not in final

    fake.now_ms += 3_600_000
    late = [
        type(e)(e.name, e.time_ms, {**e.properties, "$insert_id": f"late-{i}"}, fake.now_ms - 1000)
        for i, e in enumerate(events[-40:])
    ]
    fake.add_events(late)
    fake.reset_requests()
    second = run_cli(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(final))
    assert second.returncode == 0
    assert sorted(r.get("insert_id") for r in second.records) == sorted(e.insert_id for e in late)
    first_day = min(r.params["from_date"] for r in fake.export_requests)
    assert first_day == reread_from(final).isoformat() and reread_from(final) <= TODAY - dt.timedelta(days=5)
    assert all("mp_processing_time_ms" in r.params["where"] for r in fake.export_requests)
    assert second.states[-1]["watermark_ms"] > final["watermark_ms"]


def test_given_state_checkpoints_when_read_then_each_state_follows_its_window(tmp_path, fake):
    """A STATE after every window; the last window's marks the sync complete."""
    run = run_in_process(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()), mode=INCREMENTAL)
    windows = sorted(r.params["to_date"] for r in fake.export_requests)
    assert len(run.states) == len(windows)
    assert [s["in_progress"]["through"] for s in run.states[:-1]] == windows[:-1]
    assert run.states[-1]["synced_through"] == windows[-1] and "in_progress" not in run.states[-1]
    counts = [m["state"]["sourceStats"]["recordCount"] for m in run.of("STATE")]
    assert sum(counts) == len(run.records)


def test_given_unknown_stream_in_catalog_when_read_then_config_error(tmp_path, fake):
    """A catalog naming another stream fails as a config error that names it."""
    run = run_in_process(tmp_path, "read", config_for(fake), catalog_value=catalog(name="cohorts"))
    assert run.returncode != 0
    assert run.errors and run.errors[-1]["failure_type"] == "config_error" and "cohorts" in run.errors[-1]["message"]
    assert fake.export_requests == []


def test_given_invalid_config_when_read_then_config_error_and_no_request(tmp_path, fake):
    """end_date before start_date: a config error naming end_date, nothing sent."""
    run = run_cli(tmp_path, "read", config_for(fake, start_date="2024-05-01", end_date="2024-04-01"))
    assert run.returncode != 0 and "end_date" in run.errors[-1]["message"]
    assert run.errors[-1]["failure_type"] == "config_error" and fake.export_requests == []


def test_given_unreadable_state_file_when_read_then_config_error(tmp_path, fake):
    """A state file that is not JSON is named in a config error."""
    bad = tmp_path / "bad_state.json"
    bad.write_text("{not json")
    run = run_in_process(tmp_path, "read", config_for(fake), mode=INCREMENTAL, extra=["--state", str(bad)])
    assert run.returncode != 0 and run.errors and "state" in run.errors[-1]["message"]


def test_given_malformed_state_when_read_then_config_error_and_no_request(tmp_path, fake):
    """A foreign state is refused clearly, not silently turned into a full re-sync."""
    run = run_in_process(tmp_path, "read", config_for(fake), mode=INCREMENTAL, state=state_input({"cursor": "x"}))
    assert run.returncode != 0 and "cannot be used" in run.errors[-1]["message"]
    assert fake.export_requests == []


def test_given_official_state_when_read_then_migrated_and_attribution_days_reread_whole(tmp_path, fake):
    """{'time': ...} is migrated: the days up to it are re-read without a processing filter."""
    official = {"time": f"{LAST_DAY.isoformat()}T10:00:00Z"}
    run = run_in_process(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()), mode=INCREMENTAL,
                  state=state_input(official))
    assert run.returncode == 0 and "Migrating" in run.logs()
    first = LAST_DAY - dt.timedelta(days=4)
    assert record_keys(run.records) == truth(fake, first, TODAY)
    assert run.states[-1]["version"] == 3


def test_output_lines_are_each_one_json_message(tmp_path, fake):
    """stdout holds nothing but protocol messages."""
    run = run_cli(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()))
    for line in run.stdout.rstrip("\n").split("\n"):
        assert json.loads(line)["type"] in {"RECORD", "STATE", "LOG", "TRACE"}


def test_given_several_windows_when_read_then_estimates_and_a_progress_log_per_window(tmp_path, fake):
    """An ESTIMATE early, one extrapolated from the first window, and a LOG per finished window."""
    run = run_in_process(tmp_path, "read", config_for(fake, start_date=FIRST_DAY.isoformat()))
    estimates = [m["trace"]["estimate"] for m in run.of("TRACE") if m["trace"]["type"] == "ESTIMATE"]
    assert [e["name"] for e in estimates] == ["export", "export"]
    assert "row_estimate" not in estimates[0] and estimates[1]["row_estimate"] > 0
    windows = len(fake.export_requests)
    progress = [line for line in run.logs().split("\n") if line.startswith("Window ")]
    assert len(progress) == windows and f"{windows} windows in " in progress[-1] and "; 0 days left" in progress[-1]
    assert all("records" in line and "hourly budget" in line for line in progress)
    assert estimates[1]["row_estimate"] == pytest.approx(len(run.records), rel=0.5)


@pytest.mark.parametrize("verb", ["read", "discover"])
def test_given_invalid_config_when_read_or_discover_then_the_error_carries_no_traceback(tmp_path, fake, verb):
    """A config error names the field and says what to do; neither its FATAL line nor its TRACE shows a
    Python traceback, and a lowercase region is the same region."""
    bad = run_in_process(tmp_path, verb, config_for(fake, region="MARS"))
    assert bad.returncode == 1
    fatal = [m["log"]["message"] for m in bad.of("LOG") if m["log"]["level"] == "FATAL"]
    assert fatal == ["region must be one of US, EU, IN; got 'MARS'."]
    assert bad.errors[0]["failure_type"] == "config_error" and "stack_trace" not in bad.errors[0]
    assert "Traceback" not in bad.stdout + bad.stderr
    assert run_in_process(tmp_path, verb, config_for(fake, region="us")).returncode == 0
