"""The writer's output: whole lines even when the stream takes only part of a write."""

from __future__ import annotations

import io
import json

import pytest

from source_mixpanel_export.records import Batch, record_lines, record_prefix
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
    writer.records(Batch(records, stream="export"))
    writer.flush()
    lines = bytes(out.data).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 51
    assert all(line.startswith(b'{"type":"RECORD"') and line.endswith(b"}}") for line in lines[:-1])


def lines_of(out: io.BytesIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_given_the_export_stream_when_its_record_prefix_is_built_then_the_bytes_are_those_of_before():
    """`export` keeps the very RECORD bytes it always had."""
    assert record_prefix("export") == b'{"type":"RECORD","record":{"stream":"export","data":'


def test_given_another_stream_when_record_lines_are_made_then_each_line_names_it():
    """The prefix is built from the name passed in: the same envelope, another stream."""
    lines = record_lines(record_prefix("profiles"), [b'{"a":1}', b'{"b":2}'], 7)
    assert lines == (
        b'{"type":"RECORD","record":{"stream":"profiles","data":{"a":1},"emitted_at":7}}\n'
        b'{"type":"RECORD","record":{"stream":"profiles","data":{"b":2},"emitted_at":7}}\n'
    )


def test_given_a_name_json_must_escape_when_its_record_prefix_is_built_then_lines_are_valid_json():
    """A quote, a backslash or a non-ASCII letter in a name is written as JSON, never pasted raw."""
    name = 'we"ird\\n\u00e4me'
    (line,) = record_lines(record_prefix(name), [b"{}"], 1).splitlines()
    assert json.loads(line)["record"]["stream"] == name


def test_given_batches_of_two_streams_when_written_then_each_line_names_its_batchs_stream_in_order():
    """Records of several streams keep their order, each line with its own batch's stream."""
    out = io.BytesIO()
    writer = MessageWriter(out)
    writer.records(Batch([{"n": 1}, {"n": 2}], stream="export"))
    writer.records(Batch([{"n": 3}], stream="profiles"))
    writer.records(Batch([{"n": 4}], stream="export"))
    writer.flush()
    assert [(m["record"]["stream"], m["record"]["data"]["n"]) for m in lines_of(out)] == [
        ("export", 1), ("export", 2), ("profiles", 3), ("export", 4)
    ]


def test_given_a_batch_that_names_no_stream_when_written_then_refused():
    """A record must say its stream: a batch without one is a bug, not a line with `"stream":null`."""
    out = io.BytesIO()
    writer = MessageWriter(out)
    with pytest.raises(ValueError, match="stream"):
        writer.records(Batch([{"n": 1}]))
    writer.flush()
    assert out.getvalue() == b""
