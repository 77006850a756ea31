"""HTTP to the Raw Event Export API: one window in, one verified-complete body out.

The unit of retry is the whole window, body included: a response can fail after its status line
(cut-off body, broken gzip, `terminated early` trailer), so the body is streamed to a spill file and
only handed on once it is known complete. Nothing of a failed attempt is ever emitted. That is why
this does not use the CDK's `HttpClient`, whose retries end when the headers arrive.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import http.client
import logging
import math
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import orjson
import requests
import urllib3

from .bodies import EncodedBody, EncodedFile, RawBody
from .bodycheck import BodyCheck, Incomplete, receive
from .budget import LONG_WAIT_SECONDS, RateBudget
from .config import Config, ServiceAccount
from .errors import config_error, system_error, transient_error
from .records import Tally
from .windows import Window
from .workers import EncoderPool

Body = RawBody | EncodedBody | EncodedFile
CHUNK_BYTES = 1 << 16  # compressed bytes read at a time: ~300 kB once decompressed
# Shared by the downloads under way; past its share a body goes to disk. Small on purpose: a spill
# file in memory costs about twice its size in RSS (buffer growth), one on disk is in the page cache.
SPILL_IN_MEMORY_BYTES = 1 << 20
CONNECT_TIMEOUT_SECONDS = 30
MAX_BACKOFF_SECONDS = 300.0
USER_AGENT = "source-mixpanel-export (Airbyte connector)"


class Retriable(Exception):
    """An attempt failed in a way the next attempt may not: rate limit, outage, cut-off body."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class Cancelled(Exception):
    """The sync is stopping: abandon this window quietly."""


class TooLarge(Exception):
    """Mixpanel could not answer the window in time (400 `Timeout Error.`): ask for less."""


class DateAfterToday(Exception):
    """Mixpanel's today is earlier than ours (400 `to_date cannot be later than today`)."""


@dataclass
class Download:
    """A window's complete body (decompressed JSON lines, no trailer, or their RECORD lines), ready to be read once."""

    window: Window
    body: Body
    size: int
    server_time_ms: int  # Mixpanel had received the request by this time: a safe watermark
    attempts: int
    seconds: float
    malformed_lines: int = 0  # lines that are not one JSON object even after a retry
    first_malformed_line: int | None = None  # 1-based line number of the first of them

    def close(self) -> None:
        """Free the spill file."""
        self.body.close()


@dataclass(frozen=True)
class FirstAttempt:
    """How an attempt made elsewhere failed: with `error` (what _attempt would have raised), or with
    `malformed` lines (how many, the first's number), which the retry loop asks again about once."""

    error: Exception | None = None
    malformed: tuple[int, int] | None = None

    def replay(self, window: Window) -> Download:
        """Raise the error, or stand in for the download whose lines were malformed."""
        if self.error is not None:
            raise self.error
        count, first_line = self.malformed or (1, 1)
        return Download(window, RawBody(0), 0, 0, 1, 0.0, malformed_lines=count, first_malformed_line=first_line)


