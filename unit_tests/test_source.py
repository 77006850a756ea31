"""The source over its stream definitions: discover lists them, read dispatches each configured entry to its
stream's reader with that stream's state, names its records and statuses, and names it in state errors."""

from __future__ import annotations

import logging

import pytest
from airbyte_cdk.models import (
    AirbyteStateMessageSerializer,
    ConfiguredAirbyteCatalogSerializer,
    FailureType,
    SyncMode,
    Type,
)
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export import source as source_module
from source_mixpanel_export.api import ENGAGE_ENDPOINT
from source_mixpanel_export.catalog import STREAMS, StreamDef
from source_mixpanel_export.records import Batch
from source_mixpanel_export.source import SourceMixpanelExport
from source_mixpanel_export.state import StateRefused
from source_mixpanel_export.stream import state_message

LOGGER = logging.getLogger("test_source")
CONFIG = {
    "credentials": {"option_title": "Service Account", "username": "u", "secret": "s3cret", "project_id": 7},
    "start_date": "2024-01-01",
    "end_date": "2024-01-02",
}
# A second stream, defined here only: what the source does with a stream must not depend on which it is.
PEOPLE = StreamDef("people", {"type": "object"}, [["distinct_id"]], [], ENGAGE_ENDPOINT)


def catalog(*entries: tuple[str, str]):
    return ConfiguredAirbyteCatalogSerializer.load({"streams": [
        {"stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
         "sync_mode": mode, "destination_sync_mode": "append"}
        for name, mode in entries
    ]})


def states(*pairs: tuple[str, dict]):
    return [AirbyteStateMessageSerializer.load(
        {"type": "STREAM", "stream": {"stream_descriptor": {"name": name}, "stream_state": blob}}
    ) for name, blob in pairs]


@pytest.fixture
def people(monkeypatch):
    """The source with `people` as its only stream, read by a fake reader that records what it was given."""
    calls: list[tuple[SyncMode, object]] = []

    def read_people(config, logger, mode, raw_state, stop):
        calls.append((mode, raw_state))
        return iter([Batch([{"distinct_id": "a"}, {"distinct_id": "b"}]), state_message({"page": 1}, "people")])

    monkeypatch.setattr(source_module, "STREAMS", (PEOPLE,))
    monkeypatch.setattr(source_module, "READERS", {"people": read_people})
    return calls


def test_given_the_source_when_discovered_then_one_stream_per_definition():
    """Discover lists the definitions: name, schema, primary key, cursor field."""
    discovered = SourceMixpanelExport().discover(LOGGER, CONFIG)
    shown = [(s.name, s.json_schema, s.source_defined_primary_key, s.default_cursor_field) for s in discovered.streams]
    assert shown == [(d.name, d.schema, d.primary_key, d.cursor_field) for d in STREAMS]


def test_given_another_stream_when_read_then_its_reader_gets_its_state_and_its_records_and_statuses_name_it(people):
    """Dispatch by definition: the reader gets its mode and its own state; every message names its stream."""
    state = states(("export", {"version": 3}), ("people", {"page": 0}))
    messages = list(SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("people", "incremental")), state))
    assert people == [(SyncMode.incremental, {"page": 0})]
    records = [m.record for m in messages if m.type == Type.RECORD]
    assert [(r.stream, r.data) for r in records] == [("people", {"distinct_id": "a"}), ("people", {"distinct_id": "b"})]
    statuses = [m.trace.stream_status for m in messages if m.type == Type.TRACE]
    assert [(s.stream_descriptor.name, s.status.value) for s in statuses] == [
        ("people", "STARTED"), ("people", "RUNNING"), ("people", "COMPLETE")
    ]
    (saved,) = [m.state.stream for m in messages if m.type == Type.STATE]
    assert saved.stream_descriptor.name == "people"


def test_given_another_stream_in_full_refresh_when_read_then_its_reader_gets_the_state_and_the_mode(people):
    """The reader decides what a state means in full refresh (profiles resumes a pass under way, as the
    platform hands a failed attempt's state to the next; export reads from scratch)."""
    list(SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("people", "full_refresh")), states(("people", {"p": 1}))))
    assert people == [(SyncMode.full_refresh, {"p": 1})]


def test_given_another_stream_defined_when_export_is_asked_for_then_refused_naming_what_is_offered(people):
    """The offer is the definitions: a name not among them is refused before anything is read."""
    with pytest.raises(AirbyteTracedException) as info:
        list(SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("export", "full_refresh"))))
    assert "'export'" in info.value.message and "offers only 'people'" in info.value.message
    assert people == []


def test_given_a_state_its_reader_refuses_when_read_then_the_config_error_names_that_stream(monkeypatch, people):
    """state.py names no stream: the source names the one whose state it was."""

    def refusing(config, logger, mode, raw_state, stop):
        raise StateRefused("cannot be used: 'page' must be a number")

    monkeypatch.setattr(source_module, "READERS", {"people": refusing})
    with pytest.raises(AirbyteTracedException) as info:
        list(SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("people", "incremental")), states(("people", {}))))
    assert info.value.failure_type == FailureType.config_error
    assert info.value.message.startswith("The saved state of stream 'people' cannot be used: 'page' must be a number")


def test_given_a_bad_export_state_when_read_then_the_config_error_names_export_before_any_request():
    """The export stream's state errors name it, as they always did."""
    with pytest.raises(AirbyteTracedException) as info:
        list(SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("export", "incremental")),
                                         states(("export", {"version": 99}))))
    assert info.value.failure_type == FailureType.config_error
    assert info.value.message.startswith("The saved state of stream 'export' cannot be used: version 99")


def test_given_a_state_refused_while_reading_when_read_then_incomplete_and_the_error_names_it(monkeypatch, people):
    """A refusal that comes once the stream has started (as state.bind's does) is named too, after INCOMPLETE."""

    def refusing_later(config, logger, mode, raw_state, stop):
        yield Batch([{"distinct_id": "a"}])
        raise StateRefused("was written for region 'EU', and the config now says 'US'")

    monkeypatch.setattr(source_module, "READERS", {"people": refusing_later})
    messages = []
    with pytest.raises(AirbyteTracedException) as info:
        for message in SourceMixpanelExport().read(LOGGER, CONFIG, catalog(("people", "incremental"))):
            messages.append(message)
    assert info.value.message.startswith("The saved state of stream 'people' was written for region 'EU'")
    statuses = [m.trace.stream_status.status.value for m in messages if m.type == Type.TRACE]
    assert statuses == ["STARTED", "RUNNING", "INCOMPLETE"]


def test_given_another_stream_defined_when_discovered_then_it_is_listed_from_its_definition(people):
    """Discover shows any definition: a stream without a cursor field is offered in full refresh only."""
    (shown,) = SourceMixpanelExport().discover(LOGGER, CONFIG).streams
    assert (shown.name, shown.json_schema, shown.source_defined_primary_key) == ("people", {"type": "object"},
                                                                              [["distinct_id"]])
    assert [mode.value for mode in shown.supported_sync_modes] == ["full_refresh"]
