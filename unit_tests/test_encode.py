"""Records encoded in worker processes against the main process's path: same RECORD bytes, same tallies.

encode_block and EncodedBody must give what window_records and MessageWriter give for the same body;
the pool must fail loudly, never hang, when a worker dies or is stopped.
"""

from __future__ import annotations

import concurrent.futures as cf
import io
import json
import logging
import re
import threading
import time
from multiprocessing import Pipe

import orjson
import pytest
from test_fastpath import NOW_NS, awkward_events, line_of

from source_mixpanel_export import bodies
from source_mixpanel_export.bodies import EncodedBody
from source_mixpanel_export.encode import encode_block, serve
from source_mixpanel_export.records import Build, Tally, make_builder, window_records
from source_mixpanel_export.stream import state_message
from source_mixpanel_export.workers import EncoderPool, WorkerFailed
from source_mixpanel_export.writer import MessageWriter

BAD_LINES = b'\n  \r\nnot json\n[1, 2]\n{"event": 5, "properties": {}}\nNaN\n'
EVENT_LINES = [line_of(e) + b"\n" for e in awkward_events()]
GOOD = b"".join(EVENT_LINES)
# Bad and blank lines in the middle of the awkward events.
AWKWARD = b"".join(EVENT_LINES[:40]) + BAD_LINES + b"".join(EVENT_LINES[40:])
LA, NOT_BEFORE = "America/Los_Angeles", "2000-03-01T00:00:00.000Z"


@pytest.fixture
def frozen_clock(monkeypatch):
    """encode_block and MessageWriter read time.time_ns for emitted_at: make it a constant."""
    monkeypatch.setattr(time, "time_ns", lambda: NOW_NS)


@pytest.fixture(scope="module")
def pool():
    """Two real workers, shared by the tests that leave them healthy (closed on leaving the block)."""
    with EncoderPool(2) as encoder:
        yield encoder


@pytest.fixture
def own_pool():
    """Workers for one test that kills or stops them."""
    with EncoderPool(2) as encoder:
        yield encoder


def reference(body: bytes, build: Build) -> tuple[bytes, Tally]:
    """The main process's path: window_records over the body, each record through MessageWriter."""
    tally, out = Tally(), io.BytesIO()
    writer = MessageWriter(out)
    for record in window_records((body,), build, tally):
        writer.record(record)
    writer.flush()
    return out.getvalue(), tally


def no_clock(data: bytes) -> bytes:
    """RECORD lines with every emitted_at the same (workers read their own clocks)."""
    return re.sub(rb'"emitted_at":\d+', b'"emitted_at":0', data)


def pieces(body: bytes, sizes: tuple[int, ...] = (1, 7, 333, 4096, 2, 1999, 2000, 2001)) -> list[bytes]:
    """The body cut in odd-sized pieces, as a download hands it over."""
    out, at = [], 0
    while at < len(body):
        size = sizes[len(out) % len(sizes)]
        out.append(body[at : at + size])
        at += size
    return out


def encoded(pool: EncoderPool, body: bytes, legacy_timezone: str | None = None, not_before: str | None = None):
    """An EncodedBody fed the body in pieces, finished and waited for; returns it and its tally."""
    result = EncodedBody(pool, legacy_timezone, not_before, in_memory=3000)
    for piece in pieces(body):
        result.write(piece)
    result.finish()
    return result, result.wait()


def poll(condition, timeout: float = 5.0) -> bool:
    """Whether `condition()` comes true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_given_awkward_and_bad_lines_when_encoded_as_a_block_then_bytes_and_tally_equal_the_dict_path(frozen_clock):
    """Unicode separators, 64-bit edges, integers beyond them, blank and bad lines: the writer's very bytes."""
    lines, tally = encode_block(AWKWARD, make_builder())
    expected, expected_tally = reference(AWKWARD, make_builder())
    assert lines == expected
    assert tally == expected_tally
    assert (tally.count, tally.bad, tally.first_bad) == (len(EVENT_LINES), 4, 43)  # after 40 events, 2 blank lines
    assert tally.lines == len(EVENT_LINES) + 6


