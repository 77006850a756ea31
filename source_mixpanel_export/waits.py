"""The wait before a failed request is sent again: the one place a retry is slept, logged and given up on.

retry.py says what a failure means and how long to wait (pure); this sleeps that long on the sync's
clock, holds the whole budget after a 429 (every request waits, not only the one that failed), and once
the retry budget (max_retry_seconds) would be exceeded, ends the sync with an error that says what was
kept. The export client (client.py) and the Engage client (engage.py) both retry through it.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable

from .budget import LONG_WAIT_SECONDS, RateBudget
from .clock import Clock
from .errors import transient_error
from .retry import Retriable, backoff_seconds


class Cancelled(Exception):
    """The sync is stopping: abandon this request quietly."""


class Waits:
    """Waits between the attempts of one API's requests (see the module docstring).

    `quota` is the advice after a 429 that does not go away (which budget to lower); `rand` is the
    backoff's jitter (injected, so tests know each wait exactly).
    """

    def __init__(
        self,
        max_retry_seconds: float,
        initial_backoff_seconds: float,
        budget: RateBudget,
        clock: Clock,
        stop: threading.Event,
        logger: logging.Logger,
        quota: str,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._max_retry_seconds = max_retry_seconds
        self._initial = initial_backoff_seconds
        self._budget = budget
        self._clock = clock
        self._stop = stop
        self._logger = logger
        self._quota = quota
        self._rand = rand

    def attempts(self, what: str) -> Attempts:
        """The attempts of one request for `what`, begun now."""
        return Attempts(self, what, self._clock.monotonic())

    def before_retry(self, what: str, attempt: int, failure: Retriable, started: float) -> None:
        """Sleep before attempt `attempt + 1` of `what` (begun at monotonic `started`), or give up with a
        transient error once the retry budget is spent; Cancelled when the sync stops meanwhile."""
        if self._stop.is_set():  # the sync is over: no retry, and no log line racing its last messages
            raise Cancelled()
        delay = backoff_seconds(attempt, failure.retry_after, self._initial, self._rand)
        now = self._clock.monotonic()
        if now + delay > started + self._max_retry_seconds:
            raise self._gave_up(what, attempt, failure, now - started, delay)
        if failure.rate_limited:
            self._budget.hold(delay)  # every request waits, not only this one
        resume = ""
        if delay >= LONG_WAIT_SECONDS:
            moment = dt.datetime.fromtimestamp(self._clock.wall() + delay, dt.UTC)
            resume = f"; the sync continues at {moment:%H:%M:%S} UTC"
        self._logger.warning(
            f"{what[:1].upper()}{what[1:]} attempt {attempt} failed ({failure}); retrying in {delay:.1f} s{resume}."
        )
        if self._clock.sleep(delay):
            raise Cancelled()

    def _gave_up(self, what: str, attempt: int, failure: Retriable, spent: float, delay: float) -> Exception:
        asked = (
            f" Mixpanel asked to wait {delay:.0f} s more (Retry-After), beyond max_retry_seconds."
            if failure.retry_after is not None
            else ""
        )
        later = "Try the sync again later; raise max_retry_seconds to wait longer."
        advice = f" {self._quota if failure.rate_limited else later}"
        return transient_error(
            f"Mixpanel kept failing for {what}: {failure} ({attempt} attempt(s) over {spent:.0f} s, "
            f"max_retry_seconds is {self._max_retry_seconds:.0f}).{asked} Everything before it was delivered and "
            f"checkpointed; the next sync resumes there.{advice}",
        )


class Attempts:
    """One request's attempts, numbered from 1: the one place that counts the failures in a row of a kind
    that may only come back a few times (Retriable.attempts), for both clients."""

    def __init__(self, waits: Waits, what: str, started: float) -> None:
        self.started = started  # monotonic: the retry budget runs from here
        self.number = 0
        self._waits = waits
        self._what = what
        self._repeats = 0

    def next(self) -> int:
        """The number of the attempt about to be made."""
        self.number += 1
        return self.number

    def failed(self, failure: Retriable, repeated: Callable[[int, Retriable], Exception]) -> None:
        """Sleep before the next attempt; or raise `repeated(attempts in a row, failure)` once a failure of a
        kind that repeats came back its limit, or the waits' error once the retry budget is spent."""
        self._repeats = self._repeats + 1 if failure.attempts is not None else 0
        if failure.attempts is not None and self._repeats >= failure.attempts:
            raise repeated(self._repeats, failure) from None
        self._waits.before_retry(self._what, self.number, failure, self.started)
