"""Where a window's body goes while it downloads, until it is known complete and can be emitted.

`RawBody` keeps the decompressed lines for the main thread to parse. `EncodedBody` cuts them into
blocks of whole lines as they arrive and has the encoding workers turn each block into RECORD lines,
so by the time the download ends most of its records are ready to copy to stdout. Either way the
result waits in a spill file, in memory up to a bound and on disk past it, and nothing of it is
emitted before the whole body has been checked.
"""

from __future__ import annotations

import concurrent.futures as cf
import tempfile
import threading
from collections.abc import Iterator
from typing import IO

from .lines import BlockCutter
from .records import Tally
from .workers import Encoded, EncoderPool, WorkerFailed

CHUNK_BYTES = 1 << 18
BLOCK_BYTES = 1 << 18  # about 450 events: small enough to spread over workers and stay small in them
MAX_UNSTORED_BLOCKS = 8  # blocks of a body sent to the workers but not yet in its spill file


class RawBody:
    """The decompressed body as it came, for parsing on the main thread."""

    def __init__(self, in_memory: int) -> None:
        self._spill: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=in_memory)

    def write(self, data: bytes) -> None:
        """The next piece of the decompressed body."""
        self._spill.write(data)

    def finish(self) -> None:
        """The body is complete (nothing to do: it is all in the spill file)."""

    def chunks(self) -> Iterator[bytes]:
        """The body in large chunks, from the start."""
        self._spill.seek(0)
        return iter(lambda: self._spill.read(CHUNK_BYTES), b"")

    def close(self) -> None:
        """Free the spill file."""
        self._spill.close()


class EncodedBody:
    """A body being encoded block by block; its RECORD lines collect in order in a spill file.

    Only the tallies are kept per block: a block's RECORD lines are dropped once they are in the spill
    file (a future would hold them as long as it lives).
    """

    def __init__(
        self, pool: EncoderPool, legacy_timezone: str | None, not_before: str | None, in_memory: int
    ) -> None:
        self._pool = pool
        self._options = (legacy_timezone, not_before)
        self._cutter = BlockCutter(BLOCK_BYTES)
        self._submitted = 0
        self._arrived: dict[int, Encoded] = {}  # parts that finished before an earlier one
        self._tallies: list[Tally] = []  # of the parts in the spill file, in order
        self._failure: BaseException | None = None
        self._stored = threading.Condition()  # notified as parts reach the spill file
        self._closed = False
        self._spill: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=in_memory)
        self.count = 0  # records in the RECORD lines, once wait() has returned

    def write(self, data: bytes) -> None:
        """The next piece of the decompressed body: every full block of whole lines goes to a worker."""
        for block in self._cutter.blocks(data):
            self._submit(block)

    def finish(self) -> None:
        """The body is complete: the last block goes too."""
        for block in self._cutter.last():
            self._submit(block)

    def wait(self) -> Tally:
        """The window's tally once every block is encoded and stored; a worker's failure is raised here."""
        with self._stored:
            self._stored.wait_for(
                lambda: len(self._tallies) == self._submitted or self._failure is not None or self._closed
            )
            if self._failure is not None:
                raise self._failure
            tallies = list(self._tallies)
        tally = Tally()
        for part in tallies:
            tally = tally.then(part)
        self.count = tally.count
        return tally

    def chunks(self) -> Iterator[bytes]:
        """The RECORD lines (after wait), in large chunks that each end at a line end."""
        return _line_chunks(self._spill)

    def close(self) -> None:
        """Free the spill file; workers still encoding for this body are left to finish unheard."""
        with self._stored:
            self._closed = True
            self._arrived.clear()
            self._spill.close()
            self._stored.notify_all()

    def _submit(self, block: bytes) -> None:
        # Backpressure: blocks that finish before an earlier one wait in memory, so only a few may be
        # under way (an earlier one held up would otherwise let the later ones pile up without bound).
        with self._stored:
            self._stored.wait_for(
                lambda: self._submitted - len(self._tallies) < MAX_UNSTORED_BLOCKS
                or self._failure is not None
                or self._closed
            )
        index = self._submitted
        future = self._pool.submit(block, *self._options)
        self._submitted += 1
        future.add_done_callback(lambda done: self._store(index, done))

    def _store(self, index: int, done: cf.Future[Encoded]) -> None:
        """Runs when a part is encoded: append it, and any later ones waiting for it, to the spill file."""
        with self._stored:
            if self._closed:
                return
            failure = done.exception()
            if failure is not None:
                self._failure = self._failure or failure
            else:
                self._arrived[index] = done.result()
                try:
                    while len(self._tallies) in self._arrived:
                        lines, tally = self._arrived[len(self._tallies)]
                        self._spill.write(lines)
                        del self._arrived[len(self._tallies)]
                        self._tallies.append(tally)
                except OSError as exc:  # e.g. a full disk: fail the window rather than lose a block
                    self._failure = self._failure or WorkerFailed(f"could not write encoded records ({exc})")
            self._stored.notify_all()


class EncodedFile:
    """RECORD lines an encoding worker wrote to a file (a head start's window, see headstart.py)."""

    def __init__(self, file: IO[bytes], tally: Tally) -> None:
        self._file = file
        self._tally = tally
        self.count = tally.count

    def wait(self) -> Tally:
        """The tally the worker reported (the lines are all there already)."""
        return self._tally

    def chunks(self) -> Iterator[bytes]:
        """The RECORD lines, in large chunks that each end at a line end."""
        return _line_chunks(self._file)

    def close(self) -> None:
        """Free the file."""
        self._file.close()


ENCODED = (EncodedBody, EncodedFile)  # a window's RECORD lines, ready to copy to stdout


def _line_chunks(file: IO[bytes]) -> Iterator[bytes]:
    file.seek(0)
    rest = b""
    while chunk := file.read(CHUNK_BYTES):
        chunk = rest + chunk if rest else chunk
        cut = chunk.rfind(b"\n") + 1
        rest = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if rest:
        yield rest
