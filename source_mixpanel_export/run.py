"""Console entry point: the CDK's `launch` for spec/check/discover, a faster writer for `read`.

Measured on the 2-core dev machine with ~530-byte events: records through the CDK's per-message path
(AirbyteMessage objects, serpyco-rs, print) came out at ~70k/s, while orjson-parsing the same lines and
writing RECORD lines directly reached ~300k/s. So `read` keeps every CDK step around the records
(argument parsing, config and catalog reading, secret masking, config validation, the uncaught
exception handler, STATE counts) but writes RECORD messages itself, as the same bytes the CDK's
serializer produces (unit_tests/test_run.py checks that).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson
from airbyte_cdk.entrypoint import AirbyteEntrypoint, launch
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import AirbyteMessage, AirbyteStateStats, Type

from .errors import config_error
from .records import STREAM_NAME
from .source import SourceMixpanelExport

RECORD_PREFIX = b'{"type":"RECORD","record":{"stream":"' + STREAM_NAME.encode() + b'","data":'
FLUSH_BYTES = 1 << 18


class MessageWriter:
    """Writes protocol messages to stdout: records in large batches, everything else via the CDK."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._parts: list[bytes] = []
        self._pending = 0
        self._records_since_state = 0

    def record(self, data: dict[str, Any]) -> None:
        """One RECORD line, byte for byte what AirbyteEntrypoint.airbyte_message_to_string writes."""
        try:
            body = orjson.dumps(data)
        except TypeError:  # integers beyond 64 bits: orjson refuses them, the CDK falls back too
            body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        line = b"%s%s,\"emitted_at\":%d}}\n" % (RECORD_PREFIX, body, time.time_ns() // 1_000_000)
        self._parts.append(line)
        self._pending += len(line)
        self._records_since_state += 1
        if self._pending >= FLUSH_BYTES:
            self.flush()

    def message(self, message: AirbyteMessage) -> None:
        """Any other message, serialized by the CDK; STATE gets the record count since the last one."""
        if message.type == Type.STATE and message.state is not None:
            message.state.sourceStats = AirbyteStateStats(recordCount=float(self._records_since_state))
            self._records_since_state = 0
        self.flush()
        self._out.write(AirbyteEntrypoint.airbyte_message_to_string(message).encode() + b"\n")
        self._out.flush()

    def flush(self) -> None:
        """Logs first (they wait in the CDK's print buffer), then the pending records."""
        PRINT_BUFFER.flush()
        if self._parts:
            self._out.write(b"".join(self._parts))
            self._parts.clear()
            self._pending = 0
        self._out.flush()


def read(source: SourceMixpanelExport, args: list[str], out: IO[bytes]) -> None:
    """The `read` command, as AirbyteEntrypoint.run does it, with MessageWriter for the output."""
    entrypoint = AirbyteEntrypoint(source)
    parsed = entrypoint.parse_args(args)
    logger = entrypoint.logger
    if parsed.debug:
        logger.setLevel("DEBUG")
    spec = source.spec(logger)
    writer = MessageWriter(out)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as temp_dir:
        config = source.configure(_read_json(source.read_config, parsed.config, "config"), temp_dir)
        entrypoint.set_up_secret_filter(config, spec.connectionSpecification)
        if source.check_config_against_spec:
            entrypoint.validate_connection(spec, config)
        catalog = _read_json(source.read_catalog, parsed.catalog, "catalog")
        state = _read_json(source.read_state, parsed.state, "state") if parsed.state else []
        try:
            for item in source.read_items(logger, config, catalog, state):
                if type(item) is dict:
                    writer.record(item)  # type: ignore[arg-type]
                else:
                    writer.message(item)  # type: ignore[arg-type]
        finally:
            writer.flush()


def _read_json(reader: Any, path: str, what: str) -> Any:
    """Read an input file with the CDK's reader; an unreadable or invalid file is a config error."""
    try:
        return reader(path)
    except (OSError, ValueError, TypeError) as exc:
        raise config_error(f"Could not read the {what} file {path!r}: {_short(exc)}") from None
    except Exception as exc:  # e.g. a catalog that does not fit the protocol's model
        raise config_error(f"The {what} file {path!r} is not a valid Airbyte {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def run(argv: Iterable[str] | None = None) -> None:
    """`source-mixpanel-export <spec|check|discover|read> ...`"""
    args = list(sys.argv[1:] if argv is None else argv)
    source = SourceMixpanelExport()
    if args[:1] == ["read"]:
        with PRINT_BUFFER:
            read(source, args, sys.__stdout__.buffer)  # type: ignore[union-attr]
    else:
        launch(source, args)


if __name__ == "__main__":
    run()
