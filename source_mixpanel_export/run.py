"""Console entry point: the CDK's `launch` for spec/check/discover, a faster writer for `read`.

Measured on the 2-core dev machine with ~530-byte events: records through the CDK's per-message path
(AirbyteMessage objects, serpyco-rs, print) came out at ~70k/s, while orjson-parsing the same lines and
writing RECORD lines directly reached ~300k/s. So `read` keeps every CDK step around the records
(argument parsing, config and catalog reading, secret masking, config validation, the uncaught
exception handler, STATE counts) but writes RECORD messages itself, as the same bytes the CDK's
serializer produces, top-level nulls and integers beyond 64 bits aside (see MessageWriter;
unit_tests/test_fastpath.py checks all three).
"""

from __future__ import annotations

import gc
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

from .config import parse_config
from .errors import config_error
from .records import STREAM_NAME
from .source import SourceMixpanelExport

RECORD_PREFIX = b'{"type":"RECORD","record":{"stream":"' + STREAM_NAME.encode() + b'","data":'
FLUSH_BYTES = 1 << 18
_INT64_MIN, _UINT64_END = -(2**63), 2**64  # the integers orjson writes


class MessageWriter:
    """Writes protocol messages to stdout: records in large batches, everything else via the CDK.

    A record costs one orjson.dumps and a list append; the RECORD envelope is added per batch, with
    one `emitted_at` (the batch's write time) for every record in it. The bytes are the CDK's, but:
    the CDK's serializer (serpyco-rs, omit_none) leaves out a record's top-level keys whose value is
    None, this writes them as null, as the connector always has; and a record with integers beyond
    64 bits, which the CDK falls back to json.dumps for (spaces, ASCII escapes), is the same JSON
    value in compact form.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._bodies: list[bytes] = []
        self._pending = 0
        self._records_since_state = 0

    def record(self, data: dict[str, Any]) -> None:
        """One RECORD line, as AirbyteEntrypoint.airbyte_message_to_string writes it (see the class docstring)."""
        try:
            body = orjson.dumps(data)
        except TypeError:  # integers beyond 64 bits (orjson refuses them): the same JSON value, other bytes
            body = lossless_json(data)
        self._bodies.append(body)
        self._pending += len(body)
        if self._pending >= FLUSH_BYTES:
            self.flush()

    def message(self, message: AirbyteMessage) -> None:
        """Any other message, serialized by the CDK; STATE gets the record count since the last one."""
        with PRINT_BUFFER.lock:
            self.flush()
            if message.type == Type.STATE and message.state is not None:
                message.state.sourceStats = AirbyteStateStats(recordCount=float(self._records_since_state))
                self._records_since_state = 0
            self._out.write(AirbyteEntrypoint.airbyte_message_to_string(message).encode() + b"\n")
            self._out.flush()

    def flush(self) -> None:
        """Logs first (they wait in the CDK's print buffer), then the pending records.

        Download threads log through the print buffer: holding its lock keeps a LOG line from landing
        in the middle of a large RECORD write (stdout writes of that size are not atomic).
        """
        with PRINT_BUFFER.lock:
            PRINT_BUFFER.flush()
            bodies = self._bodies
            if bodies:
                end = b',"emitted_at":%d}}\n' % (time.time_ns() // 1_000_000)
                self._out.write(RECORD_PREFIX + (end + RECORD_PREFIX).join(bodies) + end)
                self._records_since_state += len(bodies)
                bodies.clear()
                self._pending = 0
            self._out.flush()


def lossless_json(data: Any) -> bytes:
    """Compact JSON of a value holding integers orjson refuses: they are written as their exact digits."""
    try:
        return orjson.dumps(_exact_ints(data))
    except TypeError:  # e.g. a lone surrogate in a string (only the stdlib parser lets one through)
        return json.dumps(data, separators=(",", ":")).encode()


def _exact_ints(value: Any) -> Any:
    """`value` with every integer beyond 64 bits replaced by an orjson.Fragment of its digits.

    Only the containers on the way to such an integer are copied; the input is left as it is.
    """
    changed: Any = None
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is int:
            if _INT64_MIN <= item < _UINT64_END:
                continue
            new = orjson.Fragment(b"%d" % item)
        elif kind is dict or kind is list:
            new = _exact_ints(item)
            if new is item:
                continue
        else:
            continue
        if changed is None:
            changed = dict(value) if type(value) is dict else list(value)
        changed[key] = new
    return value if changed is None else changed


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
        parse_config(config)  # our own messages name the field; the CDK's schema check below does not
        if source.check_config_against_spec:
            entrypoint.validate_connection(spec, config)
        catalog = _read_json(source.read_catalog, parsed.catalog, "catalog")
        state = _read_json(source.read_state, parsed.state, "state") if parsed.state else []
        record, message = writer.record, writer.message
        try:
            for item in source.read_items(logger, config, catalog, state):
                if type(item) is dict:
                    record(item)  # type: ignore[arg-type]
                else:
                    message(item)  # type: ignore[arg-type]
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
    text = " ".join(line.strip(" -") for line in str(exc).splitlines() if line.strip())
    return text[:300] or type(exc).__name__


def run(argv: Iterable[str] | None = None) -> None:
    """`source-mixpanel-export <spec|check|discover|read> ...`"""
    args = list(sys.argv[1:] if argv is None else argv)
    # What the imports made (~100k containers, the CDK's modules and models) lives until exit; out of
    # the cyclic GC's reach it costs nothing at interpreter shutdown (measured 0.15-0.2 s otherwise).
    gc.freeze()
    source = SourceMixpanelExport()
    if args[:1] == ["read"]:
        with PRINT_BUFFER:
            read(source, args, sys.__stdout__.buffer)  # type: ignore[union-attr]
    else:
        launch(source, args)


if __name__ == "__main__":
    run()
