"""A window's body while it downloads: kept as Mixpanel sent it, checked for completeness on the way.

The body is stored compressed (gzip, as Mixpanel sends it when asked) and decompressed once to check
it as it arrives, once more when it is emitted: on disk a window costs its compressed size, about a
tenth of its JSON. Nothing of a body is emitted before the whole of it has passed the check.

Both decompressions use ISA-L's inflate (the `isal` package) instead of the standard library's zlib:
it gives the same bytes 2–4 times faster (0.6–0.8 against 1.6–2.5 µs a record, measured here on the
benchmark's body), and a body is inflated twice, once of them on the thread that emits records.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from isal import isal_zlib

from .lines import MAX_LINE_BYTES, is_trailer
from .retry import TooLarge

TAIL_BYTES = 4096  # how much of a body's end is kept to look for a trailer
HEAD_BYTES = 1 << 16  # how much of a body's start is hashed, to compare answers (windows.SameAnswers)
READ_BYTES = 1 << 16  # compressed bytes read back at a time when emitting: ~0.5-1 MB of JSON
PIECE_BYTES = 1 << 20  # the most JSON one piece of compressed body decompresses to (a gzip bomb stays small)
_BLANK = frozenset(b" \t\r")
_LINE_OK = frozenset(b"}\n")  # what may end a line (or precede a blank one)
# A body that is not gzip, or broken gzip (zlib.error's counterpart). isal's stub declares `error` an
# Exception instance; it is the class, and typed as one it can be caught in an `except` clause.
GzipError: type[Exception] = isal_zlib.error  # type: ignore[assignment]


class Incomplete(Exception):
    """The body ended before it was whole: its gzip stream stopped short, or Mixpanel's trailer came."""


class Unverifiable(Incomplete):
    """Nothing proves the body's end: not gzip, no Content-Length, not chunked. Cut off at a line
    boundary, such a body looks whole, so it never counts as complete."""


