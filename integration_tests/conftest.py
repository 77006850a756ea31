"""Fixtures: a fresh fake Mixpanel per test, with deterministic awkward events."""

from __future__ import annotations

import datetime as dt
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fake_mixpanel import FakeEvent, FakeMixpanel, generate_events
from integration_tests.harness import make_fake

TODAY = dt.datetime.now(dt.UTC).date()
FIRST_DAY = TODAY - dt.timedelta(days=10)
LAST_DAY = TODAY - dt.timedelta(days=1)


@pytest.fixture(scope="session")
def events() -> list[FakeEvent]:
    """1,500 events over the ten days before today, every awkward value kind among them."""
    return generate_events(1500, FIRST_DAY, 10, seed=7)


@pytest.fixture
def fake(events: list[FakeEvent]) -> Iterator[FakeMixpanel]:
    """A running fake whose clock is frozen at the start of the test, but never past 23:00 of TODAY: the
    connector runs at it (harness.connector_clock), so a suite that crosses midnight UTC keeps one today."""
    last_hour = int(dt.datetime.combine(TODAY, dt.time(23), dt.UTC).timestamp() * 1000)
    server = make_fake(events, now_ms=min(int(time.time() * 1000), last_hour))
    yield server
    server.stop()


class Hostile(http.server.BaseHTTPRequestHandler):
    """Answers every export request (GET) with `respond(handler)`, and every Engage request (POST) with
    `respond_post(handler)`, its form read first, when there is one (else 501, as http.server answers a
    method it lacks); counts the requests and keeps the forms posted."""

    protocol_version = "HTTP/1.1"
    respond: Callable[[Any], None] = staticmethod(lambda handler: None)
    respond_post: Callable[[Any], None] | None = None
    requests = 0
    posted: list[bytes] = []

    def do_GET(self) -> None:
        type(self).requests += 1
        try:
            self.respond(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_POST(self) -> None:
        answer = type(self).respond_post
        if answer is None:
            self.send_error(501, "Unsupported method ('POST')")
            return
        type(self).posted.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        try:
            answer(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[Callable[..., str]]:
    """Starts tiny servers on 127.0.0.1 that answer every GET with the given function, and every POST with
    `post` when given (test_hostile_server, test_check_query_api)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(respond: Callable[[Any], None], post: Callable[[Any], None] | None = None) -> str:
        attributes: dict[str, Any] = {"respond": staticmethod(respond), "requests": 0, "posted": []}
        if post is not None:
            attributes["respond_post"] = staticmethod(post)
        handler = type("Handler", (Hostile,), attributes)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
