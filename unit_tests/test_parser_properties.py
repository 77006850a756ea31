"""Properties of the body path: line splitting, the structural check, gzip members, cut-off detection.

Random bodies cut at random points. The cut-off tests send real HTTP bytes over a loopback socket, so
urllib3's own framing checks (Content-Length, chunked) take part exactly as in a sync.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integration_tests.depth import examples
from source_mixpanel_export.body import BodyCheck, Gunzip, GzipError, Spill, SpillMeter
from source_mixpanel_export.client import spill_response
from source_mixpanel_export.lines import is_trailer, iter_line_batches, parse_line
from source_mixpanel_export.retry import Retriable


def cut(body: bytes, points: list[int]) -> list[bytes]:
    """The body in pieces at the given offsets (clamped, deduplicated)."""
    marks = sorted({min(p, len(body)) for p in points})
    return [body[a:b] for a, b in zip([0, *marks], [*marks, len(body)], strict=True)]


# -- line splitting -------------------------------------------------------------------------------------------


@given(body=st.binary(max_size=3000), points=st.lists(st.integers(0, 3000), max_size=12))
def test_split_lines_matches_a_plain_split_on_newline_bytes_for_any_chunking(body, points):
    """Whatever the chunking, the lines are the body split on b"\\n" (runs of empty lines may come as one)."""
    expected = [line for line in body.split(b"\n") if line]
    chunks = cut(body, points)
    assert [line for batch, _ in iter_line_batches(chunks) for line in batch if line] == expected


BOUNDARY_INTS = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, -(10**19)])


@given(
    values=st.lists(st.one_of(st.integers(), st.integers(-(10**40), 10**40), BOUNDARY_INTS, st.text(max_size=20)),
                    max_size=40),
    points=st.lists(st.integers(0, 4000), max_size=12),
)
def test_batches_parse_to_exactly_what_the_exact_parser_reads(values, points):
    """Whatever the chunking, every line parsed by the parser its batch gives it equals the stdlib's exact reading."""
    body = b"".join(json.dumps({"v": v, "n": [v]}, ensure_ascii=False).encode() + b"\n" for v in values)
    parsed = [
        parse_line(line, position in exact)
        for batch, exact in iter_line_batches(cut(body, points))
        for position, line in enumerate(batch)
    ]
    assert parsed == [{"v": v, "n": [v]} for v in values]


# -- the structural check -----------------------------------------------------------------------------------

EVENT = st.builds(
    lambda name, n: json.dumps({"event": name, "properties": {"n": n, "s": "x\u2028y}"}}, ensure_ascii=False).encode(),
    st.text(max_size=8),
    st.integers(),
)
JUNK = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))
BLANK = st.sampled_from([b"", b" ", b"\r", b" \t\r"])
LINE = st.one_of(EVENT, EVENT.map(lambda e: e + b"\r"), JUNK, BLANK)


def reference_check(body: bytes) -> tuple[list[int], bool]:
    """What the check must find: line numbers of non-blank lines not ending in `}`, and a final trailer."""
    *ended, rest = body.split(b"\n")
    bad = [i for i, line in enumerate(ended, 1) if line.rstrip(b" \t\r") and not line.rstrip(b" \t\r").endswith(b"}")]
    stripped = body.rstrip(b" \t\r\n")
    final = stripped[stripped.rfind(b"\n") + 1 :]
    trailer = bool(final) and is_trailer(final)
    rest = rest.rstrip(b" \t\r")
    if not trailer and rest and not rest.endswith(b"}"):
        bad.append(len(ended) + 1)
    return bad, trailer


