"""The Airbyte source: spec, check, discover and read over the streams catalog.STREAMS defines.

Discover lists the definitions; read takes the catalog's entries (catalog.configured_streams) and
hands each to its stream's reader in READERS, with that stream's state. What is the same for every
stream happens here: picking its state, its STREAM_STATUS traces, naming its records (Batch.stream),
naming it in a state refusal (state.StateRefused) and its own stop event (clock.Stop). The streams are
`export` (stream.py) and `profiles` (profile_stream.py).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateMessage,
    AirbyteStateMessageSerializer,
    AirbyteStreamStatus,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteStream,
    ConnectorSpecification,
    Status,
    SyncMode,
    Type,
)
from airbyte_cdk.sources import AbstractSource
from airbyte_cdk.sources.streams import Stream
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets, get_secrets, update_secrets
from airbyte_cdk.utils.stream_status_utils import as_airbyte_message as stream_status_message
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import clock
from .catalog import EXPORT, PROFILES, STREAMS, StreamDef, configured_streams
from .check import run_check
from .clock import Stop
from .config import Config, parse_config
from .profile_state import parse_profile_state
from .profile_stream import ProfileReader
from .records import Batch
from .spec import CONNECTION_SPECIFICATION, connector_specification
from .state import StateRefused, parse_state, state_file_entries, stream_state_of
from .stream import ExportReader, ExportStream, Item


class SourceMixpanelExport(AbstractSource):
    """Mixpanel's Raw Event Export API as an Airbyte source."""

    # parse_config checks every constraint of the spec and names the field; the CDK's JSON-schema check
    # would run first and answer with messages like "0 is less than the minimum of 1".
    check_config_against_spec = False

    def configure(self, config: Mapping[str, Any], temp_dir: str) -> Mapping[str, Any]:
        """The config as given, written nowhere: the CDK's default writes it, secret and all, to
        `temp_dir/config.json` (mode 0644), which a killed process leaves on the disk."""
        return config

    @classmethod
    def read_state(cls, state_path: str) -> list[AirbyteStateMessage]:
        """The `--state` file: the CDK's list of state entries, or the last STATE message of a sync's output
        as printed, a list of STATE messages, or its `state` object (state.state_file_entries)."""
        messages = []
        for entry in state_file_entries(cls._read_json_file(state_path) if state_path else None):
            message = AirbyteStateMessageSerializer.load(entry)
            if not message.stream and not message.data and not message.global_:
                raise ValueError("AirbyteStateMessage should contain either a stream, global, or state field")
            messages.append(message)
        return messages

    def spec(self, logger: logging.Logger) -> ConnectorSpecification:
        """The connection specification (see spec.py)."""
        return connector_specification()

    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        """SUCCEEDED or FAILED with a message a person can act on; never raises for bad settings.

        The message can quote an answer from Mixpanel or a proxy, which may echo the request's
        Authorization header: every form of the secret is masked in it (the CDK masks only logs and
        traces, and only the raw secret).
        """
        ok, message = self.check_connection(logger, config)
        if message:
            message = filter_secrets(message)
        return AirbyteConnectionStatus(status=Status.SUCCEEDED if ok else Status.FAILED, message=message)

    def check_connection(self, logger: logging.Logger, config: Mapping[str, Any]) -> tuple[bool, str | None]:
        """A sample of recent events (at most 2 export requests) with the configured credentials and settings,
        then one Engage page of the Query API (check.run_check)."""
        try:
            parsed = self._parse(config)
        except AirbyteTracedException as exc:
            return False, exc.message
        return run_check(parsed, logger)

    def streams(self, config: Mapping[str, Any]) -> list[Stream]:
        """A stream per definition in catalog.STREAMS, for discover (reading goes through read_items)."""
        parsed = self._parse(config)
        return [ExportStream(parsed, definition) for definition in STREAMS]

    def read(
        self,
        logger: logging.Logger,
        config: Mapping[str, Any],
        catalog: ConfiguredAirbyteCatalog,
        state: list[AirbyteStateMessage] | None = None,
    ) -> Iterator[AirbyteMessage]:
        """The Airbyte read: every item of `read_items`, records wrapped as RECORD messages."""
        for item in self.read_items(logger, self._parse(config), catalog, state):
            if type(item) is Batch:
                yield from map(partial(record_message, item.stream_name()), item.records)
            else:
                yield item  # type: ignore[misc]

    def read_items(
        self,
        logger: logging.Logger,
        config: Config,
        catalog: ConfiguredAirbyteCatalog,
        state: list[AirbyteStateMessage] | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Item]:
        """The read as batches of record dicts, and messages: `read` above wraps the records for the CDK, run.py
        writes them itself (writer.py). Both take the same items, so both give the same records. Setting
        `stop` (run.py does on SIGTERM) ends the read soon, with client.Cancelled, after whole batches.
        The catalog's streams are read one after the other, in its order; an empty catalog reads nothing."""
        for definition, configured in configured_streams(catalog, STREAMS):
            yield from _stream_items(logger, config, definition, configured, state, stop)

    def parse(self, config: Mapping[str, Any]) -> Config:
        """The config, checked once per command; every derived form of its secrets is masked from then on."""
        return self._parse(config)

    @staticmethod
    def _parse(config: Mapping[str, Any]) -> Config:
        return parsed_and_masked(config)


