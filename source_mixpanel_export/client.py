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
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import orjson
import requests
import urllib3

from .budget import LONG_WAIT_SECONDS, RateBudget
from .config import Config, ServiceAccount
from .errors import config_error, system_error, transient_error
from .lines import is_trailer
from .windows import Window

CHUNK_BYTES = 1 << 20
SPILL_IN_MEMORY_BYTES = 16 << 20  # shared by the downloads under way; past its share a body goes to disk
CONNECT_TIMEOUT_SECONDS = 30
MAX_BACKOFF_SECONDS = 300.0
USER_AGENT = "source-mixpanel-export (Airbyte connector)"
TAIL_BYTES = 4096  # how much of a body's end is kept to look for a trailer
_BLANK = frozenset(b" \t\r")
_LINE_OK = frozenset(b"}\n")  # what may end a line (or precede a blank one)


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
    """A window's complete body (decompressed JSON lines, no trailer), ready to be read once."""

    window: Window
    body: IO[bytes]
    size: int
    server_time_ms: int  # Mixpanel had received the request by this time: a safe watermark
    attempts: int
    seconds: float
    malformed_lines: int = 0  # lines that are not one JSON object even after a retry
    first_malformed_line: int | None = None  # 1-based line number of the first of them

    def chunks(self) -> Any:
        """The body in large chunks, from the start."""
        self.body.seek(0)
        return iter(lambda: self.body.read(CHUNK_BYTES), b"")

    def close(self) -> None:
        """Free the spill file."""
        self.body.close()


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
    ) -> None:
        """`stop` ends waits and downloads early when the sync is over; its wait() is the sleep."""
        self._config = config
        self._budget = budget
        self._logger = logger or logging.getLogger("airbyte")
        self._session = session or requests.Session()
        self._session.headers.update({"Accept-Encoding": "gzip", "User-Agent": USER_AGENT})
        self._stop = stop or threading.Event()

    def fetch(self, window: Window) -> Download:
        """The window's complete body, after as many attempts as the retry budget allows."""
        started = time.monotonic()
        deadline = started + self._config.max_retry_seconds
        attempt = 0
        malformed_retried = False
        while True:
            attempt += 1
            self._budget.acquire()
            if self._stop.is_set():
                raise Cancelled()
            try:
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
            server_ms = _server_time_ms(response, headers_seconds, sent_wall_ms)
            server_ms -= self._config.export_lookback_window * 1000
            in_memory = max(1 << 20, SPILL_IN_MEMORY_BYTES // self._config.max_concurrent_requests)
            body, check = _spill(response, self._stop, in_memory)
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

    def _raise_for_status(self, response: requests.Response, window: Window) -> None:
        status = response.status_code
        message = _error_text(response)
        if status == 429:
            raise Retriable(f"429 rate limited: {message}", _retry_after(response), rate_limited=True)
        if status >= 500 or status == 408:
            raise Retriable(f"{status} from Mixpanel: {message}", _retry_after(response))
        lowered = message.lower()
        if status == 400 and "timeout error" in lowered:
            raise TooLarge(message)
        if status == 400 and "cannot be later than today" in lowered:
            raise DateAfterToday(message)
        raise describe_rejection(self._config, status, message)


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


class BodyCheck:
    """Watches a decompressed body go by, so it can be judged complete without a second pass.

    Counts lines that cannot be one JSON object (a non-blank line whose last non-blank byte is not
    `}`) and keeps the end of the body, where a `terminated early` trailer or a half line shows. The
    common case costs two `bytes.count` calls per chunk; only a chunk with a suspicious line end is
    looked at line by line.
    """

    def __init__(self) -> None:
        self.size = 0
        self.lines = 0  # lines ended by b"\n" so far
        self.malformed = 0
        self.first_malformed: int | None = None  # 1-based line number
        self.trailer: bytes | None = None
        self._tail = b""  # the last TAIL_BYTES bytes seen

    def take(self, data: bytes) -> None:
        """Account for the next piece of the body."""
        if not data:
            return
        newlines = data.count(b"\n")
        if newlines:
            closed = data.count(b"}\n") + (data[:1] == b"\n" and self._tail[-1:] == b"}")
            if closed != newlines:
                self._scan(data)
        self.lines += newlines
        self.size += len(data)
        self._tail = data[-TAIL_BYTES:] if len(data) >= TAIL_BYTES else (self._tail + data)[-TAIL_BYTES:]

    def finish(self) -> BodyCheck:
        """Judge the end of the body: a trailer, or a last line without its b"\n"."""
        end = self._tail.rstrip(b" \t\r\n")
        final = end[end.rfind(b"\n") + 1 :]
        unterminated = self._tail[self._tail.rfind(b"\n") + 1 :].rstrip(b" \t\r")
        if final and is_trailer(final):
            self.trailer = final
        elif unterminated and not unterminated.endswith(b"}"):
            self._bad(self.lines + 1)
        return self

    def _scan(self, data: bytes) -> None:
        context = self._tail + data
        position = context.find(b"\n", len(self._tail))
        line = self.lines
        while position >= 0:
            line += 1
            back = position - 1
            while back >= 0 and context[back] in _BLANK:
                back -= 1
            if back >= 0 and context[back] not in _LINE_OK:
                self._bad(line)
            position = context.find(b"\n", position + 1)

    def _bad(self, line: int) -> None:
        self.malformed += 1
        if self.first_malformed is None:
            self.first_malformed = line


class Gunzip:
    """Decompresses a gzip body of one or more members (RFC 1952 allows several; zlib stops after one)."""

    def __init__(self) -> None:
        self._decoder = zlib.decompressobj(wbits=31)
        self._seen = 0

    def decompress(self, data: bytes) -> bytes:
        """The bytes decoded from the next piece of the compressed body."""
        self._seen += len(data)
        out = []
        while data:
            if self._decoder.eof:
                if not data.strip(b"\0"):  # zero padding after the last member
                    break
                self._decoder = zlib.decompressobj(wbits=31)
            out.append(self._decoder.decompress(data))
            data = self._decoder.unused_data if self._decoder.eof else b""
        return b"".join(out)

    def complete(self) -> bool:
        """Whether the body ended at the end of a member (or was empty, as an empty export may be)."""
        return self._seen == 0 or self._decoder.eof


def _spill(
    response: requests.Response, cancelled: threading.Event | None = None, in_memory: int = SPILL_IN_MEMORY_BYTES
) -> tuple[IO[bytes], BodyCheck]:
    """Stream the body, decompressing, into a spill file; raise Retriable unless it is complete."""
    gzipped = "gzip" in response.headers.get("Content-Encoding", "").lower()
    decoder = Gunzip() if gzipped else None
    spill = tempfile.SpooledTemporaryFile(max_size=in_memory)
    check = BodyCheck()
    try:
        for raw in response.raw.stream(CHUNK_BYTES, decode_content=False):
            if cancelled is not None and cancelled.is_set():
                raise Cancelled()
            data = decoder.decompress(raw) if decoder else raw
            spill.write(data)
            check.take(data)
        if decoder is not None and not decoder.complete():
            raise Retriable("the gzip stream ended early (response cut off)")
    except (urllib3.exceptions.HTTPError, requests.RequestException, http.client.HTTPException, OSError,
            zlib.error) as exc:
        spill.close()
        raise Retriable(f"the response was cut off ({type(exc).__name__})") from None
    except BaseException:
        spill.close()
        raise
    if check.finish().trailer is not None:
        spill.close()
        raise Retriable(f"Mixpanel ended the export early ({check.trailer.decode(errors='replace')!r})")
    return spill, check


def _server_time_ms(response: requests.Response, headers_seconds: float, fallback_ms: int) -> int:
    """When Mixpanel had surely received the request: its Date header, less the time to headers.

    The Date header is stamped after the request arrived but at one-second resolution; subtracting
    the whole round trip to the headers gives a lower bound on the arrival in Mixpanel's own clock.
    """
    header = response.headers.get("Date")
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
    value = response.headers.get("Retry-After")
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
