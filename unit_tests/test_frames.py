"""Frames: whole messages over a pipe, whatever their size, and EOF told apart from a cut-off message."""

from __future__ import annotations

import os
import threading

import pytest

from source_mixpanel_export.frames import Frames


def pipe() -> tuple[Frames, Frames]:
    read_end, write_end = os.pipe()
    return Frames(read_end), Frames(write_end)


@pytest.mark.parametrize("sizes", [[0], [1, 0, 5], [70_000, 3, 1 << 21], [65_536] * 5])
def test_given_messages_when_sent_through_a_pipe_then_received_whole_and_in_order(sizes):
    """Messages bigger than the pipe's buffer arrive whole (the writer blocks until the reader drains it)."""
    reader, writer = pipe()
    messages = [bytes([n % 251]) * n for n in sizes]
    sender = threading.Thread(target=lambda: [writer.send_bytes(m) for m in messages])
    sender.start()
    received = [reader.recv_bytes() for _ in messages]
    sender.join()
    assert received == messages
    writer.close()
    with pytest.raises(EOFError, match="closed the pipe"):
        reader.recv_bytes()
    reader.close()
    reader.close()  # closing twice does nothing


def test_given_writer_gone_mid_message_when_received_then_eof_saying_so():
    reader, writer = pipe()
    os.write(writer.fileno(), (10).to_bytes(8, "big") + b"12345")
    writer.close()
    with pytest.raises(EOFError, match="middle of a message"):
        reader.recv_bytes()
    reader.close()


def test_given_reader_gone_when_sent_then_os_error():
    """A worker whose main process is gone gets EPIPE (Python ignores SIGPIPE) and can stop."""
    reader, writer = pipe()
    reader.close()
    with pytest.raises(BrokenPipeError):
        writer.send_bytes(b"x" * 10)
    writer.close()
