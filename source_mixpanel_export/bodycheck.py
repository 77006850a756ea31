"""Is a body complete? Multi-member gzip decoding, and a check of lines and trailer as the body goes by.

`receive` does both for a body arriving in chunks and hands the decoded body to a sink (the download
threads' bodies: client.py); the encoding workers fetching a head start do the same inline (remote.py).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Protocol

from .lines import is_trailer

TAIL_BYTES = 4096  # how much of a body's end is kept to look for a trailer
_BLANK = frozenset(b" \t\r")
_LINE_OK = frozenset(b"}\n")  # what may end a line (or precede a blank one)


class Incomplete(Exception):
    """The body ended before it was whole: its gzip stream stopped short, or Mixpanel's trailer came."""


class Sink(Protocol):
    """Where a decoded body goes: every piece in order, then finish() once it is known whole."""

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


def receive(raw_chunks: Iterable[bytes], gzipped: bool, sink: Sink) -> BodyCheck:
    """Decode a body into `sink`, checking it on the way; raise Incomplete unless it is whole.

    Errors of the transport (a connection cut, broken gzip: zlib.error) pass through to the caller.
    """
    decoder = Gunzip() if gzipped else None
    check = BodyCheck()
    for raw in raw_chunks:
        data = decoder.decompress(raw) if decoder else raw
        check.take(data)
        sink.write(data)
    if decoder is not None and not decoder.complete():
        raise Incomplete("the gzip stream ended early (response cut off)")
    if check.finish().trailer is not None:
        raise Incomplete(f"Mixpanel ended the export early ({check.trailer.decode(errors='replace')!r})")
    sink.finish()
    return check


class BodyCheck:
    """Watches a decompressed body go by, so it can be judged complete without a second pass.

    Counts lines that cannot be one JSON object (a non-blank line whose last non-blank byte is not
    `}`) and keeps the end of the body, where a `terminated early` trailer or a half line shows. The
    common case costs two `bytes.count` calls per chunk; only a chunk with a suspicious line end is
    looked at line by line.
    """

    def __init__(self) -> None:
        self.size = 0
        self.lines = 0  # lines ended by b"\n" so far
        self.malformed = 0
        self.first_malformed: int | None = None  # 1-based line number
        self.trailer: bytes | None = None
        self._tail = b""  # the last TAIL_BYTES bytes seen

    def take(self, data: bytes) -> None:
        """Account for the next piece of the body."""
        if not data:
            return
        newlines = data.count(b"\n")
        if newlines:
            closed = data.count(b"}\n") + (data[:1] == b"\n" and self._tail[-1:] == b"}")
            if closed != newlines:
                self._scan(data)
        self.lines += newlines
        self.size += len(data)
        self._tail = data[-TAIL_BYTES:] if len(data) >= TAIL_BYTES else (self._tail + data)[-TAIL_BYTES:]

    def finish(self) -> BodyCheck:
        """Judge the end of the body: a trailer, or a last line without its b"\n"."""
        end = self._tail.rstrip(b" \t\r\n")
        final = end[end.rfind(b"\n") + 1 :]
        unterminated = self._tail[self._tail.rfind(b"\n") + 1 :].rstrip(b" \t\r")
        if final and is_trailer(final):
            self.trailer = final
        elif unterminated and not unterminated.endswith(b"}"):
            self._bad(self.lines + 1)
        return self

    def _scan(self, data: bytes) -> None:
        context = self._tail + data
        position = context.find(b"\n", len(self._tail))
        line = self.lines
        while position >= 0:
            line += 1
            back = position - 1
            while back >= 0 and context[back] in _BLANK:
                back -= 1
            if back >= 0 and context[back] not in _LINE_OK:
                self._bad(line)
            position = context.find(b"\n", position + 1)

    def _bad(self, line: int) -> None:
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = line


class Gunzip:
    """Decompresses a gzip body of one or more members (RFC 1952 allows several; zlib stops after one)."""

    def __init__(self) -> None:
        self._decoder = zlib.decompressobj(wbits=31)
        self._seen = 0

    def decompress(self, data: bytes) -> bytes:
        """The bytes decoded from the next piece of the compressed body."""
        self._seen += len(data)
        out = []
        while data:
            if self._decoder.eof:
                if not data.strip(b"\0"):  # zero padding after the last member
                    break
                self._decoder = zlib.decompressobj(wbits=31)
            out.append(self._decoder.decompress(data))
            data = self._decoder.unused_data if self._decoder.eof else b""
        return b"".join(out)

    def complete(self) -> bool:
        """Whether the body ended at the end of a member (or was empty, as an empty export may be)."""
        return self._seen == 0 or self._decoder.eof
