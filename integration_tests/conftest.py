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
    """Answers every export request with `respond(handler)`; counts the requests."""

    protocol_version = "HTTP/1.1"
    respond: Callable[[Any], None] = staticmethod(lambda handler: None)
    requests = 0

    def do_GET(self) -> None:
        type(self).requests += 1
        try:
            self.respond(self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[Callable[[Callable[[Any], None]], str]]:
    """Starts tiny servers on 127.0.0.1 that answer every request with the given function (test_hostile_server)."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(respond: Callable[[Any], None]) -> str:
        handler = type("Handler", (Hostile,), {"respond": staticmethod(respond), "requests": 0})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
