"""Mixpanel's HTTP APIs: where each answers, the export query of a window, the one HTTP session, the
one request function (`_send`), its deadline.

Each API path is an `Endpoint` with its host per data-residency region: the Raw Event Export API on
data.mixpanel.com / data-eu.mixpanel.com / data-in.mixpanel.com, the Query API (engage: people
profiles) on mixpanel.com / eu.mixpanel.com / in.mixpanel.com. `api_base_url` replaces the scheme and
host of every API: one base URL serves all their paths (a proxy that routes them, the fake server).
A stream names its endpoint in its definition (catalog.StreamDef); this module names no stream.

`check` and the reads send their requests through `export_get` and `engage_post`, both one `_send`
with the same auth, streaming, timeouts and redirect handling, so all honour proxies
(HTTP(S)_PROXY, NO_PROXY) and REQUESTS_CA_BUNDLE as requests does, and both refuse redirects: a
redirect from the export host is never Mixpanel's answer (a captive portal, a misconfigured proxy),
and following it would carry the query, or with some clients the credentials, to another host.

A read timeout only bounds the silence between two bytes, so a server that trickles a byte a second
would hold an attempt forever. Every attempt therefore also has a `Deadline` that grows with what
it received; past it, the attempt's socket is shut down from a watching thread, which ends a read
blocked in it (headers or body) at once.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from .body import Gunzip, GzipError
from .config import Config
from .windows import ONE_DAY, Window, midnight

CONNECT_TIMEOUT_SECONDS = 30
USER_AGENT = "source-mixpanel-export (Airbyte connector)"
# After request_timeout_seconds, an attempt must have averaged this much on the wire (gzip): Mixpanel
# sends megabytes a second, so only a stalled or hostile server is this slow.
MIN_BYTES_PER_SECOND = 16 * 1024
CHUNK_BYTES = 1 << 16  # bytes read off the wire at a time (read_decoded)
WATCH_SECONDS = 0.5
# What reading a body raw can raise besides requests' own errors: the connection cut or shut by its
# deadline (urllib3, http.client, OSError), a broken gzip stream.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
    GzipError,
)  # how often a deadline is looked at
_attempt = threading.local()  # the Deadline of the attempt this thread is making
EXPORT_HOSTS = {"US": "data.mixpanel.com", "EU": "data-eu.mixpanel.com", "IN": "data-in.mixpanel.com"}
QUERY_HOSTS = {"US": "mixpanel.com", "EU": "eu.mixpanel.com", "IN": "in.mixpanel.com"}


@dataclass(frozen=True)
class Endpoint:
    """One Mixpanel API path, and the host that serves it in each data-residency region (by region code).

    Example: `EXPORT_ENDPOINT.url(config)` is `https://data-eu.mixpanel.com/api/2.0/export` for region EU,
    and `http://127.0.0.1:8765/api/2.0/export` with that api_base_url, whatever the region.
    """

    path: str
    hosts: Mapping[str, str]

    def url(self, config: Config) -> str:
        """Where this endpoint answers for `config`: api_base_url's scheme and host, else the region's host,
        then the path."""
        return (_override(config) or f"https://{self.hosts[config.region]}") + self.path


EXPORT_ENDPOINT = Endpoint("/api/2.0/export", EXPORT_HOSTS)  # the Raw Event Export API (GET, JSON Lines)
ENGAGE_ENDPOINT = Endpoint("/api/query/engage", QUERY_HOSTS)  # the Query API's people profiles (POST, JSON)


def _override(config: Config) -> str | None:
    """api_base_url as `scheme://host[:port]`, or None when the config leaves Mixpanel's hosts in place.

    Config keeps the export API's base URL only (`base_url`: api_base_url, else the region's export
    host), so an override is a base_url other than the region's export host.
    """
    return None if config.base_url == f"https://{EXPORT_HOSTS[config.region]}" else config.base_url


class Deadline:
    """An attempt may take `grace` seconds plus one second per MIN_BYTES_PER_SECOND it received.

    Kept with the machine's monotonic clock, not the sync's injected one: it bounds real socket I/O.
    """

    def __init__(self, grace: float, stop: threading.Event | None = None) -> None:
        self.grace = grace
        self.stop = stop  # a stopping sync ends its attempts at once
        self.received = 0
        self.expired = False
        self.connection: Any = None  # the urllib3 connection of the attempt, once it has one
        self.response: requests.Response | None = None  # its response, once the headers are in
        self._started = time.monotonic()
        self._done = threading.Event()

    def elapsed(self) -> float:
        """Seconds since the attempt began."""
        return time.monotonic() - self._started

    def problem(self) -> str:
        """What went wrong, for the retry's log line and the final error."""
        return (
            f"the answer came too slowly ({self.received / 1e3:.0f} kB in {self.elapsed():.0f} s; after "
            f"request_timeout_seconds ({self.grace:.0f} s) at least {MIN_BYTES_PER_SECOND // 1024} kB/s is expected)"
        )

    def watch(self) -> None:
        """Until the attempt ends: shut its socket down once it is past its deadline (and keep trying
        while it has none yet, as while it connects).

        Once the headers are in, only the response's own socket is shut down: the connection object
        goes back to the shared pool when the body has been read, and may by then serve another thread.
        """
        while not self._done.wait(WATCH_SECONDS):
            stopping = self.stop is not None and self.stop.is_set()
            if not stopping and self.elapsed() <= self.grace + self.received / MIN_BYTES_PER_SECOND:
                continue
            self.expired = not stopping
            if self.response is not None:
                sock = _response_socket(self.response)
            else:
                sock = getattr(self.connection, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return

    def end(self) -> None:
        self._done.set()


def _response_socket(response: requests.Response | None) -> socket.socket | None:
    """The socket a response's body is read from. http.client lets go of the connection's socket once
    the headers of a body that ends with the connection are in; the body's file object keeps it."""
    raw = getattr(getattr(getattr(getattr(response, "raw", None), "_fp", None), "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


@contextmanager
def deadline(grace: float, stop: threading.Event | None = None) -> Iterator[Deadline]:
    """A Deadline for the requests this thread makes inside the block (see `_WatchedAdapter`)."""
    watched = Deadline(grace, stop)
    _attempt.deadline = watched
    watcher = threading.Thread(target=watched.watch, name="mixpanel-export-deadline", daemon=True)
    watcher.start()
    try:
        yield watched
    finally:
        watched.end()
        _attempt.deadline = None


class _WatchedAdapter(HTTPAdapter):
    """Hands each connection a request is about to use to the Deadline of the thread's attempt.

    requests has no hook between taking a connection from its pool and sending on it, so the pool's
    `_get_conn` (urllib3 2) is wrapped, once per pool.
    """

    def get_connection_with_tls_context(self, *args: Any, **kwargs: Any) -> Any:
        pool = super().get_connection_with_tls_context(*args, **kwargs)
        if not getattr(pool, "_deadline_aware", False):
            take = pool._get_conn

            def get_conn(timeout: float | None = None) -> Any:
                connection = take(timeout=timeout)
                watched = getattr(_attempt, "deadline", None)
                if watched is not None:
                    watched.connection = connection
                return connection

            pool._get_conn = get_conn  # type: ignore[method-assign]
            pool._deadline_aware = True  # type: ignore[attr-defined]
        return pool


def new_session() -> requests.Session:
    """A session for one command: gzip bodies, our User-Agent, proxies and CA bundle from the environment."""
    session = requests.Session()
    session.headers.update({"Accept-Encoding": "gzip", "User-Agent": USER_AGENT})
    adapter = _WatchedAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def export_get(
    session: requests.Session, config: Config, params: Mapping[str, str], read_timeout: float
) -> requests.Response:
    """One export request, streamed; a 3xx comes back as the response (see the module docstring).
    Make it inside `with deadline(...)` so that it cannot be held forever."""
    return _send(session, config, "GET", EXPORT_ENDPOINT.url(config), read_timeout, params=params)


def engage_post(
    session: requests.Session, config: Config, form: Mapping[str, str], read_timeout: float
) -> requests.Response:
    """One Engage (Query API) request, its fields form-encoded; otherwise as `export_get`."""
    params = {"project_id": str(config.project_id)} if config.project_id is not None else {}
    return _send(session, config, "POST", ENGAGE_ENDPOINT.url(config), read_timeout, params=params, data=form)


def _send(
    session: requests.Session,
    config: Config,
    method: str,
    url: str,
    read_timeout: float,
    params: Mapping[str, str] | None = None,
    data: Mapping[str, str] | None = None,
) -> requests.Response:
    """The one request every API call makes: the config's Basic auth, a streamed body, both timeouts, no
    redirect followed; the response handed to this thread's Deadline."""
    response = session.request(
        method,
        url,
        params=dict(params or {}),
        data=dict(data) if data is not None else None,
        auth=config.credentials.basic_auth(),
        stream=True,
        timeout=(CONNECT_TIMEOUT_SECONDS, read_timeout),
        allow_redirects=False,
    )
    return _watched(response)


def _watched(response: requests.Response) -> requests.Response:
    """Hand the response to the Deadline of this thread's attempt, which can then shut its socket."""
    watched = getattr(_attempt, "deadline", None)
    if watched is not None:
        watched.response = response
    return response


def read_decoded(response: requests.Response, watched: Deadline, max_bytes: int) -> bytes:
    """The first `max_bytes` (at most) of a response's decoded body, what came over the wire counted
    for its deadline.

    The body is read as it came over the wire and inflated here by body.Gunzip, in pieces of at most
    PIECE_BYTES: `iter_content` leaves that to urllib3, which (before 2.6) inflates each read whole,
    some 64 MB at once from 64 kB of a gzip bomb. It is gathered in a BytesIO, whose getvalue() returns
    the buffer itself as bytes; a bytearray would need bytes(...), a second copy of the whole body.
    """
    gzipped = "gzip" in response.headers.get("Content-Encoding", "").lower()
    decoder = Gunzip() if gzipped else None
    body = io.BytesIO()  # its getvalue() hands over the buffer it grew: bytes without a copy of the whole
    size = 0
    for raw in response.raw.stream(CHUNK_BYTES, decode_content=False):
        watched.received += len(raw)
        for piece in decoder.pieces(raw) if decoder else (raw,):
            size += body.write(piece[: max_bytes - size])
            if size >= max_bytes:
                return body.getvalue()
    return body.getvalue()


def where_clause(user_where: str | None, window: Window, timezone: str) -> str | None:
    """The `where` parameter: the user's expression and the window's own narrowing, all required."""
    parts = [f"({user_where})"] if user_where else []
    arrivals = arrivals_clause(window, timezone)
    if arrivals:
        parts.append(arrivals)
    if window.time_from is not None:
        parts.append(f'properties["$time"] >= datetime({window.time_from})')
    if window.time_to is not None:
        parts.append(f'properties["$time"] < datetime({window.time_to})')
    return " and ".join(parts) or None


def arrivals_clause(window: Window, timezone: str) -> str | None:
    """Only the events processed after each day's watermark (Window.marks). A window over ranges with
    different watermarks has one condition per range, told apart by `$time` at their first days'
    midnights in `timezone`; the first is open below and the last above, as a day's pieces are, so no
    event of the window's days falls outside every condition. Only projects whose `$time` is a true
    instant get such windows (state.sync_plan): a legacy project's `$time` is its local clock shifted, and
    a boundary put at the wrong instant would give events of one range the watermark of its neighbour."""
    marks = window.marks()
    if len(marks) <= 1:
        mark = marks[0][2] if marks else None
        return None if mark is None else _processed_after(mark)
    options = []
    for index, (first, last, mark) in enumerate(marks):
        conditions = []
        if index > 0:
            conditions.append(f'properties["$time"] >= datetime({midnight(first, timezone)})')
        if index < len(marks) - 1:
            conditions.append(f'properties["$time"] < datetime({midnight(last + ONE_DAY, timezone)})')
        if mark is not None:
            conditions.append(_processed_after(mark))
        options.append("(" + " and ".join(conditions) + ")")
    return "(" + " or ".join(options) + ")"


def _processed_after(mark: int) -> str:
    return f'number(properties["mp_processing_time_ms"]) > {mark}'


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
    where = where_clause(config.where, window, config.request_timezone)
    if where:
        params["where"] = where
    if limit is not None:
        params["limit"] = str(limit)
    return params
