"""Ordered prefetch: the next windows download while the current one is emitted.

Windows are handed on strictly in plan order, so a STATE emitted after a window always covers only
windows already emitted. Network and decompression (which release the GIL) overlap with parsing.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
from collections.abc import Callable, Iterable, Iterator

from .client import Download
from .windows import Window

# Called with a window whose fetch raised one of the `replaceable` errors: returns the windows to
# fetch instead (possibly none), or raises to end the sync.
Replace = Callable[[Window, Exception], list[Window]]


def fetch_in_order(
    windows: Iterable[Window],
    fetch: Callable[[Window], Download],
    workers: int,
    replace: Replace,
    replaceable: tuple[type[Exception], ...],
) -> Iterator[Download]:
    """Yield each window's download in order, keeping up to `workers` downloads under way."""
    pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mixpanel-export")
    queue = collections.deque(windows)
    inflight: collections.deque[tuple[Window, cf.Future[Download]]] = collections.deque()
    try:
        while queue or inflight:
            while queue and len(inflight) < workers:
                window = queue.popleft()
                inflight.append((window, pool.submit(fetch, window)))
            window, future = inflight.popleft()
            try:
                download = future.result()
            except replaceable as exc:
                for part in reversed(replace(window, exc)):
                    inflight.appendleft((part, pool.submit(fetch, part)))
                continue
            try:
                yield download
            finally:
                download.close()
    finally:
        for _, future in inflight:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)
        for _, future in inflight:
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().close()
