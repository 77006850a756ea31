"""Line splitting and parsing of export bodies."""

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from source_mixpanel_export.lines import is_trailer, iter_line_batches, parse_line, split_lines

AWKWARD = ["a\u2028b", "c\u2029d", "e\u0085f", "g\rh", "i\nj", "k\tl", "😀", "Ω"]


def test_given_unicode_separators_when_split_then_only_newline_bytes_cut():
    """U+2028, U+2029, U+0085 and \\r stay inside their line."""
    body = b"".join(orjson.dumps({"v": v}) + b"\n" for v in AWKWARD)
    lines = list(split_lines([body[:7], body[7:30], body[30:]]))
    assert [orjson.loads(line)["v"] for line in lines] == AWKWARD


@given(values=st.lists(st.text(), max_size=30), cuts=st.lists(st.integers(0, 5000), max_size=10))
def test_splitting_is_independent_of_chunk_boundaries(values, cuts):
    """Any cut points give the same lines, and batches agree with split_lines."""
    body = b"".join(orjson.dumps({"v": v}) + b"\n" for v in values)
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    lines = list(split_lines(chunks))
    assert [orjson.loads(line)["v"] for line in lines] == values
    assert [line for batch, _ in iter_line_batches(chunks) for line in batch] == lines


def test_given_integers_beyond_64_bits_when_parsed_exactly_then_no_precision_lost():
    """orjson would turn these into floats; the exact path keeps them."""
    line = b'{"a": 123456789012345678901234, "b": -9223372036854775809, "c": 18446744073709551615}'
    (batch, exact), = list(iter_line_batches([line + b"\n"]))
    assert exact
    assert parse_line(batch[0], exact) == json.loads(line)


def test_trailer_variants_are_recognised():
    """All known 'terminated early' forms are trailers; events are not."""
    for text in (b"terminated early", b"export terminated early", b"[terminated early]", b" Terminated Early \r"):
        assert is_trailer(text)
    assert not is_trailer(b'{"event": "terminated early", "properties": {}}')