class DiskFull(Exception):
    """The spill file could not grow: the disk (TMPDIR) is full, or a file-size limit was reached."""

    def __init__(self, stored: int, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.stored = stored  # bytes the body held when writing failed
        self.errno = error.errno


_DISK_ERRORS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


@dataclass(frozen=True)
class Limit:
    """Past this many lines or decompressed bytes a body is abandoned and its window split, so that one
    window never holds more than a bounded share of the disk; None for a window that cannot be split."""

    lines: int
    size: int


class SpillMeter:
    """The bytes every body of the sync holds in its spill file right now, and the most they ever held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0

    def add(self, size: int) -> None:
        """Count `size` more (negative: freed) bytes."""
        with self._lock:
            self.in_use += size
            self.peak = max(self.peak, self.in_use)


class Spill:
    """A body's bytes as they came over the wire, in memory up to a bound and in a temporary file past it."""

    def __init__(self, gzipped: bool, in_memory: int, meter: SpillMeter) -> None:
        self.gzipped = gzipped
        self.stored = 0
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=in_memory)
        self._meter = meter

    def write(self, raw: bytes) -> None:
        """The next bytes from the wire."""
        with self._disk_errors(len(raw)):
            self._file.write(raw)
        self.stored += len(raw)
        self._meter.add(len(raw))

    def finish(self) -> None:
        """Write out what is buffered, so that a full disk shows now, not while the body is emitted."""
        with self._disk_errors(0):
            self._file.flush()

    @contextlib.contextmanager
    def _disk_errors(self, adding: int) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if exc.errno in _DISK_ERRORS:
                raise DiskFull(self.stored + adding, exc) from None
            raise

    def chunks(self) -> Iterator[bytes]:
        """The decompressed body, from the start, in chunks of any size."""
        self._file.seek(0)
        decoder = Gunzip() if self.gzipped else None
        while raw := self._file.read(READ_BYTES):
            if decoder is None:
                yield raw
            else:
                yield from decoder.pieces(raw)

    def close(self) -> None:
        """Free the spill file (its name is gone from the disk from the start: nothing is left behind)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # writing out its buffer failed (a full disk): the file is closed all the same
                pass
            self._meter.add(-self.stored)


def receive(raw_chunks: Iterable[bytes], spill: Spill, limit: Limit | None, framed: bool = True) -> BodyCheck:
    """Store a body in `spill`, checking it on the way; raise Incomplete unless it is whole, TooLarge
    once it is larger than `limit`, DiskFull when the spill cannot grow. Errors of the transport (a
    connection cut, broken gzip: GzipError) pass through to the caller.

    A body is whole when something proves its end: the gzip trailer, or its framing (`framed`: a
    Content-Length or the chunked terminator, which the HTTP layer checks and raises on when short).
    """
    decoder = Gunzip() if spill.gzipped else None
    check = BodyCheck()
    for raw in raw_chunks:
        spill.write(raw)
        for data in decoder.pieces(raw) if decoder else (raw,):
            check.take(data)
        if limit is not None and (check.events > limit.lines or check.size > limit.size):
            raise TooLarge(f"the body grew past {limit.lines} events or {limit.size >> 20} MB", check.head())
    spill.finish()
    if decoder is not None and not decoder.complete():
        raise Incomplete("the gzip stream ended early (response cut off)")
    if not framed and (decoder is None or not decoder.seen):
        raise Unverifiable(
            "nothing proves the answer is whole: it is neither gzip nor framed (no Content-Length, not "
            "chunked), so a connection closed early would look like its end. A proxy or gateway between "
            "this machine and Mixpanel may be stripping compression and framing"
        )
    trailer = check.finish().trailer
    if trailer is not None:
        raise Incomplete(f"Mixpanel ended the export early ({trailer.decode(errors='replace')!r})")
    return check


class BodyCheck:
    """Watches a decompressed body go by, so it can be judged complete without a second pass.

    Counts lines that cannot be one JSON object (a non-blank line whose last non-blank byte is not
    `}`, or a line longer than MAX_LINE_BYTES) and keeps the end of the body, where a `terminated
    early` trailer or a half line shows. The common case costs two `bytes.count` calls per piece;
    blank lines cost a few more passes in C (`_blank_lines_only`); only a piece with a line that is
    really suspicious is looked at line by line.
    """

    def __init__(self) -> None:
        self.size = 0
        self.lines = 0  # lines ended by b"\n" so far
        self.events = 0  # of them, lines that end in `}`: what the window's size is judged by
        self.malformed = 0
        self.first_malformed: int | None = None  # 1-based line number
        self.trailer: bytes | None = None
        self._tail = b""  # the last TAIL_BYTES bytes seen
        self._line_bytes = 0  # of the line not yet ended
        self._long = False  # the line not yet ended is already counted as too long
        self._head = hashlib.blake2b(digest_size=16)  # of the first HEAD_BYTES
        self._head_left = HEAD_BYTES

    def head(self) -> bytes:
        """A digest of the body's first HEAD_BYTES (all of a shorter one): what windows.SameAnswers
        compares to tell a server that ignores the time filter."""
        return self._head.digest()

    def take(self, data: bytes) -> None:
        """Account for the next piece of the body."""
        if not data:
            return
        if self._head_left:
            start = data[: self._head_left]
            self._head.update(start)
            self._head_left -= len(start)
        newlines = data.count(b"\n")
        self._measure(data, newlines)
        if newlines:
            closed = data.count(b"}\n") + (data[:1] == b"\n" and self._tail[-1:] == b"}")
            self.events += closed
            if closed != newlines and not self._blank_lines_only(data):
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

    def _measure(self, data: bytes, newlines: int) -> None:
        """Count a line longer than MAX_LINE_BYTES as malformed, once, as soon as it is that long."""
        if not newlines:
            self._line_bytes += len(data)
        else:
            if self._line_bytes + data.find(b"\n") > MAX_LINE_BYTES and not self._long:
                self._bad(self.lines + 1)
            self._line_bytes, self._long = len(data) - data.rfind(b"\n") - 1, False
        if self._line_bytes > MAX_LINE_BYTES and not self._long:
            self._long = True
            self._bad(self.lines + newlines + 1)

    def _blank_lines_only(self, data: bytes) -> bool:
        """Whether every line the piece ends that does not end in `}` is blank: the piece without its
        blanks, runs of newlines made one, has a `}` before every newline (but a first one that ends a
        line the last piece left good or blank)."""
        compact = data.translate(None, b" \t\r")
        while b"\n\n" in compact:
            compact = compact.replace(b"\n\n", b"\n")
        before = self._tail.rstrip(b" \t\r")[-1:]
        leading = compact[:1] == b"\n" and before in (b"", b"}", b"\n")
        return compact.count(b"\n") == compact.count(b"}\n") + leading

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
    """Decompresses a gzip body of one or more members (RFC 1952 allows several; inflate stops after one),
    in pieces of at most PIECE_BYTES, however well the input compresses."""

    def __init__(self) -> None:
        self._decoder = isal_zlib.decompressobj(wbits=31)
        self.seen = 0  # compressed bytes taken

    def pieces(self, data: bytes) -> Iterator[bytes]:
        """The bytes decoded from the next piece of the compressed body."""
        self.seen += len(data)
        while data:
            if self._decoder.eof:
                if not data.strip(b"\0"):  # zero padding after the last member
                    return
                self._decoder = isal_zlib.decompressobj(wbits=31)
            out = self._decoder.decompress(data, PIECE_BYTES)
            if out:
                yield out
            data = self._decoder.unused_data if self._decoder.eof else self._decoder.unconsumed_tail

    def complete(self) -> bool:
        """Whether the body ended at the end of a member (or was empty, as an empty export may be)."""
        return self.seen == 0 or self._decoder.eof
