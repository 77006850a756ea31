"""Turning an export body into events: split on the byte `\\n` only, parse losslessly, spot trailers.

Values can hold U+2028, U+2029, U+0085 and `\\r`, which `str.splitlines` and
`iter_lines(decode_unicode=True)` treat as line ends; splitting bytes on 0x0A is the only safe cut.

orjson keeps integers exact from -2**63 to 2**64-1 and silently turns larger ones into floats, so a
line that may hold one goes to the standard library's parser instead. Searching a regex for long
digit runs costs more than parsing the line (~7 µs); translating every digit to `0` and searching for
a run of zeros costs ~0.3 µs a line, once per chunk, and only the runs found are read closely.
"""

from __future__ import annotations

import json
import math
import operator
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from itertools import accumulate, repeat
from typing import Any

import orjson

# Trailers Mixpanel writes instead of further events when it gives up on a long export.
TRAILERS = frozenset({b"terminated early", b"export terminated early", b"[terminated early]"})

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19  # the shortest digit run worth a closer look
_ZEROS = re.compile(b"0+")
_UINT64_MAX = b"18446744073709551615"  # orjson keeps integers in [-2**63, 2**64-1] exact
_INT64_MIN_DIGITS = b"9223372036854775808"

# A block of lines and the positions in it of the lines that may need the exact parser (ascending).
Batch = tuple[list[bytes], tuple[int, ...]]
# Mixpanel caps an event at 1 MB; a longer line than this is a bad line, and is never held whole.
MAX_LINE_BYTES = 16 << 20
# Lines per batch. A batch's events and records live until it is written; past ~700 new container
# objects the cyclic GC runs, and with a block of ~1,000 events (several containers each) alive it ran
# ~5 times per block and took ~1.4 µs a record (7% of the read) for garbage that has no cycles.
# Batches of 100 lines stay below that; what a batch costs the layers above is ~1% of its lines.
BATCH_LINES = 100
TOO_LONG = b"\x00 a line longer than 16 MB (not kept)"


def needs_exact(data: bytes) -> bool:
    """Whether `data` may hold an integer orjson would turn into a float (false positives are harmless)."""
    masked = data.translate(_DIGITS_TO_ZERO)
    return _LONG_RUN in masked and _first_overflow(data, masked, 0) >= 0


def _first_overflow(data: bytes, masked: bytes, start: int) -> int:
    """Where the first digit run from `start` on that could be an integer beyond 64 bits begins, or -1.

    Runs of 19 digits or more are read whole; one is harmless when it fits: up to 18446744073709551615,
    or down to -9223372036854775808 after a minus sign. Digits inside strings or floats count too.
    """
    at = masked.find(_LONG_RUN, start)
    while at >= 0:
        end = _ZEROS.match(masked, at).end()  # type: ignore[union-attr]
        digits = data[at:end]
        if at and data[at - 1] == 0x2D:  # "-"
            if len(digits) > 19 or digits > _INT64_MIN_DIGITS:
                return at - 1
        elif len(digits) > 20 or (len(digits) == 20 and digits > _UINT64_MAX):
            return at
        at = masked.find(_LONG_RUN, end)
    return -1


