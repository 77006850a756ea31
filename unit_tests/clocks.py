"""A clock for tests: time moves only when something sleeps, so waits of an hour take no time."""

from __future__ import annotations

import threading

from source_mixpanel_export.clock import Clock

WALL_START = 1_711_929_600.0  # 2024-04-01T00:00:00Z


class FakeClock:
    """Monotonic and wall time that advance by what is slept; every sleep is recorded.

    A sleep ends at the time the sleeping thread last read plus the wait, so threads that wait
    together (as parallel downloads do for the budget) do not add up their waits.
    """

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._seen = threading.local()

    def monotonic(self) -> float:
        self._seen.now = self.now
        return self.now

    def wall(self) -> float:
        return WALL_START + self.now

    def sleep(self, seconds: float) -> bool:
        with self._lock:
            self.slept.append(seconds)
            self.now = max(self.now, getattr(self._seen, "now", self.now) + max(seconds, 0.0))
        return self.stop.is_set()

    def clock(self) -> Clock:
        return Clock(self.monotonic, self.wall, self.sleep)
