"""Mixpanel's per-project query budgets (the export's 60 an hour and 3 a second; the Query API's 60 an hour
and 5 at once, kept apart), enforced before a request is sent.

Not the CDK's `MovingWindowCallRatePolicy`: it keeps time with pyrate_limiter's own wall clock, which
cannot be injected, so its waits could only be tested by waiting. The same moving windows are a few
lines over an injected clock (clock.py). Waiting happens here so that a long wait is announced with
when the sync resumes, and so that a 429's Retry-After holds back every download at once.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading

from .clock import Clock

LONG_WAIT_SECONDS = 60.0
# Mixpanel counts requests when they arrive, we when they leave: a request that is slow to connect
# would otherwise land in the same second (or hour) as a later one. Each window is widened by this.
ARRIVAL_MARGIN_SECONDS = 0.25
HOUR_SECONDS = 3600.0


class RateBudget:
    """Blocks the calling thread until a request fits both the per-second and per-hour rates."""

    def __init__(
        self, per_second: int, per_hour: int, clock: Clock, logger: logging.Logger | None = None, name: str = "export"
    ) -> None:
        """`name` says in logs whose budget it is: each API has its own (the export's, the Query API's)."""
        self._name = name
        self._rates = [(per_second, 1.0 + ARRIVAL_MARGIN_SECONDS), (per_hour, HOUR_SECONDS + ARRIVAL_MARGIN_SECONDS)]
        self._sent: collections.deque[float] = collections.deque()  # send times within the longest interval
        self._per_hour = per_hour
        self._held_until = 0.0  # monotonic time before which nothing is sent (a 429's Retry-After)
        self._lock = threading.Lock()
        self._clock = clock
        self._logger = logger or logging.getLogger("airbyte")

    def acquire(self) -> bool:
        """Wait for room in the budget and count one request against it; False if the sync stopped meanwhile."""
        while True:
            with self._lock:
                now = self._clock.monotonic()
                wait, held = self._wait(now)
                if wait <= 0:
                    self._sent.append(now)
                    return True
            if wait >= LONG_WAIT_SECONDS and not held:
                resume = dt.datetime.fromtimestamp(self._clock.wall() + wait, dt.UTC)
                self._logger.info(
                    f"Mixpanel's {self._name} budget ({self._per_hour} queries per hour) is used up: "
                    f"waiting {wait / 60:.0f} min, the sync continues at {resume:%H:%M:%S} UTC."
                )
            if self._clock.sleep(wait):
                return False

    def _wait(self, now: float) -> tuple[float, bool]:
        """Seconds until a request may leave, and whether a hold (not a rate) is the reason."""
        held = self._held_until - now
        if held > 0:
            return held, True
        longest = max(interval for _, interval in self._rates)
        while self._sent and self._sent[0] <= now - longest:
            self._sent.popleft()
        wait = 0.0
        for limit, interval in self._rates:  # the limit-th latest request must have left the interval
            if len(self._sent) >= limit:
                wait = max(wait, self._sent[-limit] + interval - now)
        return wait, False

    def hold(self, seconds: float) -> None:
        """Send nothing for `seconds` from now (Mixpanel answered 429): holds every caller of acquire()."""
        with self._lock:
            self._held_until = max(self._held_until, self._clock.monotonic() + seconds)

    def left_this_hour(self) -> int:
        """How many more requests the hourly budget allows right now (for progress logs)."""
        with self._lock:
            now = self._clock.monotonic()
            recent = sum(1 for sent in self._sent if sent > now - HOUR_SECONDS)
            return max(self._per_hour - recent, 0)
