"""Time as a sync sees it, injected: the read, the budget and the retries never call the clock directly,
so tests can run an hour of rate limits and backoff in no time."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Clock:
    """`monotonic` for intervals, `wall` for epoch seconds, `sleep` returning True when woken because
    the sync is stopping (a threading.Event's wait), so a long wait never outlives the sync."""

    monotonic: Callable[[], float]
    wall: Callable[[], float]
    sleep: Callable[[float], bool]

    @classmethod
    def real(cls, stop: threading.Event) -> Clock:
        """The machine's clocks (the calendar's through `utc_now`); sleeping is waiting on `stop`."""
        return cls(time.monotonic, lambda: utc_now().timestamp(), stop.wait)


class Stop(threading.Event):
    """A sync's stop (set on SIGTERM) that also sets every event `linked()` to it.

    Each stream is read with an event of its own, linked to the sync's, because a reader sets its
    event when it ends (to stop its downloads): a stream that ended must not stop the one after it,
    while a SIGTERM must stop whichever is running. Setting happens under a reentrant lock: a signal
    handler may set the stop while this thread is inside `linked`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._linked: list[threading.Event] = []
        self._lock = threading.RLock()

    def linked(self) -> threading.Event:
        """A new event that is set when this one is (at once, if it is already)."""
        own = threading.Event()
        with self._lock:
            self._linked.append(own)
            if self.is_set():
                own.set()
        return own

    def set(self) -> None:
        with self._lock:
            super().set()
            for own in self._linked:
                own.set()


def utc_now() -> dt.datetime:
    """The calendar's now, which decides what today is and what lies in the future (config and state).

    Every default `now` in the package comes from here, looked up as `clock.utc_now` when called: the one
    reader of the calendar, so the integration tests can run the real CLI at the fake Mixpanel's clock.
    """
    return dt.datetime.now(dt.UTC)