def backoff_seconds(
    attempt: int, retry_after: float | None, base: float, rand: Callable[[], float] = random.random
) -> float:
    """How long to wait before attempt `attempt + 1`: Retry-After when given, else capped exponential
    backoff with full jitter on its upper half (so parallel workers do not retry in step)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), 3600.0)
    ceiling = min(base * (2 ** (attempt - 1)), MAX_BACKOFF_SECONDS)
    return ceiling / 2 + ceiling / 2 * rand()


def where_clause(user_where: str | None, window: Window) -> str | None:
    """The `where` parameter: the user's expression and the window's own narrowing, all required."""
    parts = [f"({user_where})"] if user_where else []
    if window.processed_after_ms is not None:
        parts.append(f'number(properties["mp_processing_time_ms"]) > {window.processed_after_ms}')
    if window.time_from is not None:
        parts.append(f'properties["$time"] >= datetime({window.time_from})')
    if window.time_to is not None:
        parts.append(f'properties["$time"] < datetime({window.time_to})')
    return " and ".join(parts) or None


def export_params(config: Config, window: Window, limit: int | None = None) -> dict[str, str]:
    """Query parameters for one window (dates inclusive, times in milliseconds)."""
    params = {
        "from_date": window.first_day.isoformat(),
        "to_date": window.last_day.isoformat(),
        "time_in_ms": "true",
    }
    if config.project_id is not None:
        params["project_id"] = str(config.project_id)
    if config.events:
        params["event"] = orjson.dumps(list(config.events)).decode()
    where = where_clause(config.where, window)
    if where:
        params["where"] = where
    if limit is not None:
        params["limit"] = str(limit)
    return params


class ExportClient:
    """Sends export requests within the budget and retries a window until its body is complete."""

    def __init__(
        self,
        config: Config,
        budget: RateBudget,
        logger: logging.Logger | None = None,
        session: requests.Session | None = None,
        stop: threading.Event | None = None,
        encoder: EncoderPool | None = None,
    ) -> None:
        """`stop` ends waits and downloads early when the sync is over; its wait() is the sleep.
        With an `encoder`, bodies are encoded into RECORD lines as they download (EncodedBody)."""
        self._config = config
        self._budget = budget
        self._logger = logger or logging.getLogger("airbyte")
        self._session = session or requests.Session()
        self._session.headers.update({"Accept-Encoding": "gzip", "User-Agent": USER_AGENT})
        self._stop = stop or threading.Event()
        self._encoder = encoder

    def fetch(self, window: Window, first: FirstAttempt | None = None) -> Download:
        """The window's complete body, after as many attempts as the retry budget allows.

        `first` is how an attempt made elsewhere (the head start's) failed: it counts as attempt 1.
        """
        started = time.monotonic()
        deadline = started + self._config.max_retry_seconds
        attempt = 0
        malformed_retried = False
        while True:
            attempt += 1
            try:
                if attempt == 1 and first is not None:
                    download = first.replay(window)
                else:
                    self._budget.acquire()
                    if self._stop.is_set():
                        raise Cancelled()
                    download = self._attempt(window, attempt, started)
            except Retriable as failure:
                self._wait_before_retry(window, attempt, failure, started, deadline)
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

    def _wait_before_retry(
        self, window: Window, attempt: int, failure: Retriable, started: float, deadline: float
    ) -> None:
        """Sleep before the next attempt, or give up with a transient error once the retry budget is spent."""
        if self._stop.is_set():  # the sync is over: no retry, and no log line racing its last messages
            raise Cancelled()
        delay = backoff_seconds(attempt, failure.retry_after, self._config.retry_initial_backoff_seconds)
        now = time.monotonic()
        if now + delay > deadline:
            asked = (
                f" Mixpanel asked to wait {delay:.0f} s more (Retry-After), beyond max_retry_seconds."
                if failure.retry_after is not None
                else ""
            )
            advice = (
                " The project's export quota is shared with every other tool exporting from it: lower "
                "requests_per_hour / max_concurrent_requests, or run the sync later."
                if failure.rate_limited
                else " Try the sync again later; raise max_retry_seconds to wait longer."
            )
            raise transient_error(
                f"Mixpanel kept failing for window {window.label()}: {failure} ({attempt} attempt(s) over "
                f"{now - started:.0f} s, max_retry_seconds is {self._config.max_retry_seconds:.0f}).{asked} "
                "Everything before this window was delivered and checkpointed; the next sync resumes "
                f"there.{advice}",
            )
        if failure.rate_limited:
            self._budget.hold(delay)  # every worker waits, not only this one
        resume = ""
        if delay >= LONG_WAIT_SECONDS:
            moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
            resume = f"; the sync continues at {moment:%H:%M:%S} UTC"
        self._logger.warning(
            f"Window {window.label()} attempt {attempt} failed ({failure}); retrying in {delay:.1f} s{resume}."
        )
        if self._stop.wait(delay):
            raise Cancelled()

    def _attempt(self, window: Window, attempt: int, started: float) -> Download:
        sent_wall_ms = int(time.time() * 1000)
        sent = time.monotonic()
        try:
            response = self._session.get(
                self._config.export_url,
                params=export_params(self._config, window),
                auth=self._config.credentials.basic_auth(),
                stream=True,
                timeout=(CONNECT_TIMEOUT_SECONDS, self._config.request_timeout_seconds),
            )
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise Retriable(f"could not reach {self._config.base_url}: {type(exc).__name__}") from None
        headers_seconds = time.monotonic() - sent
        with response:
            if response.status_code != 200:
                self._raise_for_status(response, window)
            server_ms = watermark(self._config, response.headers.get("Date"), headers_seconds, sent_wall_ms)
            body = self._body_for(window)
            check = _spill(response, body, self._stop)
        return Download(
            window=window,
            body=body,
            size=check.size,
            server_time_ms=server_ms,
            attempts=attempt,
            seconds=time.monotonic() - started,
            malformed_lines=check.malformed,
            first_malformed_line=check.first_malformed,
        )

    def _body_for(self, window: Window) -> Body:
        in_memory = max(1 << 16, SPILL_IN_MEMORY_BYTES // self._config.max_concurrent_requests)
        if self._encoder is None:
            return RawBody(in_memory)
        not_before = self._config.records_not_before(window.first_day)
        return EncodedBody(self._encoder, self._config.legacy_timezone, not_before, in_memory)

    def _raise_for_status(self, response: requests.Response, window: Window) -> None:
        raise status_failure(self._config, response.status_code, _error_text(response), _retry_after(response))


def status_failure(config: Config, status: int, message: str, retry_after: float | None) -> Exception:
    """What an answer other than 200 means for the window: retry, split, shorten, or stop."""
    if status == 429:
        return Retriable(f"429 rate limited: {message}", retry_after, rate_limited=True)
    if status >= 500 or status == 408:
        return Retriable(f"{status} from Mixpanel: {message}", retry_after)
    lowered = message.lower()
    if status == 400 and "timeout error" in lowered:
        return TooLarge(message)
    if status == 400 and "cannot be later than today" in lowered:
        return DateAfterToday(message)
    return describe_rejection(config, status, message)


def watermark(config: Config, date_header: str | None, headers_seconds: float, sent_wall_ms: int) -> int:
    """The window's watermark: when Mixpanel had surely received the request, less export_lookback_window."""
    return server_time_ms(date_header, headers_seconds, sent_wall_ms) - config.export_lookback_window * 1000


# -- a window's first attempt made by an encoding worker (the head start: headstart.py, remote.py) --------


def remote_spec(config: Config, window: Window, out: str) -> dict[str, Any]:
    """What an encoding worker needs to make this window's first attempt itself (see remote.py)."""
    return {
        "url": config.export_url,
        "base_url": config.base_url,
        "params": export_params(config, window),
        "auth": config.credentials.basic_auth(),
        "user_agent": USER_AGENT,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "read_timeout": config.request_timeout_seconds,
        "legacy_timezone": config.legacy_timezone,
        "not_before": config.records_not_before(window.first_day),
        "out": out,
    }


def remote_download(
    config: Config, window: Window, result: dict[str, Any], lines: IO[bytes], seconds: float
) -> Download:
    """The Download of a worker's successful attempt (remote.fetch_window's result, its RECORD lines)."""
    server_ms = watermark(config, result["date"], result["headers_seconds"], result["sent_wall_ms"])
    body = EncodedFile(lines, Tally(*result["tally"]))
    return Download(window, body, result["size"], server_ms, attempts=1, seconds=seconds)


def first_attempt_of(config: Config, result: dict[str, Any]) -> FirstAttempt | None:
    """How a worker's failed attempt (remote.fetch_window's result) counts; None if it does not."""
    kind = result.get("kind")
    if kind == "status":
        message = error_message(result["body"].encode()) if result["body"] else (result["reason"] or "no message")
        retry_after = retry_after_seconds(result["retry_after"])
        return FirstAttempt(error=status_failure(config, result["status"], message, retry_after))
    if kind == "retriable":
        return FirstAttempt(error=Retriable(result["problem"]))
    if kind == "malformed":
        return FirstAttempt(malformed=(result["malformed"], result["first"]))
    return None  # the worker failed, not the request: a fresh attempt


def describe_rejection(config: Config, status: int, message: str) -> Exception:
    """A config error a person can act on, for a request Mixpanel refused outright."""
    lowered = message.lower()
    account = isinstance(config.credentials, ServiceAccount)
    if status == 401 or (status == 400 and "authenticate" in lowered):
        fields = "credentials.username / credentials.secret" if account else "credentials.api_secret"
        hint = f"Mixpanel rejected the credentials ({status}: {message}). Check {fields}"
        if config.region == "US" and config.base_url.endswith("data.mixpanel.com"):
            hint += "; if the project's data lives in the EU or India, set region to EU or IN"
        return config_error(hint + ".")
    if status == 403:
        return config_error(
            f"Mixpanel refused access to project {config.project_id} (403: {message}). Check "
            "credentials.project_id and that the service account is a member of that project "
            "(with access to classified data if the project has any).",
        )
    if status == 402:
        return config_error(f"Mixpanel's plan for this project does not allow raw export (402: {message}).")
    if status == 404:
        return config_error(
            f"No export API at {config.export_url} (404). Check region and api_base_url.",
        )
    if status == 400 and "project" in lowered:
        return config_error(f"Mixpanel rejected the project id (400: {message}). Check credentials.project_id.")
    if status == 400 and ("where" in lowered or "event" in lowered or "segmentation" in lowered):
        return config_error(f"Mixpanel rejected the request (400: {message}). Check the where and events settings.")
    if 400 <= status < 500:
        return config_error(f"Mixpanel rejected the request ({status}: {message}).")
    return system_error(f"Unexpected answer from Mixpanel ({status}: {message}).")


def _spill(response: requests.Response, body: Body, cancelled: threading.Event | None = None) -> BodyCheck:
    """Stream the body, decompressing, into `body`; raise Retriable (closing it) unless it is complete."""
    gzipped = "gzip" in response.headers.get("Content-Encoding", "").lower()
    try:
        return receive(_until(cancelled, response.raw.stream(CHUNK_BYTES, decode_content=False)), gzipped, body)
    except Incomplete as exc:
        body.close()
        raise Retriable(str(exc)) from None
    except (urllib3.exceptions.HTTPError, requests.RequestException, http.client.HTTPException, OSError,
            zlib.error) as exc:
        body.close()
        raise Retriable(f"the response was cut off ({type(exc).__name__})") from None
    except BaseException:
        body.close()
        raise


def _until(cancelled: threading.Event | None, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks, until the sync stops (then Cancelled)."""
    for chunk in chunks:
        if cancelled is not None and cancelled.is_set():
            raise Cancelled()
        yield chunk


def server_time_ms(header: str | None, headers_seconds: float, fallback_ms: int) -> int:
    """When Mixpanel had surely received the request: its Date header, less the time to headers.

    The Date header is stamped after the request arrived but at one-second resolution; subtracting
    the whole round trip to the headers gives a lower bound on the arrival in Mixpanel's own clock.
    """
    if not header:
        return fallback_ms
    try:
        date = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return fallback_ms
    if date.tzinfo is None:
        date = date.replace(tzinfo=dt.UTC)
    return int(date.timestamp()) * 1000 - math.ceil(headers_seconds * 1000)


def _retry_after(response: requests.Response) -> float | None:
    return retry_after_seconds(response.headers.get("Retry-After"))


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's wait in seconds (it may be a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max((moment - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _error_text(response: requests.Response) -> str:
    try:
        raw = response.raw.read(65536, decode_content=True) or b""
    except Exception:
        raw = b""
    return error_message(raw) if raw else (response.reason or "no message")


def error_message(body: bytes) -> str:
    """Mixpanel's error message from a JSON `{"error": ...}` or plain-text body, kept short."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and parsed.get("error"):
            text = str(parsed["error"])
    except orjson.JSONDecodeError:
        pass
    return (text or "no message")[:500]