@given(
    lines=st.lists(LINE, max_size=40),
    newline_at_end=st.booleans(),
    trailer=st.sampled_from([None, b"terminated early", b"export terminated early", b"[terminated early]"]),
    points=st.lists(st.integers(0, 2000), max_size=12),
)
def test_body_check_counts_exactly_the_lines_that_cannot_be_json_objects(lines, newline_at_end, trailer, points):
    """The fast count plus line-by-line scan agrees with a plain reading of the whole body, at any chunking."""
    if trailer is not None:
        lines = [*lines, trailer]
    body = b"\n".join(lines) + (b"\n" if newline_at_end and lines else b"")
    check = BodyCheck()
    for chunk in cut(body, points):
        check.take(chunk)
    check.finish()
    bad, has_trailer = reference_check(body)
    assert check.malformed == len(bad)
    assert check.first_malformed == (bad[0] if bad else None)
    assert (check.trailer is not None) == has_trailer
    assert check.size == len(body) and check.lines == body.count(b"\n")


@given(events=st.lists(EVENT, min_size=1, max_size=40), points=st.lists(st.integers(0, 4000), max_size=12))
def test_body_check_finds_nothing_wrong_in_a_clean_export(events, points):
    """Well-formed JSON lines, however chunked: no malformed line, no trailer."""
    body = b"\n".join(events) + b"\n"
    check = BodyCheck()
    for chunk in cut(body, points):
        check.take(chunk)
    assert check.finish().malformed == 0 and check.trailer is None


# -- gzip -------------------------------------------------------------------------------------------------------


@given(
    members=st.lists(st.binary(max_size=500), min_size=1, max_size=4),
    points=st.lists(st.integers(0, 3000), max_size=10),
)
def test_gunzip_decodes_every_member_at_any_chunking(members, points):
    """A body of several gzip members decodes whole; zlib alone would stop after the first."""
    body = b"".join(gzip.compress(m, mtime=0) for m in members)
    decoder = Gunzip()
    out = b"".join(piece for chunk in cut(body, points) for piece in decoder.pieces(chunk))
    assert out == b"".join(members) and decoder.complete()


@given(data=st.binary(max_size=2000), keep=st.floats(0, 1, exclude_max=True))
def test_gunzip_never_calls_a_truncated_member_complete(data, keep):
    """Cut anywhere inside a member, the stream is incomplete (or undecodable), never complete."""
    body = gzip.compress(data, mtime=0)
    decoder = Gunzip()
    try:
        list(decoder.pieces(body[: max(1, int(len(body) * keep))]))
    except GzipError:
        return
    assert not decoder.complete()


# -- cut-off detection over a real socket ------------------------------------------------------------------------


class ScriptedServer:
    """Loopback HTTP server that answers each connection with the next scripted bytes, then hangs up."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._replies: list[bytes] = []
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}/api/2.0/export"

    def get(self, reply: bytes) -> requests.Response:
        """Queue one reply and open a streaming request that will receive it."""
        with self._ready:
            self._replies.append(reply)
            self._ready.notify()
        return requests.get(self.url, stream=True, timeout=5, headers={"Connection": "close"})

    def close(self) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = conn.recv(65536)
                    if not data:
                        break
                    request += data
                with self._ready:
                    self._ready.wait_for(lambda: self._replies)
                    reply = self._replies.pop(0)
                try:
                    conn.sendall(reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def server():
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def http_reply(body: bytes, framing: str, gzipped: bool, chunk_sizes: list[int]) -> tuple[bytes, bytes]:
    """(head, framed body) of a 200 export response with the given framing."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    if gzipped:
        head += b"Content-Encoding: gzip\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body), body
    framed = b""
    for piece in cut(body, [sum(chunk_sizes[: i + 1]) for i in range(len(chunk_sizes))]):
        if piece:
            framed += b"%X\r\n%b\r\n" % (len(piece), piece)
    return head + b"Transfer-Encoding: chunked\r\n\r\n", framed + b"0\r\n\r\n"


def new_spill(response: requests.Response) -> Spill:
    """A spill for the response, compressed if it is, as the client makes one."""
    return Spill("gzip" in response.headers.get("Content-Encoding", ""), 1 << 20, SpillMeter())


