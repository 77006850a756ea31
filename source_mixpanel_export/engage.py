"""HTTP to the Query API's Engage endpoint: one page request in, one complete page of profile records out.

A page is small (1,000 profiles), so it is read into memory, parsed whole (profiles.parse_page) and only
then handed on: a page cut off, or not JSON, is asked for again with the same session and page number,
and nothing of it was emitted. What each failure means comes from retry.py, as for the export; the
waits (backoff, Retry-After, the budget held after a 429) from waits.py. A session Mixpanel no longer
knows is no failure of the page: `SessionLost` tells the reader to start its range again.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import threading
from collections.abc import Callable, Mapping

import requests

from .api import ENGAGE_ENDPOINT, TRANSPORT_ERRORS, deadline, engage_post, new_session, read_decoded
from .budget import RateBudget
from .clock import Clock
from .config import Config
from .errors import system_error
from .profiles import BadPage, Page, parse_page
from .retry import DateAfterToday, Retriable, TooLarge, error_message, retry_after_seconds, status_failure
from .waits import Cancelled, Waits

# A page is held whole while parsed: 1,000 profiles of 32 kB each at most (most profiles hold a few kB;
# Mixpanel allows 2,000 properties a profile, and profile_properties names fewer)...
MAX_PAGE_BYTES = 32 << 20
# ...and 1,000 values each, counted before parsing (a value follows a comma or opens a list or an object):
# a value costs far more parsed (50-100 bytes) than as JSON (2 bytes for `0,` or `[]`)
MAX_PAGE_VALUES = 1_000_000
BAD_PAGE_ATTEMPTS = 3  # a page that is JSON but no Engage page, this many times in a row: the sync stops
ERROR_BODY_BYTES = 65536
QUERY_API = "Query API (people profiles)"  # how errors name it


class SessionLost(Exception):
    """Mixpanel no longer knows the session of a page above 0 (it expired): its query starts again."""


class EngageClient:
    """Sends Engage requests within the Query API's budget and retries a page until it is complete."""

    def __init__(
        self,
        config: Config,
        budget: RateBudget,
        clock: Clock,
        stop: threading.Event,
        logger: logging.Logger,
        session: requests.Session | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._config = config
        self._budget = budget
        self._clock = clock
        self._stop = stop
        self._session = session or new_session()
        self._url = ENGAGE_ENDPOINT.url(config)
        self._waits = Waits(
            config.max_retry_seconds, config.retry_initial_backoff_seconds, budget, clock, stop, logger,
            "The Query API's 60 queries an hour are shared with every other tool querying the project: "
            "lower profile_requests_per_hour, or run the sync later.",
            rand,
        )

    def page(self, form: Mapping[str, str], what: str) -> Page:
        """The page `form` asks for (its `page`, `session_id`, `where`...), complete, after as many attempts
        as the retry budget allows. `what` names it in logs and errors."""
        attempts = self._waits.attempts(what)
        while True:
            attempts.next()
            if not self._budget.acquire() or self._stop.is_set():
                raise Cancelled()
            try:
                return self._attempt(form)
            except Retriable as failure:
                attempts.failed(failure, functools.partial(self._no_page, what))

    @staticmethod
    def _no_page(what: str, count: int, failure: Retriable) -> Exception:
        return system_error(
            f"Mixpanel's answer for {what} is no Engage page: {failure} ({count} attempts in a row). "
            "Everything before it was delivered and checkpointed."
        )

    def _attempt(self, form: Mapping[str, str]) -> Page:
        timeout = self._config.request_timeout_seconds
        with deadline(timeout, self._stop) as watched:
            try:
                with engage_post(self._session, self._config, form, timeout) as response:
                    if response.status_code != 200:
                        raise self._refused(response, read_decoded(response, watched, ERROR_BODY_BYTES), form)
                    body = read_decoded(response, watched, MAX_PAGE_BYTES + 1)
            except TRANSPORT_ERRORS as exc:
                if watched.expired:
                    raise Retriable(watched.problem()) from None
                raise Retriable(f"the page was cut off or could not be fetched ({type(exc).__name__})") from None
        if watched.expired:  # a body that ends with its connection looks whole when cut off
            raise Retriable(watched.problem())
        if len(body) > MAX_PAGE_BYTES or sum(map(body.count, (b",", b"[", b"{"))) > MAX_PAGE_VALUES:
            raise system_error(
                f"An Engage page is larger than {MAX_PAGE_BYTES >> 20} MB decompressed, or {MAX_PAGE_VALUES:,} "
                "values. Name fewer properties in profile_properties."
            )
        try:
            return parse_page(body)
        except BadPage as exc:  # not JSON: cut short or garbled on the way, ask again; JSON but no page,
            raise Retriable(str(exc), attempts=BAD_PAGE_ATTEMPTS if exc.is_json else None) from None  # a few times

    def _refused(self, response: requests.Response, raw: bytes, form: Mapping[str, str]) -> Exception:
        """What an answer other than 200 means: a lost session (of a page above 0: page 0 opens one), a
        retry, or an error to stop with."""
        text = error_message(raw) if raw else (response.reason or "no message")
        status = response.status_code
        if status == 400 and "session" in text.lower() and form.get("page", "0") != "0":
            return SessionLost(text)
        now = dt.datetime.fromtimestamp(self._clock.wall(), dt.UTC)
        retry_after = retry_after_seconds(response.headers.get("Retry-After"), now)
        failure = status_failure(self._config, status, text, retry_after, api=(self._url, QUERY_API))
        if isinstance(failure, TooLarge | DateAfterToday):  # export answers: here only Mixpanel failing
            return Retriable(f"{status} from Mixpanel: {text}")
        return failure

