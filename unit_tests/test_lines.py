"""Line splitting and parsing of export bodies."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_tests.depth import examples
from source_mixpanel_export.body import PIECE_BYTES, BodyCheck, Gunzip
from source_mixpanel_export.lines import (
    BATCH_LINES,
    MAX_LINE_BYTES,
    TOO_LONG,
    is_trailer,
    iter_line_batches,
    needs_exact,
    parse_line,
)


def split_lines(chunks):
    return [line for batch, _ in iter_line_batches(chunks) for line in batch]


AWKWARD = ["a\u2028b", "c\u2029d", "e\u0085f", "g\rh", "i\nj", "k\tl", "😀", "Ω"]


def test_given_unicode_separators_when_split_then_only_newline_bytes_cut():
    """U+2028, U+2029, U+0085 and \\r stay inside their line."""
    body = b"".join(orjson.dumps({"v": v}) + b"\n" for v in AWKWARD)
    lines = list(split_lines([body[:7], body[7:30], body[30:]]))
    assert [orjson.loads(line)["v"] for line in lines] == AWKWARD


@given(values=st.lists(st.text(), max_size=30), cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_splitting_is_independent_of_chunk_boundaries(values, cuts):
    """Any cut points give the same lines, in batches."""
    body = b"".join(orjson.dumps({"v": v}) + b"\n" for v in values)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    lines = list(split_lines(chunks))
    assert [orjson.loads(line)["v"] for line in lines] == values


def test_given_integers_beyond_64_bits_when_parsed_exactly_then_no_precision_lost():
    """orjson would turn these into floats; the exact path keeps them."""
    line = b'{"a": 123456789012345678901234, "b": -9223372036854775809, "c": 18446744073709551615}'
    (batch, exact), = list(iter_line_batches([line + b"\n"]))
    assert exact
    assert parse_line(batch[0], exact) == json.loads(line)


@pytest.mark.parametrize(
    "number,exact",
    [
        (10**18, False),  # 19 digits: always within 64 bits
        (2**63 - 1, False),
        (12345678901234567890, False),  # 20 digits, still below 2**64
        (2**64 - 1, False),
        (-(2**63), False),
        (2**64, True),
        (9 * 10**18, False),
        (9 * 10**19, True),
        (10**20, True),
        (-(2**63) - 1, True),
        (-(10**19), True),
        (-(10**18), False),
        (123456789012345678901234567890, True),
    ],
)
def test_given_integer_near_64_bits_when_checked_then_flagged_exactly_when_orjson_would_lose_it(number, exact):
    """The check is tight at the limits of orjson's exact range: -2**63 .. 2**64-1."""
    line = b'{"a": [1, %d], "b": "x"}' % number
    assert needs_exact(line) == exact
    assert (repr(orjson.loads(line)) != repr(json.loads(line))) == exact


def test_given_a_block_with_some_long_integers_when_batched_then_only_those_lines_are_flagged():
    """The block stays one list, in order; the positions flagged are those of the lines with such integers."""
    lines = [b'{"n": %d}' % n for n in (1, 2**64, 3, 4, -(2**63) - 1, 10**30, 7)] + [b" ", b'{"s": "%d"}' % 10**25]
    batches = list(iter_line_batches([b"\n".join(lines) + b"\n"]))
    assert [line for batch, _ in batches for line in batch] == lines
    assert len(batches) == 1
    flagged = [batch[position] for batch, exact in batches for position in exact]
    assert flagged == [lines[1], lines[4], lines[5], lines[8]]  # the last one is a string: harmless


_PIECES = st.one_of(
    st.sampled_from([b"18446744073709551615", b"18446744073709551616", b"-", b'"', b".", b"e", b" ", b"x"]),
    st.integers(1, 40).map(lambda digits: b"9" * digits),
)
_LINE = st.lists(_PIECES, max_size=6).map(b"".join)
# 90-250 lines (batches cut), each one of up to 12 drawn lines: one draw picks them all, which keeps the
# example cheap to generate (a draw per line made this the suite's slowest unit test).
_LINES = st.builds(
    lambda kinds, picks: [kinds[pick % len(kinds)] for pick in picks],
    st.lists(_LINE, min_size=1, max_size=12),
    st.binary(min_size=90, max_size=250),
)


