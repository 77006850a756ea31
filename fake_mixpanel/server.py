"""A local fake of Mixpanel's Raw Event Export and Engage APIs, with a settable clock and fault injection, for tests."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import email.utils
import gzip
import json
import random
import re
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlsplit

from .data import FakeEvent, local_time_ms
from .engage import DEFAULT_PAGE_SIZE, DEFAULT_SESSION_TTL_MS, ENGAGE_PATH, EngageError, ProfileStore, read_form
from .profiles import DistinctId, FakeProfile
from .where import UNDEFINED, Lookup, WhereError, compile_where

EXPORT_PATH = "/api/2.0/export"
EVENT_NAMES_PATH = "/api/query/events/names"
TOP_PROPERTIES_PATH = "/api/query/events/properties/top"
CLOCK_PATH = "/_fake/clock"  # not Mixpanel's: lets a demo in another process move the ingestion clock
MAX_LIMIT = 100_000
_MS_PER_DAY = 86_400_000
_EPOCH_DAY = dt.date(1970, 1, 1)
_STREAM_BATCH = 4096  # lines per streamed chunk (about 2 MB before compression)
_DATE_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Every error message the fake answers with; bodies are always {"error": <message>}.
ERR_INVALID_CREDENTIALS = "Invalid credentials"
ERR_UNABLE_TO_AUTHENTICATE = "Unable to authenticate request"
ERR_PROJECT_ID_REQUIRED = "project_id is required when authenticating with a service account"
ERR_PROJECT_ID_NOT_INTEGER = "project_id must be an integer"
ERR_NO_PROJECT_PERMISSION = "You don't have permission to access this project"
ERR_MISSING_PARAM = "{param} is a required parameter"
ERR_INVALID_DATE = "{param} must be a date in YYYY-MM-DD format"
ERR_FROM_AFTER_TO = "from_date cannot be later than to_date"
ERR_TO_DATE_IN_FUTURE = "to_date cannot be later than today"
ERR_INVALID_EVENT = "event must be a JSON array of event names"
ERR_INVALID_LIMIT = f"limit must be an integer between 1 and {MAX_LIMIT}"
ERR_INVALID_WHERE = "invalid where expression: {reason}"
ERR_NOT_FOUND = "Not found"
ERR_INJECTED = "Injected failure"
ERR_RATE_LIMITED = "Query rate limit exceeded"
ERR_TIMEOUT = "Timeout Error."

AuthKind = Literal["service_account", "project_secret", "none", "bad"]
FaultKind = Literal["status", "cut_off", "terminated_early", "drop", "bad_json", "slow"]
Order = Literal["shuffled", "time", "reverse"]
_FAULT_KINDS = ("status", "cut_off", "terminated_early", "drop", "bad_json", "slow")


def error_body(message: str) -> bytes:
    """Render an error the way Mixpanel does, so clients parse the same JSON shape."""
    return json.dumps({"error": message}).encode("utf-8")


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour, so tests can check the client's handling of real-world failures."""

    kind: FaultKind
    status: int = 500
    body: bytes | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    at_fraction: float = 0.5
    trailer: str = "terminated early"
    delay_s: float = 1.0
    corrupt_line: bytes = b'{"event": "Broken", "properties": {'
    # cut_off: False announces the whole body's Content-Length and hangs up after the cut; True sends the
    # cut body (before compression) as a complete answer of that length, so only its content is broken.
    consistent_length: bool = False

    def __post_init__(self) -> None:
        """Reject typos early rather than serving a silently normal response."""
        if self.kind not in _FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {_FAULT_KINDS}")
        if not 0.0 <= self.at_fraction <= 1.0:
            raise ValueError("at_fraction must be within [0, 1]")

    def body_bytes(self) -> bytes:
        """Give the body of a "status" fault, defaulting to a plausible JSON error."""
        if self.body is None:
            message = {429: ERR_RATE_LIMITED, 400: ERR_TIMEOUT}.get(self.status, ERR_INJECTED)
            return error_body(message)
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body


