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


def utc_now() -> dt.datetime:
    """The calendar's now, which decides what today is and what lies in the future (config and state).

    Every default `now` in the package comes from here, looked up as `clock.utc_now` when called: the one
    reader of the calendar, so the integration tests can run the real CLI at the fake Mixpanel's clock.
    """
    return dt.datetime.now(dt.UTC)