class _Pending:
    """The start of a line not yet ended, kept as pieces (no copying per chunk), and not at all past
    MAX_LINE_BYTES: such a line is only known to be too long."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.too_long = False

    def add(self, data: bytes) -> None:
        if self.too_long or not data:
            return
        self._size += len(data)
        if self._size > MAX_LINE_BYTES:
            self.too_long, self._parts = True, []
        else:
            self._parts.append(data)

    def take(self, end: bytes = b"") -> bytes:
        """The whole line (TOO_LONG for one past the bound), and start afresh."""
        self.add(end)
        line = TOO_LONG if self.too_long else b"".join(self._parts)
        self._parts, self._size, self.too_long = [], 0, False
        return line


def iter_line_batches(chunks: Iterable[bytes]) -> Iterator[Batch]:
    """The lines of a body cut into arbitrary chunks (split on b"\\n" only, without it), in lists of
    up to BATCH_LINES lines, each with the positions of its lines that may need the exact parser
    (empty: orjson parses every line of the list exactly).

    Lines that need the exact parser stay in their list, flagged by position: each list costs every
    layer above a step of its own, and lines cut out alone made ten times as many lists of a body
    where one line in ten holds a long integer.

    Hostile bodies cost what their bytes cost: a line longer than MAX_LINE_BYTES is never held whole
    but comes as TOO_LONG, which no parser takes (a bad line); a run of empty lines comes as one (so
    line numbers count such a run once).
    """
    pending = _Pending()
    for chunk in chunks:
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending.add(chunk)
            continue
        first = chunk.find(b"\n")
        body = b"".join((pending.take(chunk[:first]), memoryview(chunk)[first:cut]))  # one copy of the chunk
        pending.add(chunk[cut + 1 :])
        lines = body.split(b"\n")
        if b"" in lines:  # cheaper than looking for b"\n\n" in the body (a slow two-byte search)
            while b"\n\n" in body:
                body = body.replace(b"\n\n", b"\n")
            lines = body.split(b"\n")
        masked = body.translate(_DIGITS_TO_ZERO)
        hit = _first_overflow(body, masked, 0)
        exact = _exact_positions(body, masked, hit, lines) if hit >= 0 else ()
        for start in range(0, len(lines), BATCH_LINES):
            end = start + BATCH_LINES
            flagged = exact[bisect_left(exact, start) : bisect_left(exact, end)] if exact else ()
            yield lines[start:end], tuple(position - start for position in flagged)
    rest = pending.take()
    if rest:
        yield [rest], ((0,) if needs_exact(rest) else ())


def _exact_positions(body: bytes, masked: bytes, hit: int, lines: list[bytes]) -> tuple[int, ...]:
    """The positions in `lines` (`body` split on b"\\n") of the lines holding a too-long integer;
    `hit` is the first such integer's offset.

    A hit's line is found by bisecting the offsets where lines end: counting the newlines up to each
    hit went over the body up to its last hit a byte at a time (3,000 of the split's 16,700
    instructions a record, callgrind).
    """
    ends = list(accumulate(map(operator.add, map(len, lines), repeat(1))))  # where line i + 1 begins
    positions = []
    while hit >= 0:
        line = bisect_right(ends, hit)
        positions.append(line)
        assert ends[line] > hit, "lines is not body split on newlines"  # else the search would not move on
        hit = _first_overflow(body, masked, ends[line])
    return tuple(positions)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is beyond a double")
    return value


# json.loads with these arguments builds a decoder per call (~1.5 µs of a ~8 µs line); this one is built once.
_EXACT = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def exact_loads(line: bytes) -> Any:
    """The standard library's parser, as strict as orjson: UTF-8 only, no NaN or Infinity, no number
    beyond a double but integers (those are kept exact). Too deep a nesting is a ValueError too."""
    text = line.decode("utf-8")
    if text.startswith("\ufeff"):  # as json.loads refuses it
        raise ValueError("a UTF-8 byte order mark")
    try:
        return _EXACT.decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def parse_line(line: bytes, exact: bool = False) -> Any:
    """Parse one JSON line; `exact` (a line iter_line_batches flagged) uses the stdlib, which keeps
    integers beyond 64 bits, at about three times orjson's cost.

    Raises ValueError (orjson.JSONDecodeError is one) when the line is not JSON.
    """
    return exact_loads(line) if exact else orjson.loads(line)


def is_trailer(line: bytes) -> bool:
    """Whether a line is Mixpanel's 'the result is incomplete' marker rather than an event."""
    text = line.strip().lower()
    return text in TRAILERS or (not text.startswith(b"{") and b"terminated early" in text)

