"""One read path: the console script's `read` and `SourceMixpanelExport.read` (what the CDK's
entrypoint, the standard tests and in-process callers run) give the same records from the same
bodies, and fail the same way on bad lines.

The CDK path is run in this process through `AirbyteEntrypoint.run`, the exact lines `launch` would
print, and parsed with the stdlib so integers beyond 64 bits stay exact. The console script runs as a
real CLI for the awkward lines, and in this process (harness.run_in_process) for the bad lines.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER

from fake_mixpanel import FakeEvent, Fault, generate_events
from integration_tests.conftest import TODAY
from integration_tests.harness import Run, config_for, make_fake, parse_messages, run_cli, run_in_process, write_json
from source_mixpanel_export import SourceMixpanelExport

FIRST = TODAY - dt.timedelta(days=4)


def awkward_events() -> list[FakeEvent]:
    """The fake's every awkward kind, and lines holding >64-bit ints, U+2028, \\r, no $insert_id."""
    base = int(dt.datetime.combine(FIRST, dt.time(12), dt.UTC).timestamp() * 1000)
    odd = [
        FakeEvent("Big", base + 1, {"distinct_id": "u1", "$insert_id": "big", "n": 2**70, "m": -(2**65)}, base + 9),
        FakeEvent("Sep", base + 2, {"distinct_id": "u2", "$insert_id": "sep", "t": "a\u2028b\u2029c\u0085d"}, base + 9),
        FakeEvent("CR", base + 3, {"distinct_id": "u3", "$insert_id": "cr", "t": "line\rreturn\n"}, base + 9),
        FakeEvent("NoId", base + 4, {"distinct_id": "u4", "x": [None, {"y": None}]}, base + 9),
        FakeEvent("NoProcessing", base + 5, {"$insert_id": "np"}, None),
    ]
    return sorted(generate_events(400, FIRST, 4, seed=5) + odd, key=lambda e: e.time_ms)


def cdk_read(tmp_path, config: dict[str, Any]) -> Run:
    """`read` through the CDK's own entrypoint and serializer, in this process."""
    catalog = {"streams": [{"stream": {"name": "export", "json_schema": {}, "supported_sync_modes": ["full_refresh"]},
                            "sync_mode": "full_refresh", "destination_sync_mode": "append"}]}
    args = ["read", "--config", str(write_json(tmp_path / "cdk_config.json", config)),
            "--catalog", str(write_json(tmp_path / "cdk_catalog.json", catalog))]
    entrypoint = AirbyteEntrypoint(SourceMixpanelExport())
    lines: list[str] = []
    failed = 0
    with PRINT_BUFFER:
        try:
            for line in entrypoint.run(entrypoint.parse_args(args)):
                lines.append(line)
        except Exception as exc:  # what launch's exception handler would report
            failed = 1
            lines.append(json.dumps({"type": "TRACE", "trace": {"type": "ERROR", "error": {
                "failure_type": getattr(exc, "failure_type", None) and exc.failure_type.value,
                "message": getattr(exc, "message", str(exc))}}}))
    stdout = "\n".join(lines)
    return Run(failed, stdout, "", parse_messages(stdout))


def data_of(run: Run) -> list[str]:
    """Each record's data as canonical text (exact integers), in emission order."""
    return [json.dumps(record, sort_keys=True) for record in run.records]


@pytest.mark.parametrize("legacy", [None, "America/Los_Angeles"])
def test_given_awkward_lines_when_read_by_both_paths_then_the_same_records(tmp_path, legacy):
    """>64-bit ints, Unicode line separators, \\r, no $insert_id, no processing time, legacy local times."""
    fake = make_fake(awkward_events(), legacy_timezone=legacy)
    try:
        extra = {"legacy_local_time": True, "project_timezone": legacy} if legacy else {}
        config = config_for(fake, start_date=FIRST.isoformat(), **extra)
        cli = run_cli(tmp_path, "read", config)
        cdk = cdk_read(tmp_path, config)
    finally:
        fake.stop()
    assert cli.returncode == cdk.returncode == 0, cli.stdout[-1000:]
    assert data_of(cli) == data_of(cdk)
    assert len(cli.records) == 405 or legacy  # a legacy project's days end 8 h later: today's last hours wait
    assert [r for r in cli.records if r["event"] == "Big"][0]["properties"]["n"] == 2**70
    assert "insert_id" not in [r for r in cli.records if r["event"] == "NoId"][0]
    assert cli.states == cdk.states


@pytest.mark.parametrize(
    ("line", "failure"),
    [(b'{"event": "Broken", "properties": {', "system_error"), (b'{"event": 5, "properties": {}}', "system_error")],
    ids=["not-json", "json-not-an-event"],
)
def test_given_a_bad_line_every_time_when_read_by_both_paths_then_the_same_records_and_error(tmp_path, line, failure):
    """A line that is not JSON fails its window before any of it is emitted, one that is JSON but not an
    event while it is emitted: in both paths alike, with the same records before the error."""
    fake = make_fake(awkward_events())
    try:
        fake.inject_when(lambda r: r.params["to_date"] == TODAY.isoformat(), Fault("bad_json", corrupt_line=line), 4)
        config = config_for(fake, start_date=FIRST.isoformat(), date_window_size=2, max_concurrent_requests=1)
        cli = run_in_process(tmp_path, "read", config)
        cdk = cdk_read(tmp_path, config)
    finally:
        fake.stop()
    assert cli.returncode != 0 and cdk.returncode != 0
    assert cli.errors[-1]["failure_type"] == cdk.errors[-1]["failure_type"] == failure
    assert "not JSON events" in cli.errors[-1]["message"] and "not JSON events" in cdk.errors[-1]["message"]
    assert data_of(cli) == data_of(cdk) and cli.records
