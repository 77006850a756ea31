"""Ordered prefetch: the next windows download while the current one is emitted.

Windows are handed on strictly in plan order, so a STATE emitted after a window always covers only
windows already emitted. Network and decompression (which release the GIL) overlap with parsing.
Each window is planned only when a download slot frees, after what the windows before it returned
(windows.Planner), so the volume seen so far sizes it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import queue as queues
import threading
from collections.abc import Callable, Iterator

from .client import Download
from .windows import Listed, Planner, Window

# Called with a window whose fetch raised one of the `replaceable` errors: returns the windows to
# fetch instead (possibly none), or raises to end the sync.
Replace = Callable[[Window, Exception], list[Window]]


class DaemonPool:
    """A fixed set of daemon worker threads.

    concurrent.futures' pool joins its threads when the interpreter exits, so a sync that fails while
    another window waits for Mixpanel's first byte would linger for up to request_timeout_seconds
    after its error was reported. Daemon threads end with the process instead.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._tasks: queues.SimpleQueue[tuple[cf.Future[Download], Callable[[Window], Download], Window] | None]
        self._tasks = queues.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fetch: Callable[[Window], Download], window: Window) -> cf.Future[Download]:
        """Queue one fetch; the future holds its download or its exception."""
        future: cf.Future[Download] = cf.Future()
        self._tasks.put((future, fetch, window))
        return future

    def shutdown(self) -> None:
        """Let every worker finish its current task and stop (queued tasks should be cancelled first)."""
        for _ in self._threads:
            self._tasks.put(None)

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fetch, window = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fetch(window))
            except BaseException as exc:  # handed to the consumer through the future
                future.set_exception(exc)


def fetch_in_order(
    planner: Planner | Listed,
    fetch: Callable[[Window], Download],
    workers: int,
    replace: Replace,
    replaceable: tuple[type[Exception], ...],
) -> Iterator[Download]:
    """Yield each planned window's download in order, keeping `workers` downloads under way (never more)."""
    pool = DaemonPool(workers, "mixpanel-export")
    inflight: collections.deque[tuple[Window, cf.Future[Download]]] = collections.deque()

    def fill() -> None:
        while len(inflight) < workers and (planner.ready() or not inflight):
            window = planner.next()
            if window is None:
                return
            inflight.append((window, pool.submit(fetch, window)))

    try:
        fill()
        while inflight:
            window, future = inflight.popleft()
            try:
                download = future.result()
            except replaceable as exc:
                # Submitted in order, so the first part (the one wanted next) starts first.
                parts = [(part, pool.submit(fetch, part)) for part in replace(window, exc)]
                inflight.extendleft(reversed(parts))
                fill()
                continue
            planner.observe(window, download.events, download.size)
            fill()  # keep every slot busy while this window is emitted
            try:
                yield download
            finally:
                download.close()
    finally:
        for _, future in inflight:
            future.cancel()
        pool.shutdown()
        for _, future in inflight:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().close()