@dataclass
class RequestRecord:
    """What the server saw and did for one request (never credentials), so tests can assert on the traffic."""

    number: int
    path: str
    params: dict[str, str]
    arrived_monotonic: float
    arrived_wall: float
    auth: AuthKind
    gzip: bool
    status: int = 0
    fault: str | None = None
    lines: int = 0
    finished_monotonic: float | None = None
    sent_bytes: int = 0  # body bytes written, as sent (compressed when gzip was asked for)
    method: str = "GET"


@dataclass
class _Rule:
    """A predicate-triggered fault with a remaining use count."""

    predicate: Callable[[RequestRecord], bool]
    fault: Fault
    remaining: int
    path: str = EXPORT_PATH


@dataclass
class _Reply:
    """A response before faults and compression are applied."""

    status: int
    body: bytes = b""
    items: list[int | bytes] | None = None  # export body: event indices (rendered lazily) or literal lines
    time_in_ms: bool = False
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    corruptible: bool = False  # a JSON body (an Engage page) that the cut_off and bad_json faults may break


class _HttpError(Exception):
    """Short-circuits request handling with an error status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """Keep the status, message and any extra headers."""
        super().__init__(message)
        self.reply = _Reply(status, error_body(message), headers=headers or {})


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its fake and stays quiet when clients hang up."""

    daemon_threads = True
    allow_reuse_address = True
    fake: FakeMixpanel

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore client disconnects, which tests provoke on purpose; report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes HTTP requests to the FakeMixpanel instance."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeMixpanel/1.0"
    timeout = 60
    server: _Server

    def do_GET(self) -> None:
        """Serve every GET through the fake."""
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        """Serve a POST (the Engage API) with its form fields merged into the query parameters."""
        self.server.fake._serve(self, read_form(self.headers, self.rfile))

    def version_string(self) -> str:
        """Name the fake in the Server header, without the Python version."""
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """Stamp the Date header from the fake's clock, so clients reading it see the test's time."""
        fake = self.server.fake
        if fake.date_header is not None:
            return fake.date_header
        if timestamp is None:
            timestamp = (fake.current_ms() + fake.date_skew_ms) / 1000
        return email.utils.formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        """Log only when asked, so test output stays clean."""
        if self.server.fake.verbose:
            super().log_message(format, *args)