# Reads one stream: (config, logger, sync mode, its raw state or None, stop) -> its items. Called before the
# stream's STARTED trace, so a state it refuses there fails the read with nothing emitted for the stream.
StreamReader = Callable[[Config, logging.Logger, SyncMode, Any, threading.Event | None], Iterator[Item]]


def read_export(
    config: Config, logger: logging.Logger, mode: SyncMode, raw_state: Any, stop: threading.Event | None
) -> Iterator[Item]:
    """The export stream's items: its state parsed first (a bad one fails before the stream starts); a
    full refresh reads every day, whatever state it is given."""
    export_state = parse_state(raw_state if mode == SyncMode.incremental else None, timezone=config.request_timezone)
    return ExportReader(config, logger, stop=stop).read(mode, export_state)


def read_profiles(
    config: Config, logger: logging.Logger, mode: SyncMode, raw_state: Any, stop: threading.Event | None
) -> Iterator[Item]:
    """The profiles stream's items: its state parsed first. A full refresh given a state resumes the pass
    that state has under way (the platform hands a failed attempt's state to the next attempt)."""
    profile_state = parse_profile_state(raw_state, int(clock.utc_now().timestamp()))
    return ProfileReader(config, logger, stop=stop).read(mode, profile_state)


READERS: dict[str, StreamReader] = {EXPORT.name: read_export, PROFILES.name: read_profiles}  # by stream name


def _stream_items(
    logger: logging.Logger,
    config: Config,
    definition: StreamDef,
    configured: ConfiguredAirbyteStream,
    state: list[AirbyteStateMessage] | None,
    stop: threading.Event | None,
) -> Iterator[Item]:
    """One configured stream: its reader's items between its STREAM_STATUS traces, its batches named."""
    name, mode = definition.name, configured.sync_mode
    raw_state = stream_state_of(state, name)
    own_stop = stop.linked() if isinstance(stop, Stop) else None  # each reader sets its own when it ends
    try:
        items = READERS[name](config, logger, mode, raw_state, own_stop)
    except StateRefused as refused:
        raise refused.named(name) from None
    stream = dataclasses.replace(configured.stream, namespace=None)  # records and states carry none either
    yield stream_status_message(stream, AirbyteStreamStatus.STARTED)
    running = False
    try:
        for item in items:
            if type(item) is Batch:
                item.stream = name
                if not running:
                    running = True
                    yield stream_status_message(stream, AirbyteStreamStatus.RUNNING)
            yield item
    except StateRefused as refused:  # e.g. state.bind, once the reader has started
        yield stream_status_message(stream, AirbyteStreamStatus.INCOMPLETE)
        raise refused.named(name) from None
    except BaseException:
        yield stream_status_message(stream, AirbyteStreamStatus.INCOMPLETE)
        raise
    yield stream_status_message(stream, AirbyteStreamStatus.COMPLETE)


def parsed_and_masked(config: Mapping[str, Any]) -> Config:
    """parse_config, then every form of the secret registered with the CDK's secret filter.

    The CDK registers the raw airbyte_secret values; the Basic token, URL- and JSON-encoded forms are
    added here. The list is rebuilt longest first, so no form is masked only in part because a shorter
    one inside it was replaced first.
    """
    parsed = parse_config(config)
    raw = {str(value) for value in get_secrets(CONNECTION_SPECIFICATION, config) if value not in (None, "")}
    update_secrets(sorted(raw | set(parsed.secret_forms()), key=lambda form: (-len(form), form)))
    return parsed


def record_message(stream: str, data: dict[str, Any]) -> AirbyteMessage:
    """A RECORD message of `stream`, for the CDK's path (run.py writes the same bytes via writer.py)."""
    return AirbyteMessage(
        type=Type.RECORD,
        record=AirbyteRecordMessage(stream=stream, data=data, emitted_at=time.time_ns() // 1_000_000),
    )
