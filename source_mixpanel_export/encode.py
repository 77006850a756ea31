"""RECORD lines from export lines: the per-record work, shared by the main process and the encoding workers.

`record_json` and `record_lines` write the bytes the CDK's serializer writes (see writer.py for the two
deliberate exceptions). `encode_block` turns a block of export lines into RECORD lines in one call, so
it can run in a worker process (`python -m source_mixpanel_export.encode`, see workers.py): a job is two
messages on stdin (frames.py; a JSON header, then the block), an answer two messages on stdout (a JSON tally, then the
RECORD lines). A job can also be a whole window to fetch and encode (the head start: remote.py). This
module imports neither the CDK nor requests, so a worker is ready in ~0.1 s.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Protocol

import orjson

from .frames import Frames
from .lines import iter_line_batches
from .malloc import keep_heap_small
from .records import STREAM_NAME, Build, Tally, make_builder, window_records_of_lines

# Workers yield the CPU to the main process, whose work (downloads, writing, and while the head start
# runs, importing the CDK) the whole pipeline waits on: measured 1.71 s -> 1.65 s for the benchmark.
WORKER_NICENESS = 10
RECORD_PREFIX = b'{"type":"RECORD","record":{"stream":"' + STREAM_NAME.encode() + b'","data":'
_INT64_MIN, _UINT64_END = -(2**63), 2**64  # the integers orjson writes


def record_json(data: dict[str, Any]) -> bytes:
    """A record's data as compact JSON; integers orjson refuses are written as their exact digits."""
    try:
        return orjson.dumps(data)
    except TypeError:  # integers beyond 64 bits (orjson refuses them): the same JSON value, other bytes
        return lossless_json(data)


def record_lines(bodies: list[bytes], emitted_at_ms: int) -> bytes:
    """RECORD lines around record data already in JSON, all with the same `emitted_at`."""
    end = b',"emitted_at":%d}}\n' % emitted_at_ms
    return RECORD_PREFIX + (end + RECORD_PREFIX).join(bodies) + end if bodies else b""


def now_ms() -> int:
    """The time to write as a record's `emitted_at`."""
    return time.time_ns() // 1_000_000


def encode_block(block: bytes, build: Build) -> tuple[bytes, Tally]:
    """The RECORD lines of a block of whole export lines, and its tally (line numbers from 1).

    Runs of plain events go through one list comprehension each, with no per-line bookkeeping (~35%
    less time per record than a loop that counts lines). A run holding anything else (a blank or bad
    line, an event before the start time) and each line holding an integer beyond 64 bits go line by
    line instead, which counts bad lines and writes such integers exactly.
    """
    tally = Tally()
    bodies: list[bytes] = []
    loads, dumps = orjson.loads, orjson.dumps
    for lines, exact in iter_line_batches((block,)):
        if not exact:
            try:
                batch = [dumps(build(loads(line))) for line in lines]
            except (ValueError, TypeError):  # not JSON or not an event (blank lines too), or not writable as is
                batch = None
            if batch is not None and b"null" not in batch:  # a builder with a start time gives None: null
                bodies += batch
                tally.count += len(batch)
                tally.lines += len(lines)
                continue
        _encode_carefully(lines, exact, build, tally, bodies)
    return record_lines(bodies, now_ms()), tally


def _encode_carefully(lines: list[bytes], exact: bool, build: Build, tally: Tally, bodies: list[bytes]) -> None:
    """Line by line: blank lines skipped, bad ones counted in `tally`, integers beyond 64 bits kept exact."""
    for record in window_records_of_lines(lines, exact, build, tally):
        try:
            bodies.append(orjson.dumps(record))
        except TypeError:
            bodies.append(lossless_json(record))


def lossless_json(data: Any) -> bytes:
    """Compact JSON of a value holding integers orjson refuses: they are written as their exact digits."""
    try:
        return orjson.dumps(_exact_ints(data))
    except TypeError:  # e.g. a lone surrogate in a string (only the stdlib parser lets one through)
        return json.dumps(data, separators=(",", ":")).encode()


def _exact_ints(value: Any) -> Any:
    """`value` with every integer beyond 64 bits replaced by an orjson.Fragment of its digits.

    Only the containers on the way to such an integer are copied; the input is left as it is.
    """
    changed: Any = None
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is int:
            if _INT64_MIN <= item < _UINT64_END:
                continue
            new = orjson.Fragment(b"%d" % item)
        elif kind is dict or kind is list:
            new = _exact_ints(item)
            if new is item:
                continue
        else:
            continue
        if changed is None:
            changed = dict(value) if type(value) is dict else list(value)
        changed[key] = new
    return value if changed is None else changed


class Channel(Protocol):
    """One direction of a worker's pipe: Frames, or a multiprocessing Connection."""

    def send_bytes(self, data: bytes) -> None: ...

    def recv_bytes(self) -> bytes: ...


def serve(jobs: Channel, answers: Channel) -> None:
    """The worker's loop: do each job, answer in order, end when the main process closes the pipe.

    An encoding job's header is `[legacy_timezone, not_before]` and its block the lines; the answer's
    header is `[count, bad, first_bad, lines]` and then the RECORD lines, or `{"error": text}` when the
    block could not be encoded (the main process raises it). A fetch job's header is `{"fetch": spec}`
    (see remote.py) with an empty block; its answer is remote.fetch_window's result and no lines.
    """
    builders: dict[tuple[str | None, str | None], Build] = {}
    refused: set[int] = set()  # head starts one of whose requests failed: send no more of them (a 429 asks
    # for a pause, a 401 will repeat); the reader takes over those windows
    while True:
        try:
            header = jobs.recv_bytes()
            block = jobs.recv_bytes()
        except EOFError:
            return
        try:
            job = orjson.loads(header)
            if isinstance(job, dict):
                from .remote import fetch_window  # only workers that fetch import urllib3

                spec = job["fetch"]
                if spec["batch"] in refused:
                    result = {"ok": False, "kind": "none", "problem": "not sent after an earlier request failed"}
                else:
                    result = fetch_window(spec)
                    if result.get("kind") in ("status", "retriable"):
                        refused.add(spec["batch"])
                lines, answer = b"", orjson.dumps(result)
            else:
                legacy_timezone, not_before = job
                key = (legacy_timezone, not_before)
                build = builders.get(key) or builders.setdefault(key, make_builder(legacy_timezone, not_before))
                lines, tally = encode_block(block, build)
                answer = orjson.dumps([tally.count, tally.bad, tally.first_bad, tally.lines])
        except Exception as exc:  # handed to the main process, which fails the window with it
            lines, answer = b"", orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
        try:
            answers.send_bytes(answer)
            answers.send_bytes(lines)
        except (BrokenPipeError, OSError):  # the main process is gone
            return


def main() -> None:
    """Serve jobs on stdin, answers on stdout (a pipe to the main process, never Airbyte's stdout)."""
    os.nice(WORKER_NICENESS)
    keep_heap_small()
    serve(Frames(sys.stdin.fileno()), Frames(sys.stdout.fileno()))


if __name__ == "__main__":
    main()
