"""Turning an export body into events: split on the byte `\\n` only, parse losslessly, spot trailers.

Values can hold U+2028, U+2029, U+0085 and `\\r`, which `str.splitlines` and
`iter_lines(decode_unicode=True)` treat as line ends; splitting bytes on 0x0A is the only safe cut.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

# Trailers Mixpanel writes instead of further events when it gives up on a long export.
TRAILERS = frozenset({b"terminated early", b"export terminated early", b"[terminated early]"})

# orjson turns integers beyond 64 bits into floats without a word; a run of 19+ digits sends the line
# to the standard library's parser, which keeps every integer exact.
_LONG_DIGITS = re.compile(rb"\d{19,}")


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the lines of a byte stream cut into arbitrary chunks, without their `\\n`."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        parts = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


def iter_line_batches(chunks: Iterable[bytes]) -> Iterator[tuple[list[bytes], bool]]:
    """Like `split_lines`, but a list per chunk plus whether it may hold over-long integers."""
    rest = b""
    for chunk in chunks:
        if not chunk:
            continue
        block = rest + chunk if rest else chunk
        cut = block.rfind(b"\n")
        if cut < 0:
            rest = block
            continue
        rest = block[cut + 1 :]
        body = block[:cut]
        yield body.split(b"\n"), _LONG_DIGITS.search(body) is not None
    if rest:
        yield [rest], _LONG_DIGITS.search(rest) is not None


def parse_line(line: bytes, exact: bool = False) -> Any:
    """Parse one JSON line; `exact` (the line may hold integers beyond 64 bits) uses the stdlib.

    Raises ValueError (orjson.JSONDecodeError is one) when the line is not JSON.
    """
    if exact and _LONG_DIGITS.search(line):
        return json.loads(line)
    return orjson.loads(line)


def is_trailer(line: bytes) -> bool:
    """Whether a line is Mixpanel's 'the result is incomplete' marker rather than an event."""
    text = line.strip().lower()
    return text in TRAILERS or (not text.startswith(b"{") and b"terminated early" in text)


def last_line(tail: bytes) -> bytes:
    """The last non-empty line of the end of a body."""
    stripped = tail.rstrip(b"\n")
    return stripped[stripped.rfind(b"\n") + 1 :]
