"""Airbyte's standard tests, in-process against the fake Mixpanel, plus the files they cannot cover.

`acceptance-test-config.yml` lists the configs; the `standard_*` ones name the fake at
127.0.0.1:29847, which the module fixture below serves for the whole module. The port is fixed
because those config files are static, so concurrent test runs on one machine take turns through
a file lock instead of failing on a busy port.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airbyte_cdk.models import AirbyteStateMessageSerializer, ConfiguredAirbyteCatalogSerializer
from airbyte_cdk.test.entrypoint_wrapper import EntrypointOutput, read
from airbyte_cdk.test.standard_tests import SourceTestSuiteBase

from fake_mixpanel import FakeMixpanel, generate_events
from integration_tests.harness import API_SECRET, PROJECT_ID, SA_SECRET, SA_USER
from source_mixpanel_export import SourceMixpanelExport
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.state import parse_state

pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "integration_tests"
STANDARD_PORT = 29847
EVENT_COUNT = 400
LOCK_WAIT_SECONDS = 300


def load(path: Path) -> Any:
    """A JSON file of the repository."""
    return json.loads(path.read_text())


class _PortLock:
    """An exclusive lock per fixed port, so parallel test runs on one machine wait for each other."""

    def __init__(self, port: int) -> None:
        self._path = Path(tempfile.gettempdir()) / f"source-mixpanel-export-port-{port}.lock"
        self._file: Any = None

    def __enter__(self) -> _PortLock:
        self._file = self._path.open("w")
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"another test run held {self._path} for {LOCK_WAIT_SECONDS} s") from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


@pytest.fixture(scope="module", autouse=True)
def standard_fake() -> Iterator[FakeMixpanel]:
    """The fake the standard_* configs name: the seven days before today, inside the default start."""
    first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=7)
    events = generate_events(EVENT_COUNT, first_day, 7, seed=11)
    with _PortLock(STANDARD_PORT):
        server = FakeMixpanel(
            events, username=SA_USER, secret=SA_SECRET, project_id=PROJECT_ID, api_secret=API_SECRET,
            port=STANDARD_PORT,
        )
        try:
            server.start()
        except OSError as exc:
            raise RuntimeError(
                f"port {STANDARD_PORT}, which the standard_* configs name, is taken by another program ({exc})"
            ) from None
        try:
            yield server
        finally:
            server.stop()


class TestSourceMixpanelExport(SourceTestSuiteBase):
    """spec, check (good and bad credentials), discover, basic and full-refresh reads, bad catalog."""

    connector = SourceMixpanelExport


def read_with(config_file: str, state_file: str | None = None) -> EntrypointOutput:
    """An in-process read with the repository's configured catalog and, optionally, a state file."""
    catalog = ConfiguredAirbyteCatalogSerializer.load(load(TESTS / "configured_catalog.json"))
    state = [AirbyteStateMessageSerializer.load(m) for m in load(TESTS / state_file)] if state_file else None
    return read(SourceMixpanelExport(), load(TESTS / config_file), catalog, state)


def test_given_configured_catalog_when_incremental_read_then_every_fake_event_and_a_final_state(standard_fake):
    """configured_catalog.json (incremental, append_dedup) reads every event the fake holds."""
    output = read_with("standard_config.json")
    assert not output.errors
    assert len(output.records) == EVENT_COUNT == len({r.record.data["event_id"] for r in output.records})
    final = output.state_messages[-1].state.stream.stream_state
    assert final.version == 3 and final.synced_through == dt.datetime.now(dt.UTC).date().isoformat()


def test_given_abnormal_future_state_when_read_then_config_error_saying_reset_and_nothing_sent(standard_fake):
    """abnormal_state.json (synced through 2099) is refused: read from it, every later sync would read
    nothing and lose every new event (issue 12). Airbyte's future_state check expected a silent no-op."""
    requests_before = len(standard_fake.export_requests)
    output = read_with("standard_config.json", "abnormal_state.json")
    assert output.records == [] and output.errors
    error = output.errors[-1].trace.error
    assert error.failure_type.value == "config_error"
    assert "synced_through" in error.message and "future" in error.message and "Reset" in error.message
    assert len(standard_fake.export_requests) == requests_before


def test_sample_state_is_the_connectors_own_canonical_state():
    """sample_state.json is per-stream state, parses, and is exactly what the connector would write."""
    (message,) = load(TESTS / "sample_state.json")
    assert message["type"] == "STREAM" and message["stream"]["stream_descriptor"] == {"name": "export"}
    raw = message["stream"]["stream_state"]
    assert parse_state(raw).to_dict() == raw


def test_abnormal_state_is_per_stream_v2_state_in_the_far_future():
    """abnormal_state.json is a well-formed v2 state, decades ahead: refused for its dates alone."""
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    (message,) = load(TESTS / "abnormal_state.json")
    raw = message["stream"]["stream_state"]
    assert raw["version"] == 2 and raw["synced_through"] == "2099-01-01"
    with pytest.raises(AirbyteTracedException, match="lies in the future"):
        parse_state(raw, now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


SHIPPED_CONFIGS = [
    "integration_tests/sample_config.json",
    "secrets.example/config.json",
    "integration_tests/standard_config.json",
]


@pytest.mark.parametrize("relative", SHIPPED_CONFIGS)
def test_shipped_configs_parse_as_service_account_configs(relative):
    """Every config a user may copy parses with the connector's own parser into a service account."""
    config = parse_config(load(ROOT / relative))
    assert config.credentials.project_id == load(ROOT / relative)["credentials"]["project_id"]
    assert type(config.credentials).__name__ == "ServiceAccount"


def test_configured_catalog_names_only_the_export_stream_with_its_cursor_and_key():
    """configured_catalog.json parses as an Airbyte catalog matching what discover reports."""
    catalog = ConfiguredAirbyteCatalogSerializer.load(load(TESTS / "configured_catalog.json"))
    (stream,) = catalog.streams
    assert stream.stream.name == "export" and stream.cursor_field == ["time"]
    assert stream.primary_key == [["event_id"]]
