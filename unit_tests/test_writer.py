"""The writer's output: whole lines even when the stream takes only part of a write."""

from __future__ import annotations

import io

from source_mixpanel_export.records import Batch
from source_mixpanel_export.writer import MessageWriter


class ShortWrites(io.RawIOBase):
    """A stream that takes at most 1,000 bytes a write, as BufferedWriter.write does when a signal lands
    while it blocks on a full pipe."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        taken = bytes(data[:1000])
        self.data += taken
        return len(taken)


def test_given_a_stream_that_takes_part_of_each_write_when_records_are_flushed_then_every_byte_is_written():
    """A short write is written on, never dropped: a torn RECORD line followed by a STATE would lose it."""
    out = ShortWrites()
    writer = MessageWriter(out)  # type: ignore[arg-type]
    records = [{"event_id": str(i), "event": "E", "properties": {"i": i, "pad": "x" * 300}} for i in range(50)]
    writer.records(Batch(records))
    writer.flush()
    lines = bytes(out.data).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 51
    assert all(line.startswith(b'{"type":"RECORD"') and line.endswith(b"}}") for line in lines[:-1])