@pytest.mark.parametrize("legacy_timezone, not_before", [(None, NOT_BEFORE), (LA, None), (LA, NOT_BEFORE)])
def test_given_a_start_time_or_legacy_timezone_when_encoded_as_a_block_then_equal_to_the_dict_path(
    frozen_clock, legacy_timezone, not_before
):
    """The worker builds records with the same options the main process would: same times, same records dropped."""
    lines, tally = encode_block(AWKWARD, make_builder(legacy_timezone, not_before))
    expected, expected_tally = reference(AWKWARD, make_builder(legacy_timezone, not_before))
    assert lines == expected and tally == expected_tally
    if not_before:
        assert 0 < tally.count < len(EVENT_LINES)  # some events were before the start, some not
    if legacy_timezone:
        assert b'"time":"2023-11-15T06:13:20.123Z"' in lines  # 22:13 Pacific wall time is 06:13 UTC


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_given_a_body_in_odd_pieces_when_encoded_by_workers_then_equal_to_the_dict_path_across_blocks(
    pool, monkeypatch, trailing_newline
):
    """Many small blocks, finishing out of order on two workers: lines and first bad line numbered over the body."""
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 2000)
    monkeypatch.setattr(bodies, "CHUNK_BYTES", 5000)
    body = GOOD + AWKWARD + GOOD
    if not trailing_newline:
        body = body.rstrip(b"\n")
    expected, expected_tally = reference(body, make_builder())
    assert expected_tally.first_bad == len(EVENT_LINES) + 43  # blocks after the first (~12 lines each)
    result, tally = encoded(pool, body)
    try:
        assert tally == expected_tally and result.count == tally.count == 3 * len(EVENT_LINES)
        chunks = list(result.chunks())
        assert len(chunks) > 1 and all(chunk.endswith(b"\n") for chunk in chunks)
        assert no_clock(b"".join(chunks)) == no_clock(expected)
    finally:
        result.close()


def test_given_options_or_an_empty_body_when_encoded_by_workers_then_equal_to_the_dict_path(pool, monkeypatch):
    """The workers get the window's timezone and start time; an empty body gives no block and no lines."""
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 2000)
    for body, options in ((AWKWARD, (LA, NOT_BEFORE)), (b"", (None, None))):
        expected, expected_tally = reference(body, make_builder(*options))
        result, tally = encoded(pool, body, *options)
        try:
            assert tally == expected_tally
            assert no_clock(b"".join(result.chunks())) == no_clock(expected)
        finally:
            result.close()


def test_given_an_encoded_window_between_records_and_a_state_when_written_then_copied_in_order_and_counted(
    pool, monkeypatch
):
    """The writer copies the window's lines after the records before it, and the next STATE counts them all."""
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 2000)
    event = {"event": "A", "properties": {"time": 1, "$insert_id": "a", "distinct_id": "d"}}
    record, (one, _) = make_builder()(event), reference(line_of(event), make_builder())
    expected, expected_tally = reference(AWKWARD, make_builder())
    result, tally = encoded(pool, AWKWARD)
    try:
        out = io.BytesIO()
        writer = MessageWriter(out)
        writer.record(record)
        writer.encoded(result)
        writer.record(record)
        writer.message(state_message({"cursor": 1}))
        writer.message(state_message({"cursor": 2}))
    finally:
        result.close()
    lines = out.getvalue().splitlines(keepends=True)
    assert no_clock(b"".join(lines[:-2])) == no_clock(one + expected + one)
    counts = [json.loads(line)["state"]["sourceStats"]["recordCount"] for line in lines[-2:]]
    assert counts == [tally.count + 2, 0] and tally == expected_tally


def test_given_a_killed_worker_when_submitting_then_worker_failed_is_raised_not_a_hang(own_pool, monkeypatch):
    """A worker gone (e.g. out of memory) fails the jobs waiting on it and every later submit and window."""
    own_pool._workers[0].process.kill()

    def failed() -> bool:
        try:
            own_pool.submit(b"", None, None).result(timeout=5)
        except WorkerFailed:
            return True
        return False

    assert poll(failed)
    with pytest.raises(WorkerFailed, match="ended unexpectedly|gone"):
        own_pool.submit(EVENT_LINES[0], None, None)
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 2000)
    with pytest.raises(WorkerFailed):
        encoded(own_pool, GOOD)


def test_given_a_block_a_worker_cannot_encode_when_waited_for_then_the_window_fails_and_the_pool_goes_on(pool):
    """An error answer fails that window only (its wait raises), not the other windows on the same workers."""
    result = EncodedBody(pool, "No/Such_Zone", None, in_memory=3000)
    try:
        result.write(GOOD)
        result.finish()
        with pytest.raises(WorkerFailed, match="No/Such_Zone"):
            result.wait()
    finally:
        result.close()
    lines, tally = pool.submit(GOOD, None, None).result(timeout=5)
    assert tally.count == len(EVENT_LINES) and lines.count(b"\n") == tally.count


