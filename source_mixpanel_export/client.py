"""HTTP to the Raw Event Export API: one window in, one verified-complete body out, retried whole.

The unit of retry is the whole window, body included: a response can fail after its status line
(cut-off body, broken gzip, `terminated early` trailer), so the body is stored as it arrives
(body.Spill) and only handed on once it is known complete. Nothing of a failed attempt is ever
emitted. That is why this does not use the CDK's `HttpClient`, whose retries end when the headers
arrive. What each failure means, and how long to wait, is decided in retry.py.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import logging
import math
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import requests
import urllib3

from .api import Deadline, deadline, export_get, export_params, new_session
from .body import BodyCheck, DiskFull, GzipError, Incomplete, Limit, Spill, SpillMeter, Unverifiable, receive
from .budget import RateBudget
from .clock import Clock
from .config import Config
from .errors import system_error
from .retry import Retriable, error_message, http_date, retry_after_seconds, status_failure
from .waits import Cancelled, Waits
from .windows import BYTES_PER_TARGET_EVENT, Window

CHUNK_BYTES = 1 << 16  # compressed bytes read at a time
# Shared by the downloads under way; past its share a body goes to disk. Small on purpose: a spill
# file in memory costs about twice its size in RSS (buffer growth), one on disk is in the page cache.
SPILL_IN_MEMORY_BYTES = 1 << 20
PROGRESS_SECONDS = 120.0  # a download in progress is logged this often: the platform never sees silence
OVERSIZE_FACTOR = 2  # a body past this many times the window target is abandoned and its window split
# A Date header further than this from our clock is worth a warning: NTP keeps real clocks within a
# second; five minutes leaves room for a slow network, not for a wrong clock.
DATE_TRUST_MS = 5 * 60_000
DATE_FLOOR_MS = 86_400_000  # a Date further behind than a day is not used (1970, a broken server)
UNVERIFIABLE_ATTEMPTS = 3  # bodies whose end nothing proves, in a row, before the sync fails saying why


@dataclass
class Download:
    """A window's complete body (no trailer, checked), ready to be read once."""

    window: Window
    spill: Spill
    size: int  # bytes of JSON, decompressed
    events: int  # lines that end in `}`
    server_time_ms: int  # Mixpanel had received the request by this time: a safe watermark
    attempts: int
    seconds: float
    head: bytes = b""  # body.BodyCheck.head: a digest of the body's start
    malformed_lines: int = 0  # lines that are not one JSON object even after a retry
    first_malformed_line: int | None = None  # 1-based line number of the first of them

    def chunks(self) -> Iterator[bytes]:
        """The body's JSON lines, decompressed again from the spill."""
        return self.spill.chunks()

    def close(self) -> None:
        """Free the spill file."""
        self.spill.close()