REPLY = dict(
    events=st.lists(EVENT, min_size=1, max_size=30),
    framing=st.sampled_from(["length", "chunked"]),
    gzipped=st.booleans(),
    chunk_sizes=st.lists(st.integers(1, 400), max_size=8),
)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**REPLY)
def test_given_whole_response_when_spilled_then_body_is_exact(server, events, framing, gzipped, chunk_sizes):
    """A complete response spills to exactly its decoded bytes."""
    lines = b"".join(e + b"\n" for e in events)
    body = gzip.compress(lines, mtime=0) if gzipped else lines
    head, framed = http_reply(body, framing, gzipped, chunk_sizes)
    with server.get(head + framed) as response:
        spill = new_spill(response)
        check = spill_response(response, spill)
    assert b"".join(spill.chunks()) == lines and check.malformed == 0 and check.size == len(lines)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**REPLY, keep=st.floats(0, 1, exclude_max=True))
def test_given_response_cut_anywhere_when_spilled_then_retriable(server, events, framing, gzipped, chunk_sizes, keep):
    """Hanging up before the last data byte of a framed body is always caught, never a short body.

    A chunked body cut after its final `0` chunk size has all its data: it may be accepted, whole."""
    lines = b"".join(e + b"\n" for e in events)
    body = gzip.compress(lines, mtime=0) if gzipped else lines
    head, framed = http_reply(body, framing, gzipped, chunk_sizes)
    all_data = len(framed) - len(b"\r\n\r\n") if framing == "chunked" else len(framed)
    cut_at = int(len(framed) * keep)
    with server.get(head + framed[:cut_at]) as response:
        spill = new_spill(response)
        try:
            spill_response(response, spill)
        except Retriable:
            return
    assert cut_at >= all_data and b"".join(spill.chunks()) == lines


@settings(max_examples=examples(30), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    events=st.lists(EVENT, max_size=20),
    trailer=st.sampled_from([b"terminated early", b"export terminated early", b"[terminated early]"]),
    gzipped=st.booleans(),
)
def test_given_trailer_when_spilled_then_retriable(server, events, trailer, gzipped):
    """A complete response that ends in a `terminated early` line is a failed attempt."""
    lines = b"".join(e + b"\n" for e in events) + trailer + b"\n"
    body = gzip.compress(lines, mtime=0) if gzipped else lines
    head, framed = http_reply(body, "chunked", gzipped, [64])
    with server.get(head + framed) as response:
        with pytest.raises(Retriable, match="ended the export early"):
            spill_response(response, new_spill(response))


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(EVENT, min_size=5, max_size=30), at=st.floats(0, 1, exclude_max=True))
def test_given_corrupt_gzip_when_spilled_then_retriable_or_exact(server, events, at):
    """A gzip body with a byte of its deflate data or its trailer changed is a failed attempt (the
    inflater's error, or a CRC or length mismatch), never a short or altered body taken as whole."""
    lines = b"".join(e + b"\n" for e in events)
    body = bytearray(gzip.compress(lines, mtime=0))
    position = 10 + int((len(body) - 10) * at)  # past the gzip header: the deflate data and the trailer
    body[position] ^= 0xFF
    head, framed = http_reply(bytes(body), "length", True, [])
    with server.get(head + framed) as response:
        spill = new_spill(response)
        try:
            spill_response(response, spill)
        except Retriable as failure:
            assert "cut off" in str(failure) or "ended early" in str(failure)
            return
    assert b"".join(spill.chunks()) == lines  # a change inflate cannot see must not change the body


def test_given_a_body_that_is_not_gzip_when_spilled_then_retriable(server):
    """Content-Encoding says gzip, the bytes are plain JSON: the inflater's error is a retry."""
    head, framed = http_reply(b'{"event":"a","properties":{}}\n', "length", True, [])
    with server.get(head + framed) as response:
        with pytest.raises(Retriable, match="cut off"):
            spill_response(response, new_spill(response))
