"""Ordered prefetch: the next windows download while the current one is emitted.

Windows are handed on strictly in plan order, so a STATE emitted after a window always covers only
windows already emitted. Network and decompression (which release the GIL) overlap with parsing.
Each window is planned only when a download slot frees, after what the windows before it returned
(plan.Plan), so the volume seen so far sizes it.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import queue as queues
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from .client import Download
from .windows import Window


class Windows(Protocol):
    """What hands out the windows and decides their fate (plan.Plan)."""

    def ready(self) -> bool:
        """Whether another window may be sent while others are under way."""

    def next(self) -> Window | None:
        """The next window, or None when none is left (or none may be sent yet)."""

    def observe(self, window: Window, download: Download) -> bool:
        """A window was read; whether its records count."""

    def replace(self, window: Window, exc: Exception) -> list[Window] | None:
        """What to fetch instead of a window whose fetch raised `exc`; None: the sync ends with `exc`."""


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


def fetch_in_order(plan: Windows, fetch: Callable[[Window], Download], workers: int) -> Iterator[Download]:
    """Yield each planned window's download in order, keeping `workers` downloads under way (never more).

    What a window becomes is the plan's to say (plan.Plan): it is told of every download before that
    is yielded, and asked what to fetch instead of a window whose fetch failed.
    """
    pool = DaemonPool(workers, "mixpanel-export")
    inflight: collections.deque[tuple[Window, cf.Future[Download]]] = collections.deque()

    def fill() -> None:
        while len(inflight) < workers and (plan.ready() or not inflight):
            window = plan.next()
            if window is None:
                return
            inflight.append((window, pool.submit(fetch, window)))

    try:
        fill()
        while inflight:
            window, future = inflight.popleft()
            try:
                download = future.result()
            except Exception as exc:
                parts = plan.replace(window, exc)
                if parts is None:
                    raise
                # Submitted in order, so the first part (the one wanted next) starts first.
                inflight.extendleft(reversed([(part, pool.submit(fetch, part)) for part in parts]))
                fill()
                continue
            counts = plan.observe(window, download)
            fill()  # keep every slot busy while this window is emitted
            try:
                if counts:
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
