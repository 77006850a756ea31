"""Mixpanel's per-project query budget (60 an hour, 3 a second), enforced before a request is sent.

Built on the CDK's call-rate policy; the wait itself happens here rather than inside the CDK's
blocking `APIBudget.acquire_call`, so that a long wait can be announced with when the sync resumes,
and so that a 429's Retry-After can hold back every worker at once.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

LONG_WAIT_SECONDS = 60.0
# Mixpanel counts requests when they arrive, we when they leave: a request that is slow to connect
# would otherwise land in the same second (or hour) as a later one. Each window is widened by this.
ARRIVAL_MARGIN = dt.timedelta(milliseconds=250)


class RateBudget:
    """Blocks the calling thread until a request fits both the per-second and per-hour rates.

    `sleep` may be an Event's wait(): when it returns True the sync is stopping and acquire() returns.
    """

    def __init__(
        self,
        per_second: int,
        per_hour: int,
        hour: dt.timedelta = dt.timedelta(hours=1),
        logger: logging.Logger | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        # Imported here, not at the top: the head start (headstart.py) uses this module's constants
        # before the CDK is imported.
        from airbyte_cdk.sources.streams.call_rate import CallRateLimitHit, MovingWindowCallRatePolicy, Rate

        self._limit_hit = CallRateLimitHit
        rates = [Rate(per_second, dt.timedelta(seconds=1) + ARRIVAL_MARGIN), Rate(per_hour, hour + ARRIVAL_MARGIN)]
        if hour <= dt.timedelta(seconds=1):
            rates = rates[1:]
        self._policy = MovingWindowCallRatePolicy(rates=rates, matchers=[])
        self._per_hour = per_hour
        self._hour = hour.total_seconds()
        self._sent: collections.deque[float] = collections.deque()
        self._held_until = 0.0  # monotonic time before which nothing is sent (a 429's Retry-After)
        self._lock = threading.Lock()
        self._logger = logger or logging.getLogger("airbyte")
        self._sleep = sleep

    def acquire(self) -> None:
        """Wait for room in the budget, then count one request against it."""
        while True:
            with self._lock:
                held = self._held_until - time.monotonic()
            if held > 0:
                if self._sleep(held):
                    return
                continue
            try:
                self._policy.try_acquire(None, weight=1)
            except self._limit_hit as hit:
                wait = max(hit.time_to_wait.total_seconds(), 0.01)
                if wait >= LONG_WAIT_SECONDS:
                    resume = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=wait)
                    self._logger.info(
                        f"Mixpanel's export budget ({self._per_hour} queries per hour) is used up: "
                        f"waiting {wait / 60:.0f} min, the sync continues at {resume:%H:%M:%S} UTC."
                    )
                if self._sleep(wait):  # woken early: the sync is stopping
                    return
                continue
            with self._lock:
                self._sent.append(time.monotonic())
            return

    def hold(self, seconds: float) -> None:
        """Send nothing for `seconds` from now (Mixpanel answered 429): holds every caller of acquire()."""
        with self._lock:
            self._held_until = max(self._held_until, time.monotonic() + seconds)

    def left_this_hour(self) -> int:
        """How many more requests the hourly budget allows right now (for progress logs)."""
        with self._lock:
            horizon = time.monotonic() - self._hour
            while self._sent and self._sent[0] <= horizon:
                self._sent.popleft()
            return max(self._per_hour - len(self._sent), 0)
