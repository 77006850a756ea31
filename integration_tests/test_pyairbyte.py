"""PyAirbyte runs the installed connector and loads the fake's events into a local DuckDB, typed.

PyAirbyte (`airbyte` on PyPI) installs beside airbyte-cdk 7.39 and this package, so it runs in the
test environment itself; the connector is the venv's own `source-mixpanel-export` script.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from integration_tests.conftest import FIRST_DAY, LAST_DAY
from integration_tests.harness import PROJECT_ID, ROOT, SA_SECRET, SA_USER, config_for, truth

SCRIPT = Path(sys.executable).parent / "source-mixpanel-export"


@pytest.fixture
def pyairbyte(tmp_path, monkeypatch):
    """PyAirbyte, offline (no registry look-ups, no usage reports), with its files under tmp_path."""
    monkeypatch.setenv("AIRBYTE_OFFLINE_MODE", "1")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("AIRBYTE_CACHE_ROOT", str(tmp_path / "pyairbyte"))
    monkeypatch.setenv("AIRBYTE_LOGGING_ROOT", str(tmp_path / "pyairbyte-logs"))
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install this package into the test environment (pip install -e .)")
    return pytest.importorskip("airbyte", reason="PyAirbyte is missing: install the package with its `tests` extra")


@pytest.fixture
def fake(events) -> Iterator[SimpleNamespace]:
    """The fake Mixpanel with the session's events, in a process of its own (`python -m fake_mixpanel`).

    PyAirbyte's executor, DuckDB's threads and an in-process fake share this process: in a whole test
    run a `check` once waited 15 minutes for an in-process fake that never answered. Out of process,
    nothing here can hold it up."""
    args = [
        sys.executable, "-m", "fake_mixpanel", "--port", "0", "--events", "1500", "--days", "10", "--seed", "7",
        "--end-date", LAST_DAY.isoformat(), "--username", SA_USER, "--secret", SA_SECRET,
        "--project-id", str(PROJECT_ID),
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout is not None
        url = next((m.group(1) for line in process.stdout if (m := re.search(r"listening on (\S+)", line))), None)
        assert url, "the fake exited before listening"
        assert FIRST_DAY == LAST_DAY - dt.timedelta(days=9)  # the same events as the session's
        yield SimpleNamespace(base_url=url, events=events)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_given_fake_project_when_pyairbyte_reads_export_into_duckdb_then_every_event_arrives_typed(
    tmp_path, fake, pyairbyte
):
    """get_source + select_streams + read into a new local DuckDB cache: all rows, real types."""
    config = config_for(fake, start_date=FIRST_DAY.isoformat(), end_date=LAST_DAY.isoformat())
    source = pyairbyte.get_source("source-mixpanel-export", config=config, local_executable=str(SCRIPT))
    source.check()
    source.select_streams(["export"])
    cache = pyairbyte.new_local_cache(cache_name="mixpanel_export", cache_dir=tmp_path / "duckdb")

    result = source.read(cache=cache)

    expected = sum(truth(fake, FIRST_DAY, LAST_DAY).values())
    assert result.processed_records == expected
    (count,) = cache.run_sql_query("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM export")
    assert count == {"n": expected, "ids": expected}
    columns = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'export'"
    types = {c["column_name"]: c["data_type"] for c in cache.run_sql_query(columns)}
    assert types["time"].startswith("TIMESTAMP") and types["mp_processing_time_ms"] == "BIGINT"
    assert types["properties"] == "JSON" and types["event"] == types["event_id"] == "VARCHAR"
    assert types["user_id"] == types["device_id"] == "VARCHAR"

    purchase = next(e for e in fake.events if e.insert_id and e.processing_ms and e.name == "Purchase")
    row = one_row(cache, purchase.insert_id)
    assert row["event"] == "Purchase" and row["distinct_id"] == purchase.properties["distinct_id"]
    assert row["time"].replace(tzinfo=dt.UTC) == dt.datetime.fromtimestamp(purchase.time_ms / 1000, dt.UTC)
    assert row["mp_processing_time_ms"] == purchase.processing_ms
    assert (row["user_id"], row["device_id"]) == (
        purchase.properties.get("$user_id"), purchase.properties.get("$device_id")
    )
    assert {r["n"] for r in cache.run_sql_query("SELECT count(user_id) AS n FROM export")} != {0}
    assert row["properties"]["amount"] == purchase.properties["amount"]
    assert row["properties"]["items"] == purchase.properties["items"]
    assert row["properties"]["$import"] is purchase.properties["$import"]

    big = next(e for e in fake.events if e.insert_id and e.properties.get("big_int") == 2**63 - 1)
    assert one_row(cache, big.insert_id)["properties"]["big_int"] == 2**63 - 1


def one_row(cache, insert_id: str) -> dict:
    """The cached row of one event, JSON columns as Python values."""
    (row,) = cache.run_sql_query(f"SELECT * FROM export WHERE insert_id = '{insert_id}'")
    return {k: json.loads(v) if k == "properties" and isinstance(v, str) else v for k, v in row.items()}