class ExportClient:
    """Sends export requests within the budget and retries a window until its body is complete."""

    def __init__(
        self,
        config: Config,
        budget: RateBudget,
        clock: Clock,
        stop: threading.Event,
        logger: logging.Logger | None = None,
        session: requests.Session | None = None,
        meter: SpillMeter | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """`stop` ends waits and downloads early when the sync is over; `rand` is the backoff's jitter
        (injected so that tests know each wait exactly)."""
        self._config = config
        self._budget = budget
        self._clock = clock
        self._stop = stop
        self._logger = logger or logging.getLogger("airbyte")
        self._session = session or new_session()
        self.meter = meter or SpillMeter()
        self._waits = Waits(
            config.max_retry_seconds, config.retry_initial_backoff_seconds, budget, clock, stop, self._logger,
            "The project's export quota is shared with every other tool exporting from it: lower "
            "requests_per_hour / max_concurrent_requests, or run the sync later.",
            rand,
        )
        target = config.window_target_events * OVERSIZE_FACTOR
        self._limit = Limit(lines=target, size=target * BYTES_PER_TARGET_EVENT)
        self._skew_warned = False

    def fetch(self, window: Window) -> Download:
        """The window's complete body, after as many attempts as the retry budget allows."""
        attempts = self._waits.attempts(f"window {window.label()}")
        malformed_retried = False
        while True:
            attempt = attempts.next()
            try:
                if not self._budget.acquire() or self._stop.is_set():
                    raise Cancelled()
                download = self._attempt(window, attempt, attempts.started)
            except Retriable as failure:
                attempts.failed(failure, functools.partial(self._repeated, window))
                continue
            if download.malformed_lines and not malformed_retried:
                malformed_retried = True
                self._logger.warning(
                    f"Window {window.label()}: {download.malformed_lines} line(s) are not JSON objects "
                    f"(first at line {download.first_malformed_line}); asking for the window once more."
                )
                download.close()
                continue
            return download

    def _repeated(self, window: Window, attempt: int, failure: Retriable) -> Exception:
        """The error for a failure that came back `attempt` times in a row."""
        return system_error(
            f"Window {window.label()}: {failure} ({attempt} attempts in a row). Everything before this "
            f"window was delivered and checkpointed. Let the connector reach {self._config.base_url} directly, "
            "or have what stands between them keep the answer's Content-Length, chunked framing or gzip."
        )

    def _disk_full(self, window: Window, exc: DiskFull) -> Exception:
        where = tempfile.gettempdir()
        free = shutil.disk_usage(where).free
        return system_error(
            f"Window {window.label()} could not be stored in the temporary directory {where} (TMPDIR): "
            f"{exc} after {exc.stored / 1e6:.1f} MB, with {free / 1e6:.1f} MB free there. A window needs up to "
            f"{self._limit.size / 1e6:.0f} MB there (twice window_target_events at {BYTES_PER_TARGET_EVENT} bytes "
            "an event, less when Mixpanel compresses it). Nothing of this window was emitted; everything before "
            "it was delivered and checkpointed. Free space there, point TMPDIR at a larger disk, or lower "
            "window_target_events."
        )

    def _attempt(self, window: Window, attempt: int, started: float) -> Download:
        """One request for the window, within its deadline (api.Deadline)."""
        with deadline(self._config.request_timeout_seconds, self._stop) as watched:
            try:
                download = self._request(window, attempt, started, watched)
            except Retriable:
                if watched.expired:
                    raise Retriable(watched.problem()) from None
                raise
            if watched.expired:  # a body that ends with its connection looks whole when cut off
                download.close()
                raise Retriable(watched.problem())
            return download

    def _request(self, window: Window, attempt: int, started: float, watched: Deadline) -> Download:
        sent_wall_ms = int(self._clock.wall() * 1000)
        sent = self._clock.monotonic()
        params = export_params(self._config, window)
        try:
            response = export_get(self._session, self._config, params, self._config.request_timeout_seconds)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise Retriable(f"could not reach {self._config.base_url}: {type(exc).__name__}") from None
        headers_seconds = self._clock.monotonic() - sent
        with response:
            if response.status_code != 200:
                raise status_failure(
                    self._config, response.status_code, _error_text(response), _retry_after(response, self._clock)
                )
            stamp = request_received(response.headers.get("Date"), headers_seconds, sent_wall_ms)
            self._warn_skew(stamp)
            gzipped = "gzip" in response.headers.get("Content-Encoding", "").lower()
            in_memory = max(1 << 16, SPILL_IN_MEMORY_BYTES // self._config.max_concurrent_requests)
            spill = Spill(gzipped, in_memory, self.meter)
            limit = None if window.whole else self._limit  # a window that cannot be split is read however large
            try:
                check = spill_response(response, spill, limit, lambda chunks: self._progress(window, chunks, watched))
            except DiskFull as exc:
                raise self._disk_full(window, exc) from None
        return Download(
            window=window,
            spill=spill,
            size=check.size,
            events=check.events,
            server_time_ms=watermark(self._config, stamp),
            attempts=attempt,
            seconds=self._clock.monotonic() - started,
            head=check.head(),
            malformed_lines=check.malformed,
            first_malformed_line=check.first_malformed,
        )

    def _warn_skew(self, stamp: Stamp) -> None:
        """Say once a sync that the server's clock is far from ours, by how much, and what was done."""
        if stamp.skew_ms is None or self._skew_warned:
            return
        self._skew_warned = True
        side = "ahead of" if stamp.skew_ms > 0 else "behind"
        done = (
            "it is not used for the watermark, this machine's clock is"
            if not stamp.trusted
            else "the watermark follows it (re-reading a little more, never less)"
        )
        self._logger.warning(
            f"The Date header of {self._config.base_url} is {abs(stamp.skew_ms) / 1000:.0f} s {side} this "
            f"machine's clock (more than {DATE_TRUST_MS // 1000} s): {done}. Check that this machine's clock "
            "is set (NTP) and what stands between it and Mixpanel."
        )

    def _progress(self, window: Window, chunks: Iterable[bytes], watched: Deadline) -> Iterator[bytes]:
        """The chunks, until the sync stops (then Cancelled); a log line every PROGRESS_SECONDS."""
        received = 0
        next_log = self._clock.monotonic() + PROGRESS_SECONDS
        for chunk in chunks:
            if self._stop.is_set():
                raise Cancelled()
            received += len(chunk)
            watched.received = received
            if self._clock.monotonic() >= next_log:
                next_log += PROGRESS_SECONDS
                self._logger.info(f"Window {window.label()}: {received / 1e6:.1f} MB received so far.")
            yield chunk


def spill_response(
    response: requests.Response,
    spill: Spill,
    limit: Limit | None = None,
    watch: Callable[[Iterable[bytes]], Iterable[bytes]] = iter,
) -> BodyCheck:
    """Store a 200 response's body in `spill` as it arrives (through `watch`), checked; unless it is
    complete, close the spill and raise what that means for the window (Retriable, TooLarge)."""
    raw = response.raw
    framed = bool(getattr(raw, "chunked", False)) or getattr(raw, "length_remaining", None) is not None
    try:
        return receive(watch(raw.stream(CHUNK_BYTES, decode_content=False)), spill, limit, framed)
    except BaseException as exc:
        spill.close()
        raise _attempt_failure(exc) from None


def _attempt_failure(exc: BaseException) -> BaseException:
    """What a failure while receiving a body means for the window."""
    if isinstance(exc, Unverifiable):  # the same each time while a proxy strips framing: a few attempts
        return Retriable(str(exc), attempts=UNVERIFIABLE_ATTEMPTS)
    if isinstance(exc, Incomplete):
        return Retriable(str(exc))
    if isinstance(
        exc, urllib3.exceptions.HTTPError | requests.RequestException | http.client.HTTPException | OSError | GzipError
    ):
        return Retriable(f"the response was cut off ({type(exc).__name__})")
    return exc


def watermark(config: Config, stamp: Stamp) -> int:
    """The window's watermark: when Mixpanel had surely received the request, less export_lookback_window."""
    return max(stamp.received_ms - config.export_lookback_window * 1000, 0)


@dataclass(frozen=True)
class Stamp:
    """When Mixpanel had surely received a request, and how far its Date header was from our clock
    when that is worth a warning (`skew_ms`; `trusted`: whether the Date was used)."""

    received_ms: int
    skew_ms: int | None = None
    trusted: bool = True


def request_received(header: str | None, headers_seconds: float, sent_wall_ms: int) -> Stamp:
    """When Mixpanel had surely received the request, never later than our clock when we sent it.

    Mixpanel stamps `mp_processing_time_ms` with its own clock, which its Date header shows (at
    one-second resolution; less the whole round trip to the headers, it is a lower bound on the
    arrival). So a Date behind our clock is used: if our clock is fast, Mixpanel's is the one that
    counts, and if the Date is wrong, an earlier watermark only re-reads more. A Date ahead of our
    clock would put the watermark after events not yet processed: our clock when sending bounds it.
    A Date further behind than DATE_FLOOR_MS (1970, a broken server) is not used at all: a watermark
    that old would make every later sync read everything again.
    """
    date = http_date(header) if header else None
    if date is None:
        return Stamp(sent_wall_ms)
    server_ms = int(date.timestamp()) * 1000 - math.ceil(headers_seconds * 1000)
    skew = server_ms - sent_wall_ms
    noted = skew if abs(skew) > DATE_TRUST_MS else None
    if skew < -DATE_FLOOR_MS:
        return Stamp(sent_wall_ms, skew, trusted=False)
    return Stamp(min(server_ms, sent_wall_ms), noted, trusted=skew <= 0 or noted is None)


def _retry_after(response: requests.Response, clock: Clock) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"), dt.datetime.fromtimestamp(clock.wall(), dt.UTC))


def _error_text(response: requests.Response) -> str:
    try:
        raw = response.raw.read(65536, decode_content=True) or b""
    except Exception:
        raw = b""
    return error_message(raw) if raw else (response.reason or "no message")
