"""Protocol output for the console script's `read`: RECORD lines written in batches, every other
message through the CDK's serializer.

Why not the CDK's per-message path for records: an AirbyteMessage per record and its serialization
cost ~3.2 µs, an orjson dump of the data ~0.5 µs (measured here with 570-byte events), which at a
million events is the difference between ~0.45x and ~0.6x of the floor (see the README). The bytes
come from records.record_lines, the connector's one producer of them; records leave out None fields
as the CDK does, so a caller of SourceMixpanelExport.read gets the same records.
"""

from __future__ import annotations

from typing import IO

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import AirbyteMessage, AirbyteStateStats, Type

from .records import Batch, now_ms, record_bytes, record_lines, record_prefix

WRITE_BYTES = 1 << 18  # record data gathered before a write: ~400 records of ~600 B (1 MB cost 5 MB of RSS)


class MessageWriter:
    """Writes protocol messages to stdout: records in large batches, everything else via the CDK.

    A batch's record bytes come from records.record_bytes; the RECORD envelope is added per write,
    with one `emitted_at` (the write's time) for every record in it, and the stream the batch names
    (`Batch.stream`): the records pending are always of one stream.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._bodies: list[bytes] = []
        self._pending = 0  # bytes of record data in _bodies
        self._records_since_state = 0
        self._stream: str | None = None  # the stream of the records in _bodies
        self._prefix = b""  # its records.record_prefix

    def records(self, batch: Batch) -> None:
        """A batch of RECORD lines, written once about WRITE_BYTES of them are pending.

        Batches are a hundred lines or so (see lines.BATCH_LINES); a write per batch would cost a
        system call, the print buffer's flush and a hand-over of the GIL to a download thread (which
        may hold it for milliseconds before giving it back) every hundred records.
        """
        stream = batch.stream
        if stream != self._stream or stream is None:
            self._switch(batch.stream_name())
        bodies = record_bytes(batch)
        self._bodies += bodies
        self._pending += sum(map(len, bodies))
        if self._pending >= WRITE_BYTES:
            self.flush()

    def message(self, message: AirbyteMessage) -> None:
        """Any other message, serialized by the CDK; STATE gets the record count since the last one."""
        with PRINT_BUFFER.lock:
            self.flush()
            if message.type == Type.STATE and message.state is not None:
                message.state.sourceStats = AirbyteStateStats(recordCount=float(self._records_since_state))
                self._records_since_state = 0
            self._write(AirbyteEntrypoint.airbyte_message_to_string(message).encode() + b"\n")
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
                self._write(record_lines(self._prefix, bodies, now_ms()))
                self._records_since_state += len(bodies)
                bodies.clear()
                self._pending = 0
            self._out.flush()

    def _switch(self, stream: str) -> None:
        """Records of another stream follow: the pending ones are written first, under their own."""
        if self._bodies:
            self.flush()
        self._stream, self._prefix = stream, record_prefix(stream)

    def _write(self, data: bytes) -> None:
        """All of `data`. A signal handled while a write to a full pipe blocks (run.py handles SIGTERM)
        makes BufferedWriter.write return short, and the rest would be lost: a torn line, and a STATE
        after it that covers records never written."""
        view = memoryview(data)
        while view:
            written = self._out.write(view)
            view = view[written if written is not None else len(view) :]