@settings(max_examples=examples(100))
@given(_LINES, st.integers(0, 2), st.lists(st.integers(0, 8_000), max_size=8))
def test_flagged_positions_are_exactly_the_lines_needs_exact_finds_in_each_batch(lines, shift, cuts):
    """Wherever the long digit runs, the chunk cuts and the batch ends fall, each batch flags exactly the
    positions of its lines that need the exact parser, and the lines are the body's."""
    body = b"x" * shift + b"\n".join(lines) + b"\n"
    edges = sorted({0, len(body), *(cut for cut in cuts if cut < len(body))})
    batches = list(iter_line_batches([body[start:end] for start, end in zip(edges, edges[1:], strict=False)]))
    for batch, exact in batches:
        assert 1 <= len(batch) <= BATCH_LINES
        assert list(exact) == [position for position, line in enumerate(batch) if needs_exact(line)]
    assert [line for batch, _ in batches for line in batch if line] == [line for line in body.split(b"\n") if line]


def test_given_long_digit_runs_only_inside_strings_or_floats_when_parsed_then_values_unchanged():
    """A false alarm only costs speed: strings and floats with long digit runs read the same either way."""
    line = b'{"id": "123456789012345678901234", "f": 1.23456789012345678901234e5, "g": -0.1234567890123456789012}'
    (batch, exact), = list(iter_line_batches([line]))
    assert exact and parse_line(batch[0], exact) == orjson.loads(line)


def test_trailer_variants_are_recognised():
    """All known 'terminated early' forms are trailers; events are not."""
    for text in (b"terminated early", b"export terminated early", b"[terminated early]", b" Terminated Early \r"):
        assert is_trailer(text)
    assert not is_trailer(b'{"event": "terminated early", "properties": {}}')


def test_given_a_line_longer_than_the_bound_when_batched_then_it_comes_as_too_long_and_is_never_held():
    """A 20 MB line in 1 MB chunks: its neighbours come whole, it comes as a marker no parser takes."""
    long_line = b'{"event": "E", "properties": {"s": "' + b"a" * (20 << 20) + b'"}}'
    body = b'{"a": 1}\n' + long_line + b'\n{"b": 2}\n'
    chunks = [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    assert split_lines(chunks) == [b'{"a": 1}', TOO_LONG, b'{"b": 2}']
    with pytest.raises(ValueError):
        orjson.loads(TOO_LONG)
    check = BodyCheck()
    for chunk in chunks:
        check.take(chunk)
    assert (check.malformed, check.first_malformed) == (1, 2) and MAX_LINE_BYTES < len(long_line)


def test_given_runs_of_empty_lines_when_batched_and_checked_then_one_empty_line_and_nothing_malformed():
    """A body of newlines (a bomb of ~130 kB on the wire) costs what its bytes cost, and is not malformed."""
    body = b'{"a": 1}\n' + b"\n" * (8 << 20) + b'{"b": 2}\n \r\n\n'
    chunks = [body[i : i + (1 << 20)] for i in range(0, len(body), 1 << 20)]
    assert [line for line in split_lines(chunks) if line.strip()] == [b'{"a": 1}', b'{"b": 2}']
    assert len(split_lines(chunks)) <= 2 + 2 * len(chunks)  # at most an empty line at a chunk's edges
    check = BodyCheck()
    for chunk in chunks:
        check.take(chunk)
    assert check.malformed == 0 and check.lines == body.count(b"\n")


def test_given_a_gzip_bomb_when_decompressed_then_in_pieces_of_at_most_a_megabyte():
    """64 MB of spaces in ~64 kB of gzip: never more than PIECE_BYTES at once."""
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = compressor.compress(b" " * (64 << 20)) + compressor.flush()
    decoder = Gunzip()
    sizes = [len(piece) for chunk in (bomb[i : i + 65536] for i in range(0, len(bomb), 65536))
             for piece in decoder.pieces(chunk)]
    assert sum(sizes) == 64 << 20 and max(sizes) <= PIECE_BYTES and decoder.complete()
