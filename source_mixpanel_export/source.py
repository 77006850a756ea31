"""The Airbyte source: spec, check, discover and read for one stream, `export`."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteRecordMessage,
    AirbyteStateMessage,
    AirbyteStateMessageSerializer,
    AirbyteStreamStatus,
    ConfiguredAirbyteCatalog,
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

from .catalog import configured_export
from .check import run_check
from .config import Config, parse_config
from .records import STREAM_NAME, Batch
from .spec import CONNECTION_SPECIFICATION, connector_specification
from .state import parse_state, state_file_entries, stream_state_of
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
        """A sample of recent events (at most 2 export requests) with the configured credentials and settings."""
        try:
            parsed = self._parse(config)
        except AirbyteTracedException as exc:
            return False, exc.message
        return run_check(parsed, logger)

    def streams(self, config: Mapping[str, Any]) -> list[Stream]:
        """The one stream, `export`."""
        return [ExportStream(self._parse(config))]

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
                yield from map(record_message, item.records)
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
        `stop` (run.py does on SIGTERM) ends the read soon, with client.Cancelled, after whole batches."""
        configured = configured_export(catalog)
        if configured is None:  # nothing selected: nothing to read
            return
        mode = configured.sync_mode
        raw_state = stream_state_of(state) if mode == SyncMode.incremental else None
        export_state = parse_state(raw_state, timezone=config.request_timezone)
        stream = dataclasses.replace(configured.stream, namespace=None)  # records and states carry none either
        yield stream_status_message(stream, AirbyteStreamStatus.STARTED)
        running = False
        reader = ExportReader(config, logger, stop=stop)
        try:
            for item in reader.read(mode, export_state):
                if not running and type(item) is not AirbyteMessage:
                    running = True
                    yield stream_status_message(stream, AirbyteStreamStatus.RUNNING)
                yield item
        except BaseException:
            yield stream_status_message(stream, AirbyteStreamStatus.INCOMPLETE)
            raise
        yield stream_status_message(stream, AirbyteStreamStatus.COMPLETE)

    def parse(self, config: Mapping[str, Any]) -> Config:
        """The config, checked once per command; every derived form of its secrets is masked from then on."""
        return self._parse(config)

    @staticmethod
    def _parse(config: Mapping[str, Any]) -> Config:
        return parsed_and_masked(config)


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


def record_message(data: dict[str, Any]) -> AirbyteMessage:
    """A RECORD message for the export stream."""
    return AirbyteMessage(
        type=Type.RECORD,
        record=AirbyteRecordMessage(stream=STREAM_NAME, data=data, emitted_at=time.time_ns() // 1_000_000),
    )