class FakeMixpanel:
    """An in-process Mixpanel export server whose data, clock and failures the test controls."""

    def __init__(
        self,
        events: Iterable[FakeEvent] = (),
        *,
        username: str = "sa-user",
        secret: str = "sa-secret",
        project_id: int = 12345,
        api_secret: str = "proj-secret",
        legacy_timezone: str | None = None,
        now_ms: int | None = None,
        auth_error_style: Literal["401", "400"] = "401",
        host: str = "127.0.0.1",
        port: int = 0,
        order: Order = "shuffled",
        verbose: bool = False,
        cache_bodies: bool = False,
        profiles: Iterable[FakeProfile] = (),
        engage_page_size: int = DEFAULT_PAGE_SIZE,
        engage_session_ttl_ms: int = DEFAULT_SESSION_TTL_MS,
    ) -> None:
        """Store settings and index the events; nothing listens until start().

        `cache_bodies` keeps each fault-free export body as sent (compressed) and sends it again for
        the same lines: the benchmark's server then costs next to no CPU after a warm-up, as Mixpanel's
        servers cost the connector's machine none. It also keeps which lines answer each export query
        once every event is processed by the clock (no later answer can differ), so a repeated query
        is not selected and shuffled again (1.3 s of CPU before the first byte at 1M events).
        `profiles` are the user profiles the Engage API serves; `engage_page_size` and `engage_session_ttl_ms`
        (on the fake's clock) are attributes a test may change at any time.
        """
        if auth_error_style not in ("401", "400"):
            raise ValueError("auth_error_style must be '401' or '400'")
        if order not in ("shuffled", "time", "reverse"):
            raise ValueError("order must be 'shuffled', 'time' or 'reverse'")
        if legacy_timezone is not None:
            local_time_ms(0, legacy_timezone)  # fail fast on an unknown zone
        self.username = username
        self.secret = secret
        self.project_id = project_id
        self.api_secret = api_secret
        self.now_ms = now_ms
        # The Date header as a broken server or proxy sends it: this far from the fake's clock, or this text.
        self.date_skew_ms = 0
        self.date_header: str | None = None
        self.auth_error_style = auth_error_style
        self.order = order
        self.verbose = verbose
        self._legacy_timezone = legacy_timezone
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._released = threading.Event()  # ends every `slow` fault's wait (release_slow, stop)
        self._events: list[FakeEvent] = []
        self._shown_ms: list[int] = []
        self._by_day: dict[int, list[int]] = {}
        self._line_cache: dict[bool, list[bytes | None]] = {True: [], False: []}
        self._requests: list[RequestRecord] = []
        self._export_count = 0
        self._by_number: dict[tuple[str, int], Fault] = {}
        self._rules: list[_Rule] = []
        self._cache_bodies = cache_bodies
        self._bodies: dict[tuple[bool, bool, tuple[int | bytes, ...]], list[bytes]] = {}
        self._selections: dict[tuple[str, tuple[tuple[str, str], ...]], list[int]] = {}  # see cache_bodies
        self._last_processing_ms = 0  # the latest processing time of any event
        self._generation = 0  # events added so far, in calls (a selection made before a call is not kept)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.engage_page_size = engage_page_size
        self.engage_session_ttl_ms = engage_session_ttl_ms
        self._engage_count = 0
        self._profiles = ProfileStore()
        self.add_events(events)
        self.add_profiles(profiles)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen in a daemon thread and return the base URL to give the client."""
        with self._lock:
            if self._httpd is None:
                self._httpd = _Server((self._host, self._port), _Handler)
                self._httpd.fake = self
                self._thread = threading.Thread(
                    target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-mixpanel", daemon=True
                )
                self._thread.start()
            return self.base_url

    def release_slow(self) -> None:
        """End the wait of every `slow` fault now and from now on, so a test need not sit it out."""
        self._released.set()

    def stop(self) -> None:
        """Stop listening; safe to call twice."""
        self._released.set()
        with self._lock:
            httpd, thread = self._httpd, self._thread
            self._httpd, self._thread = None, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        """Start on entering a with block."""
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop on leaving a with block."""
        self.stop()

    @property
    def base_url(self) -> str:
        """The URL to point the client at (without a trailing slash)."""
        if self._httpd is None:
            raise RuntimeError("FakeMixpanel is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def legacy_timezone(self) -> str | None:
        """The project timezone of a pre-2023 project, or None for a UTC project; fixed at construction."""
        return self._legacy_timezone

    def current_ms(self) -> int:
        """The server's notion of now: the test-set clock, else real time."""
        now = self.now_ms
        return int(time.time() * 1000) if now is None else now

    # -- data --------------------------------------------------------------------------------------------------

    def add_events(self, events: Iterable[FakeEvent]) -> None:
        """Store more events (e.g. late arrivals between syncs); safe while serving."""
        with self._lock:
            for event in events:
                index = len(self._events)
                shown = local_time_ms(event.time_ms, self._legacy_timezone)
                self._events.append(event)
                self._shown_ms.append(shown)
                self._by_day.setdefault(shown // _MS_PER_DAY, []).append(index)
                self._line_cache[True].append(None)
                self._line_cache[False].append(None)
                if event.processing_ms is not None:
                    self._last_processing_ms = max(self._last_processing_ms, event.processing_ms)
            self._generation += 1
            self._selections.clear()

    @property
    def events(self) -> tuple[FakeEvent, ...]:
        """A snapshot of every stored event, visible or not."""
        with self._lock:
            return tuple(self._events)

    def render_all(self, time_in_ms: bool = True) -> None:
        """Pre-render every line, so a benchmark does not time the fake's first-request rendering."""
        with self._lock:
            count = len(self._events)
        for index in range(count):
            self._line(index, time_in_ms)

    def _line(self, index: int, time_in_ms: bool) -> bytes:
        """Return the cached export line of one event, rendering it on first use."""
        cache = self._line_cache[time_in_ms]
        line = cache[index]
        if line is None:
            line = self._events[index].export_line(time_in_ms, self._legacy_timezone)
            cache[index] = line
        return line

    # -- profiles (the Engage API, engage.py) ------------------------------------------------------------------

    def add_profiles(self, profiles: Iterable[FakeProfile], data_group_id: str | None = None) -> None:
        """Store user profiles, or the group profiles of one data_group_id; safe while serving."""
        self._profiles.add(profiles, data_group_id)

    @property
    def profiles(self) -> tuple[FakeProfile, ...]:
        """A snapshot of the stored user profiles, in serving order."""
        return self._profiles.snapshot()

    def group_profiles(self, data_group_id: str) -> tuple[FakeProfile, ...]:
        """A snapshot of the stored group profiles of one data_group_id."""
        return self._profiles.snapshot(data_group_id)

    def update_profile(
        self,
        distinct_id: DistinctId,
        properties: dict[str, Any],
        ignore_time: bool = False,
        data_group_id: str | None = None,
    ) -> FakeProfile:
        """Set properties like Mixpanel's $set (creating the profile if none) and `$last_seen` to the fake's now,
        unless ignore_time: $ignore_time updates and edits in Mixpanel's UI leave `$last_seen` alone."""
        now_ms = None if ignore_time else self.current_ms()
        return self._profiles.update(distinct_id, properties, now_ms, data_group_id)

    def delete_profile(self, distinct_id: DistinctId, data_group_id: str | None = None) -> None:
        """Delete a profile: sessions opened later do not find it (KeyError if there is none)."""
        self._profiles.delete(distinct_id, data_group_id)

    def expire_sessions(self) -> None:
        """End every Engage session now: a later page above 0 of any of them is refused."""
        self._profiles.expire_sessions()

    @property
    def engage_requests(self) -> list[RequestRecord]:
        """Only the Engage requests, numbered from 1 apart from the export's."""
        with self._lock:
            return [r for r in self._requests if r.path == ENGAGE_PATH]

    # -- faults and observation --------------------------------------------------------------------------------

    def inject(self, request_number: int, fault: Fault, path: str = EXPORT_PATH) -> None:
        """Make the Nth export request (counted from 1 in arrival order) misbehave; or the Nth of path=ENGAGE_PATH."""
        with self._lock:
            self._by_number[(path, request_number)] = fault

    def inject_when(
        self, predicate: Callable[[RequestRecord], bool], fault: Fault, times: int = 1, path: str = EXPORT_PATH
    ) -> None:
        """Make the first `times` export requests (or of path=ENGAGE_PATH) that match the predicate misbehave."""
        with self._lock:
            self._rules.append(_Rule(predicate, fault, times, path))

    def clear_faults(self) -> None:
        """Forget every pending fault."""
        with self._lock:
            self._by_number.clear()
            self._rules.clear()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received so far, any path, in arrival order (a copy of the list)."""
        with self._lock:
            return list(self._requests)

    @property
    def export_requests(self) -> list[RequestRecord]:
        """Only the export requests, which are the ones numbered from 1."""
        with self._lock:
            return [r for r in self._requests if r.path == EXPORT_PATH]

    def reset_requests(self) -> None:
        """Clear the log and restart export (and Engage) numbering at 1 (pending faults keep their numbers)."""
        with self._lock:
            self._requests.clear()
            self._export_count = 0
            self._engage_count = 0

    def _take_fault(self, record: RequestRecord) -> Fault | None:
        """Pick the fault for a new numbered (export or Engage) request, consuming it."""
        fault = self._by_number.pop((record.path, record.number), None)
        if fault is not None:
            return fault
        for rule in self._rules:
            if rule.path == record.path and rule.remaining > 0 and rule.predicate(record):
                rule.remaining -= 1
                return rule.fault
        return None

    # -- request handling ----------------------------------------------------------------------------------------

    def _serve(self, handler: _Handler, form: dict[str, str] | None = None) -> None:
        """Handle one request (a POST's form fields override its query's): log it, apply any fault, answer."""
        arrived_monotonic, arrived_wall = time.monotonic(), time.time()
        url = urlsplit(handler.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        params.update(form or {})
        auth = self._classify_auth(handler.headers.get("Authorization"))
        wants_gzip = "gzip" in (handler.headers.get("Accept-Encoding") or "").lower()
        with self._lock:
            number = 0
            if url.path == EXPORT_PATH:
                self._export_count += 1
                number = self._export_count
            elif url.path == ENGAGE_PATH:
                self._engage_count += 1
                number = self._engage_count
            record = RequestRecord(number, url.path, params, arrived_monotonic, arrived_wall, auth, wants_gzip)
            record.method = handler.command
            self._requests.append(record)
            fault = self._take_fault(record) if number else None
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "slow":
                self._released.wait(fault.delay_s)
            elif fault.kind == "drop":
                record.finished_monotonic = time.monotonic()
                _hang_up(handler)
                return
        if fault is not None and fault.kind == "status":
            headers = {k: v for k, v in fault.headers.items() if k.lower() != "content-type"}
            content_type = next((v for k, v in fault.headers.items() if k.lower() == "content-type"), None)
            reply = _Reply(
                fault.status, fault.body_bytes(), content_type=content_type or "application/json", headers=headers
            )
        else:
            try:
                reply = self._route(url.path, params, auth)
            except _HttpError as exc:
                reply = exc.reply
        self._send(handler, record, reply, fault)

    def _send(self, handler: _Handler, record: RequestRecord, reply: _Reply, fault: Fault | None) -> None:
        """Apply body faults, then write the response: export bodies streamed, the rest whole."""
        try:
            if reply.items is None and reply.corruptible and fault is not None and fault.kind == "cut_off":
                self._send_whole(handler, record, reply, reply.body, fault.at_fraction, fault.consistent_length)
                return
            if reply.items is None and reply.corruptible and fault is not None and fault.kind == "bad_json":
                middle = len(reply.body) // 2
                self._send_whole(handler, record, reply, reply.body[:middle] + fault.corrupt_line + reply.body[middle:])
                return
            if reply.items is None:
                if fault is not None and fault.kind not in ("status", "slow"):
                    record.fault = None  # a body fault on an error reply has nothing to corrupt
                self._send_whole(handler, record, reply, reply.body, None)
                return
            items = _corrupt(reply.items, fault)
            record.lines = list(map(type, items)).count(int)  # event indices; 4x faster than a generator
            if fault is not None and fault.kind == "cut_off":
                body = b"".join(self._render(items, reply.time_in_ms))
                self._send_whole(handler, record, reply, body, fault.at_fraction, fault.consistent_length)
            elif self._cache_bodies and fault is None:
                self._send_cached(handler, record, reply, items)
            else:
                self._send_streamed(handler, record, reply, items)
        except (ConnectionError, TimeoutError):
            handler.close_connection = True
        finally:
            record.finished_monotonic = time.monotonic()

    def _start_reply(self, handler: _Handler, record: RequestRecord, reply: _Reply, length: int | None) -> None:
        """Write the status line and headers; no length means chunked transfer encoding."""
        record.status = reply.status
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        if length is None:
            handler.send_header("Transfer-Encoding", "chunked")
        else:
            handler.send_header("Content-Length", str(length))
        if record.gzip:
            handler.send_header("Content-Encoding", "gzip")
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.end_headers()

    def _send_whole(
        self,
        handler: _Handler,
        record: RequestRecord,
        reply: _Reply,
        body: bytes,
        cut_fraction: float | None = None,
        consistent_length: bool = False,
    ) -> None:
        """Send a body with its Content-Length, or only a prefix of it before hanging up (the cut_off fault);
        consistent_length sends the prefix as the whole answer instead."""
        if cut_fraction is not None and consistent_length:
            body, cut_fraction = body[: int(len(body) * cut_fraction)], None
            record.lines = min(record.lines, body.count(b"\n"))
        if record.gzip:
            body = gzip.compress(body, compresslevel=1, mtime=0)
        self._start_reply(handler, record, reply, len(body))
        if cut_fraction is None:
            handler.wfile.write(body)
            record.sent_bytes += len(body)
            return
        sent = body[: int(len(body) * cut_fraction)]
        record.sent_bytes += len(sent)
        record.lines = _complete_lines(sent, record.gzip)
        handler.wfile.write(sent)
        _hang_up(handler)

    def _send_streamed(self, handler: _Handler, record: RequestRecord, reply: _Reply, items: list[int | bytes]) -> None:
        """Render, compress and send in large chunks, so the client starts reading before the body is complete."""
        self._start_reply(handler, record, reply, None)
        compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if record.gzip else None
        write = handler.wfile.write
        for start in range(0, len(items), _STREAM_BATCH):
            data = b"".join(self._render(items[start : start + _STREAM_BATCH], reply.time_in_ms))
            if compressor is not None:
                data = compressor.compress(data)
            if data:
                write(b"%X\r\n%b\r\n" % (len(data), data))
                record.sent_bytes += len(data)
        tail = compressor.flush() if compressor is not None else b""
        if tail:
            write(b"%X\r\n%b\r\n" % (len(tail), tail))
            record.sent_bytes += len(tail)
        write(b"0\r\n\r\n")

    def _send_cached(self, handler: _Handler, record: RequestRecord, reply: _Reply, items: list[int | bytes]) -> None:
        """_send_streamed's chunks, made once per body and kept (see cache_bodies)."""
        key = (record.gzip, reply.time_in_ms, tuple(items))
        chunks = self._bodies.get(key)
        if chunks is None:
            chunks = []
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if record.gzip else None
            for start in range(0, len(items), _STREAM_BATCH):
                data = b"".join(self._render(items[start : start + _STREAM_BATCH], reply.time_in_ms))
                chunks.append(compressor.compress(data) if compressor is not None else data)
            chunks.append(compressor.flush() if compressor is not None else b"")
            chunks = [chunk for chunk in chunks if chunk]
            self._bodies[key] = chunks
        self._start_reply(handler, record, reply, None)
        write = handler.wfile.write
        for chunk in chunks:
            write(b"%X\r\n%b\r\n" % (len(chunk), chunk))
            record.sent_bytes += len(chunk)
        write(b"0\r\n\r\n")

    def _render(self, items: list[int | bytes], time_in_ms: bool) -> list[bytes]:
        """Turn event indices into their cached lines; literal lines pass through."""
        return [self._line(item, time_in_ms) if isinstance(item, int) else item for item in items]

    def _route(self, path: str, params: dict[str, str], auth: AuthKind) -> _Reply:
        """Dispatch by path after authentication."""
        if path == CLOCK_PATH:
            return self._clock(params)
        if path not in (EXPORT_PATH, EVENT_NAMES_PATH, TOP_PROPERTIES_PATH, ENGAGE_PATH):
            raise _HttpError(404, ERR_NOT_FOUND)
        self._check_auth(auth, params)
        if path == EXPORT_PATH:
            return self._export(params)
        if path == ENGAGE_PATH:
            return self._engage(params)
        if path == EVENT_NAMES_PATH:
            return self._event_names(params)
        return self._top_properties(params)

    def _classify_auth(self, header: str | None) -> AuthKind:
        """Say which credential a request carries, without keeping it."""
        if not header:
            return "none"
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return "bad"
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return "bad"
        user, colon, password = decoded.partition(":")
        if colon and user == self.username and password == self.secret:
            return "service_account"
        if user == self.api_secret and password == "":
            return "project_secret"
        return "bad"

    def _check_auth(self, auth: AuthKind, params: dict[str, str]) -> None:
        """Enforce credentials and the project_id rules of each credential kind."""
        if auth in ("none", "bad"):
            if self.auth_error_style == "400":
                raise _HttpError(400, ERR_UNABLE_TO_AUTHENTICATE)
            raise _HttpError(401, ERR_INVALID_CREDENTIALS, {"WWW-Authenticate": 'Basic realm="Mixpanel"'})
        raw = params.get("project_id")
        if raw is None or raw == "":
            if auth == "service_account":
                raise _HttpError(400, ERR_PROJECT_ID_REQUIRED)
            return
        try:
            project_id = int(raw)
        except ValueError:
            raise _HttpError(400, ERR_PROJECT_ID_NOT_INTEGER) from None
        if project_id != self.project_id:
            raise _HttpError(403, ERR_NO_PROJECT_PERMISSION)

    def _day_number(self, params: dict[str, str], name: str) -> int:
        """Parse a required YYYY-MM-DD parameter into days since the epoch."""
        raw = params.get(name)
        if not raw:
            raise _HttpError(400, ERR_MISSING_PARAM.format(param=name))
        if not _DATE_SHAPE.fullmatch(raw):
            raise _HttpError(400, ERR_INVALID_DATE.format(param=name))
        try:
            return (dt.date.fromisoformat(raw) - _EPOCH_DAY).days
        except ValueError:
            raise _HttpError(400, ERR_INVALID_DATE.format(param=name)) from None

    def _export(self, params: dict[str, str]) -> _Reply:
        """Answer an export request with the matching, visible events as JSON Lines."""
        first_day = self._day_number(params, "from_date")
        last_day = self._day_number(params, "to_date")
        if first_day > last_day:
            raise _HttpError(400, ERR_FROM_AFTER_TO)
        now = self.current_ms()
        if last_day > local_time_ms(now, self._legacy_timezone) // _MS_PER_DAY:
            raise _HttpError(400, ERR_TO_DATE_IN_FUTURE)
        names = _parse_event_filter(params.get("event"))
        where = params.get("where")
        try:
            predicate = compile_where(where) if where else None
        except WhereError as exc:
            raise _HttpError(400, ERR_INVALID_WHERE.format(reason=exc)) from None
        limit = _parse_limit(params.get("limit"))
        time_in_ms = params.get("time_in_ms", "").lower() == "true"
        content_type = "text/plain; charset=utf-8"

        query = (self.order, tuple(sorted(params.items())))
        with self._lock:
            generation = self._generation
            settled = self._cache_bodies and now >= self._last_processing_ms
            kept = self._selections.get(query) if settled else None
            if kept is not None:
                return _Reply(200, items=list(kept), time_in_ms=time_in_ms, content_type=content_type)
            candidates = [i for day in range(first_day, last_day + 1) for i in self._by_day.get(day, ())]
        events, shown = self._events, self._shown_ms
        selected = []
        for index in candidates:
            event = events[index]
            if event.processing_ms is not None and event.processing_ms > now:
                continue
            if names is not None and event.name not in names:
                continue
            if predicate is not None and not predicate(_lookup(event, shown[index], time_in_ms)):
                continue
            selected.append(index)
        self._arrange(selected, params)
        if limit is not None:
            del selected[limit:]
        if settled:
            with self._lock:
                if generation == self._generation:  # no events added meanwhile
                    self._selections[query] = selected
        return _Reply(200, items=list(selected), time_in_ms=time_in_ms, content_type=content_type)

    def _engage(self, params: dict[str, str]) -> _Reply:
        """Answer an Engage request with one page of profiles (engage.py)."""
        try:
            body = self._profiles.answer(
                params,
                now_ms=self.current_ms(),
                page_size=self.engage_page_size,
                session_ttl_ms=self.engage_session_ttl_ms,
            )
        except EngageError as exc:
            return _Reply(exc.status, exc.body)
        return _Reply(200, body, corruptible=True)

    def _arrange(self, indices: list[int], params: dict[str, str]) -> None:
        """Order the result: shuffled by default (deterministic per request) so clients cannot lean on order."""
        if self.order == "time":
            indices.sort(key=lambda i: (self._events[i].time_ms, i))
        elif self.order == "reverse":
            indices.sort(key=lambda i: (self._events[i].time_ms, i), reverse=True)
        else:
            random.Random(json.dumps(sorted(params.items()))).shuffle(indices)

    def _visible(self) -> list[FakeEvent]:
        """Events already processed according to the clock."""
        now = self.current_ms()
        with self._lock:
            return [e for e in self._events if e.processing_ms is None or e.processing_ms <= now]

    def _clock(self, params: dict[str, str]) -> _Reply:
        """Advance the ingestion clock by `advance_seconds` (0 just reads it), as tests do in-process."""
        try:
            seconds = float(params.get("advance_seconds", "0"))
        except ValueError:
            raise _HttpError(400, "advance_seconds must be a number") from None
        with self._lock:
            self.now_ms = self.current_ms() + int(seconds * 1000)
        return _Reply(200, json.dumps({"now_ms": self.now_ms}).encode("utf-8"))

    def _event_names(self, params: dict[str, str]) -> _Reply:
        """Answer the Query API's event-name list, most frequent first."""
        limit = _parse_limit(params.get("limit")) or 255
        counts = Counter(e.name for e in self._visible())
        names = [name for name, _ in counts.most_common(limit)]
        return _Reply(200, json.dumps(names).encode("utf-8"))

    def _top_properties(self, params: dict[str, str]) -> _Reply:
        """Answer the Query API's top properties of one event, most frequent first."""
        event_name = params.get("event")
        if not event_name:
            raise _HttpError(400, ERR_MISSING_PARAM.format(param="event"))
        limit = _parse_limit(params.get("limit")) or 10
        counts = Counter(key for e in self._visible() if e.name == event_name for key in e.properties)
        top = {name: {"count": count} for name, count in counts.most_common(limit)}
        return _Reply(200, json.dumps(top, ensure_ascii=False).encode("utf-8"))


def _lookup(event: FakeEvent, shown_ms: int, time_in_ms: bool) -> Lookup:
    """Expose an event's exported properties to a where predicate."""

    def get(name: str) -> Any:
        """Resolve properties["name"] like Mixpanel: $time is the event time, time the exported number."""
        if name == "$time":
            return dt.datetime.fromtimestamp(shown_ms / 1000, dt.UTC)
        if name == "time":
            return shown_ms if time_in_ms else shown_ms // 1000
        if name in ("mp_processing_time_ms", "$mp_api_timestamp_ms"):
            return UNDEFINED if event.processing_ms is None else event.processing_ms
        return event.properties.get(name, UNDEFINED)

    return get


def _parse_event_filter(raw: str | None) -> frozenset[str] | None:
    """Parse the `event` parameter: a JSON array of names."""
    if raw is None or raw == "":
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        raise _HttpError(400, ERR_INVALID_EVENT) from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _HttpError(400, ERR_INVALID_EVENT)
    return frozenset(names)


def _parse_limit(raw: str | None) -> int | None:
    """Parse the `limit` parameter, capped like Mixpanel's."""
    if raw is None or raw == "":
        return None
    try:
        limit = int(raw)
    except ValueError:
        raise _HttpError(400, ERR_INVALID_LIMIT) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _HttpError(400, ERR_INVALID_LIMIT)
    return limit


def _corrupt(items: list[int | bytes], fault: Fault | None) -> list[int | bytes]:
    """Apply the body-level faults: an early-termination trailer or one broken line in the middle."""
    if fault is not None and fault.kind == "terminated_early":
        return [*items[: int(len(items) * fault.at_fraction)], fault.trailer.encode("utf-8") + b"\n"]
    if fault is not None and fault.kind == "bad_json":
        middle = len(items) // 2
        return [*items[:middle], fault.corrupt_line + b"\n", *items[middle:]]
    return items


def _complete_lines(sent: bytes, compressed: bool) -> int:
    """Count the whole lines a client can decode from a cut-off body."""
    if compressed:
        sent = zlib.decompressobj(wbits=31).decompress(sent)
    return sent.count(b"\n")


def _hang_up(handler: _Handler) -> None:
    """Close the client connection abruptly, without finishing any response."""
    handler.close_connection = True
    try:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