def test_given_a_closed_pool_when_submitting_then_worker_failed_is_raised(own_pool):
    """A sync that ends early stops the workers; nothing may queue on them afterwards."""
    own_pool.close()
    with pytest.raises(WorkerFailed, match="stopped"):
        own_pool.submit(EVENT_LINES[0], None, None)


def test_given_a_body_closed_before_its_blocks_finish_when_waited_then_returns_and_late_parts_are_dropped(
    own_pool, monkeypatch, caplog
):
    """A window abandoned mid-encoding must not hang its reader nor fail the callbacks of parts arriving later."""
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 2000)
    body = EncodedBody(own_pool, None, None, in_memory=3000)
    body.write(GOOD * 3)
    body.finish()
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        body.close()
        waiter = threading.Thread(target=body.wait, daemon=True)
        waiter.start()
        waiter.join(timeout=5)
        assert not waiter.is_alive()
        assert poll(lambda: all(not w.waiting for w in own_pool._workers))  # the late parts have come back
        own_pool.close()  # and their callbacks have run
    assert not [r for r in caplog.records if r.name == "concurrent.futures"]  # "exception calling callback"


def test_given_a_timezone_it_cannot_load_when_served_then_answers_an_error_and_goes_on_until_eof(frozen_clock):
    """The worker loop answers every job in order, an error for a block it cannot encode, and ends at EOF."""
    jobs_in, jobs_out = Pipe(duplex=False)
    answers_in, answers_out = Pipe(duplex=False)
    worker = threading.Thread(target=serve, args=(jobs_in, answers_out), daemon=True)
    worker.start()
    try:
        for header in (b'["No/Such_Zone", null]', b"[null, null]"):
            jobs_out.send_bytes(header)
            jobs_out.send_bytes(EVENT_LINES[0])
        failed = orjson.loads(answers_in.recv_bytes())
        assert isinstance(failed, dict) and "No/Such_Zone" in failed["error"] and answers_in.recv_bytes() == b""
        lines, tally = encode_block(EVENT_LINES[0], make_builder())
        assert orjson.loads(answers_in.recv_bytes()) == [tally.count, tally.bad, tally.first_bad, tally.lines]
        assert tally.count == 1
        assert answers_in.recv_bytes() == lines
    finally:
        jobs_out.close()
    worker.join(timeout=5)
    assert not worker.is_alive()


class _HeldPool:
    """A stand-in pool whose blocks finish only when the test says: the body's backpressure is the subject."""

    def __init__(self) -> None:
        self.futures: list[cf.Future] = []

    def submit(self, block: bytes, legacy_timezone: str | None, not_before: str | None) -> cf.Future:
        future: cf.Future = cf.Future()
        self.futures.append(future)
        return future


def test_given_an_early_block_held_up_when_more_arrive_then_no_more_than_the_bound_are_sent(monkeypatch):
    """Blocks that finish before an earlier one wait in memory: the body stops sending at the bound."""
    monkeypatch.setattr(bodies, "BLOCK_BYTES", 10)
    monkeypatch.setattr(bodies, "MAX_UNSTORED_BLOCKS", 3)
    pool = _HeldPool()
    body = bodies.EncodedBody(pool, None, None, 1 << 16)  # type: ignore[arg-type]
    writer = threading.Thread(target=body.write, args=(b"0123456789abc\n" * 10,), daemon=True)
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and len(pool.futures) == 3  # the fourth block waits
    for future in pool.futures[1:]:
        future.set_result((b"x\n", Tally(1, lines=1)))
    writer.join(0.3)
    assert writer.is_alive() and len(pool.futures) == 3  # still: the first block is not stored yet
    pool.futures[0].set_result((b"x\n", Tally(1, lines=1)))
    deadline = time.monotonic() + 5
    while writer.is_alive() and time.monotonic() < deadline:
        for future in pool.futures:
            if not future.done():
                future.set_result((b"x\n", Tally(1, lines=1)))
        writer.join(0.05)
    assert not writer.is_alive()
    body.finish()
    for future in pool.futures:
        if not future.done():
            future.set_result((b"x\n", Tally(1, lines=1)))
    assert body.wait().count == len(pool.futures) == 10
    body.close()
