"""Worker processes that turn blocks of export lines into RECORD lines, so records use every core.

A record costs ~6 µs of Python (split, parse, build, serialize) and the GIL lets one thread of a process
run Python at a time: download threads can only overlap network and gzip with it. So `read` starts a
few worker processes (`python -m source_mixpanel_export.encode`) before it imports the CDK, which lets
them start up on another core meanwhile, and download threads hand them blocks as bodies arrive.
A worker can also fetch a whole window itself (`fetch`, used by the head start: headstart.py).

Plain pipes with length-prefixed messages (frames.py), not a multiprocessing pool: a pool's workers start
as a copy of the main module (here the CDK's whole import) and its helper threads pickle every block. A worker
answers its jobs in order, so each worker's futures wait in a FIFO. A worker's stdout is its pipe to
us, so it can never write into the Airbyte stream; when this process dies, its workers read EOF and exit.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import fcntl
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .frames import Frames
from .records import Tally

WORKERS_VARIABLE = "SOURCE_MIXPANEL_EXPORT_WORKERS"
MAX_IN_FLIGHT = 2  # jobs per worker: one being encoded, one waiting in its pipe
PIPE_BYTES = 1 << 20  # pipe capacity asked for, so a block crosses in few system calls
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

Encoded = tuple[bytes, Tally]


class WorkerFailed(RuntimeError):
    """A worker could not encode a block, or is gone."""


def worker_count() -> int:
    """One worker per core, at most 4; none on one core, where they could only take turns with us.

    SOURCE_MIXPANEL_EXPORT_WORKERS, when set to a whole number, says how many instead (0: records are
    encoded by the main process).
    """
    setting = os.environ.get(WORKERS_VARIABLE, "").strip()
    if setting.isdigit():
        return min(int(setting), 16)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4) if cores > 1 else 0


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen[bytes]
    jobs: Frames
    answers: Frames
    waiting: collections.deque[tuple[cf.Future[Any], str]] = field(default_factory=collections.deque)
    in_flight: int = 0
    write_lock: threading.Lock = field(default_factory=threading.Lock)


class EncoderPool:
    """Encoding workers shared by every download of a sync."""

    def __init__(self, processes: int) -> None:
        self._ready = threading.Condition()
        self._closed = False
        self._failure: str | None = None
        self._workers = [self._start() for _ in range(processes)]
        self._readers = [
            threading.Thread(target=self._read_answers, args=(worker,), name=f"encoder-{i}", daemon=True)
            for i, worker in enumerate(self._workers)
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _start() -> _Worker:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "source_mixpanel_export.encode"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert process.stdin is not None and process.stdout is not None
        for pipe in (process.stdin, process.stdout):
            with contextlib.suppress(OSError, AttributeError):  # a bigger pipe is an optimisation only
                fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        # The Frames own duplicates, so Popen's file objects can be closed with the process.
        jobs = Frames(os.dup(process.stdin.fileno()))
        answers = Frames(os.dup(process.stdout.fileno()))
        process.stdin.close()
        process.stdout.close()
        return _Worker(process, jobs, answers)

    def submit(self, block: bytes, legacy_timezone: str | None, not_before: str | None) -> cf.Future[Encoded]:
        """Queue a block of whole lines; blocks while every worker has MAX_IN_FLIGHT jobs (backpressure)."""
        return self._post(orjson.dumps([legacy_timezone, not_before]), block, None, "encode")

    def fetch(self, spec: dict[str, Any], worker: int) -> cf.Future[dict[str, Any]]:
        """Have worker number `worker` fetch and encode a window (see remote.py); its jobs run in order."""
        return self._post(orjson.dumps({"fetch": spec}), b"", worker % len(self._workers), "fetch")

    @property
    def processes(self) -> int:
        """How many workers there are."""
        return len(self._workers)

    def _post(self, header: bytes, block: bytes, pinned: int | None, kind: str) -> cf.Future[Any]:
        with self._ready:
            while True:
                if self._failure is not None:
                    raise WorkerFailed(self._failure)
                if self._closed:
                    raise WorkerFailed("the encoding workers were stopped")
                worker = self._pick(pinned)
                if worker is not None and worker.in_flight < MAX_IN_FLIGHT:
                    break
                self._ready.wait()
            worker.in_flight += 1
            future: cf.Future[Any] = cf.Future()
            worker.waiting.append((future, kind))  # with _ready held: _fail sees every future queued before it
            worker.write_lock.acquire()  # taken before letting go of _ready: futures queue in write order
        try:
            worker.jobs.send_bytes(header)
            worker.jobs.send_bytes(block)
        except OSError as exc:
            self._fail(f"an encoding worker is gone ({type(exc).__name__})")
        finally:
            worker.write_lock.release()
        return future

    def _pick(self, pinned: int | None) -> _Worker | None:
        """The pinned worker, or for a block the least busy worker with no fetch in its queue: a block
        behind a fetch would wait for a whole window, and the blocks after it for that block."""
        if pinned is not None:
            return self._workers[pinned]
        free = [w for w in self._workers if not any(kind == "fetch" for _, kind in w.waiting)]
        return min(free, key=lambda w: w.in_flight) if free else None

    def _read_answers(self, worker: _Worker) -> None:
        """Hand each answer to the oldest waiting future of its worker; on EOF, fail the pool."""
        while True:
            try:
                header = orjson.loads(worker.answers.recv_bytes())
                lines = worker.answers.recv_bytes()
            except (EOFError, OSError):
                if not self._closed:
                    code = worker.process.poll()
                    self._fail(f"an encoding worker ended unexpectedly (exit status {code}; out of memory?)")
                return
            with self._ready:
                if not worker.waiting:  # the pool failed meanwhile and failed this job's future already
                    continue
                future, kind = worker.waiting.popleft()
                worker.in_flight -= 1
                self._ready.notify_all()
            if isinstance(header, dict) and "error" in header:
                future.set_exception(WorkerFailed(f"an encoding worker failed: {header['error']}"))
            elif kind == "fetch":
                future.set_result(header)
            else:
                count, bad, first_bad, read = header
                future.set_result((lines, Tally(count, bad, first_bad, read)))

    def _fail(self, reason: str) -> None:
        with self._ready:
            if self._failure is None:
                self._failure = reason
            waiting = [f for w in self._workers for f, _ in w.waiting]
            for worker in self._workers:
                worker.waiting.clear()
                worker.in_flight = 0
            self._ready.notify_all()
        for future in waiting:
            if not future.done():
                future.set_exception(WorkerFailed(reason))

    def close(self) -> None:
        """Stop the workers now, busy or not (a sync that ends early should not wait for them)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for worker in self._workers:  # a download blocked writing to one gets EPIPE and lets go
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            worker.process.wait()
        for worker in self._workers:
            with worker.write_lock:
                worker.jobs.close()
        for reader in self._readers:
            reader.join(timeout=5)
        for worker in self._workers:
            worker.answers.close()
        self._fail("the encoding workers were stopped")

    def __enter__(self) -> EncoderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
