"""The README's PyAirbyte recipe, run as written: it loads the fake's events and profiles into a local DuckDB,
a table per stream, typed.

PyAirbyte (`airbyte` on PyPI) installs beside airbyte-cdk 7.39 and this package, so it runs in the
test environment itself; the connector is the venv's own `source-mixpanel-export` script. The code is
the README's ```python block itself, with only the fake's address put in, so the two cannot drift.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from integration_tests.conftest import FIRST_DAY, LAST_DAY
from integration_tests.harness import ROOT, truth

SCRIPT = Path(sys.executable).parent / "source-mixpanel-export"
RECIPE_URL = "http://127.0.0.1:8765"  # the fake's default address, which the README's recipe names
PROFILES = 2000  # the fake's people profiles by default


def readme_recipe() -> str:
    """The README's one ```python block (the PyAirbyte recipe)."""
    blocks = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.S | re.M)
    (recipe,) = [block for block in blocks if "import airbyte as ab" in block]
    assert recipe.count(RECIPE_URL) == 1
    return recipe


@pytest.fixture(autouse=True)
def airbyte_loggers_put_back() -> Iterator[None]:
    """PyAirbyte gives the `airbyte` logger, the parent of the connector's own, a file handler and no
    propagation: every later in-process run in this worker would lose its LOG lines (its tests saw none)."""
    manager = logging.root.manager

    def airbyte_loggers() -> dict[str, logging.Logger]:
        named = {n: lg for n, lg in manager.loggerDict.items() if n.split(".")[0] == "airbyte"}
        return {n: lg for n, lg in named.items() if isinstance(lg, logging.Logger)}

    saved = {n: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for n, lg in airbyte_loggers().items()}
    yield
    for name, logger in airbyte_loggers().items():
        level, handlers, logger.propagate, logger.disabled = saved.get(name, (logging.NOTSET, [], True, False))
        for handler in set(logger.handlers) - set(handlers):
            handler.close()
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.fixture
def pyairbyte(tmp_path, monkeypatch):
    """PyAirbyte with its files under tmp_path (the recipe itself turns on offline mode)."""
    monkeypatch.delenv("AIRBYTE_OFFLINE_MODE", raising=False)
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("AIRBYTE_CACHE_ROOT", str(tmp_path / "pyairbyte"))
    monkeypatch.setenv("AIRBYTE_LOGGING_ROOT", str(tmp_path / "pyairbyte-logs"))
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: install this package into the test environment (pip install -e .)")
    monkeypatch.chdir(tmp_path)  # the recipe's cache goes to ./.cache
    if importlib.util.find_spec("airbyte") is None:
        pytest.skip("PyAirbyte is missing: install the package with its `tests` extra")
    # Not imported here: PyAirbyte reads AIRBYTE_OFFLINE_MODE once, when imported, and the recipe sets it first.
    assert "airbyte" not in sys.modules, "PyAirbyte was imported before the recipe could set its offline mode"


@pytest.fixture
def fake(events) -> Iterator[SimpleNamespace]:
    """The fake Mixpanel with the session's events, in a process of its own (`python -m fake_mixpanel`),
    with its default credentials (those the README's recipe uses) on a free port.

    PyAirbyte's executor, DuckDB's threads and an in-process fake share this process: in a whole test
    run a `check` once waited 15 minutes for an in-process fake that never answered. Out of process,
    nothing here can hold it up."""
    args = [
        sys.executable, "-m", "fake_mixpanel", "--port", "0", "--events", "1500", "--days", "10", "--seed", "7",
        "--end-date", LAST_DAY.isoformat(),
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


def test_given_fake_project_when_readme_pyairbyte_recipe_runs_then_every_event_arrives_typed(fake, pyairbyte):
    """The README's recipe (get_source, check, select_streams, read into a local DuckDB cache): all rows of
    both streams, each in its own table, real types."""
    namespace: dict = {}
    exec(compile(readme_recipe().replace(RECIPE_URL, fake.base_url), "README.md (PyAirbyte)", "exec"), namespace)
    result, cache, events = namespace["result"], namespace["cache"], namespace["events"]

    expected = sum(truth(fake, FIRST_DAY, LAST_DAY).values())
    assert result.processed_records == expected + PROFILES and len(events) == expected
    assert len(namespace["people"]) == PROFILES
    (people,) = cache.run_sql_query("SELECT count(*) AS n, count(DISTINCT distinct_id) AS ids FROM profiles")
    assert people == {"n": PROFILES, "ids": PROFILES}
    columns = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'profiles'"
    types = {c["column_name"]: c["data_type"] for c in cache.run_sql_query(columns)}
    assert types["distinct_id"] == "VARCHAR" and types["last_seen"].startswith("TIMESTAMP")
    assert types["properties"] == "JSON"
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
