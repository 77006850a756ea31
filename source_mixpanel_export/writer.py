"""Protocol output for `read`: RECORD lines written directly, every other message through the CDK.

Measured on the 2-core dev machine with ~530-byte events: records through the CDK's per-message path
(AirbyteMessage objects, serpyco-rs, print) came out at ~70k/s, while orjson-parsing the same lines and
writing RECORD lines directly reached ~300k/s. So RECORD messages are written as the same bytes the
CDK's serializer produces, top-level nulls and integers beyond 64 bits aside (see MessageWriter;
unit_tests/test_fastpath.py checks all three).
"""

from __future__ import annotations

from typing import IO, Any

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import AirbyteMessage, AirbyteStateStats, Type

from .bodies import EncodedBody, EncodedFile
from .encode import now_ms, record_json, record_lines

FLUSH_BYTES = 1 << 18


class MessageWriter:
    """Writes protocol messages to stdout: records in large batches, everything else via the CDK.

    A record costs one orjson.dumps and a list append; the RECORD envelope is added per batch, with
    one `emitted_at` (the batch's write time) for every record in it. The bytes are the CDK's, but:
    the CDK's serializer (serpyco-rs, omit_none) leaves out a record's top-level keys whose value is
    None, this writes them as null, as the connector always has; and a record with integers beyond
    64 bits, which the CDK falls back to json.dumps for (spaces, ASCII escapes), is the same JSON
    value in compact form. Windows the encoding workers made (EncodedBody) are copied as they are:
    the same bytes, their `emitted_at` being when a worker encoded them.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._bodies: list[bytes] = []
        self._pending = 0
        self._records_since_state = 0

    def record(self, data: dict[str, Any]) -> None:
        """One RECORD line, as AirbyteEntrypoint.airbyte_message_to_string writes it (see the class docstring)."""
        body = record_json(data)
        self._bodies.append(body)
        self._pending += len(body)
        if self._pending >= FLUSH_BYTES:
            self.flush()

    def encoded(self, body: EncodedBody | EncodedFile) -> None:
        """A window's RECORD lines, encoded by the workers; each chunk ends at a line end."""
        self.flush()
        out = self._out
        for chunk in body.chunks():
            with PRINT_BUFFER.lock:  # see flush: a LOG line must not land inside a RECORD line
                PRINT_BUFFER.flush()
                out.write(chunk)
        self._records_since_state += body.count

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
                self._out.write(record_lines(bodies, now_ms()))
                self._records_since_state += len(bodies)
                bodies.clear()
                self._pending = 0
            self._out.flush()
