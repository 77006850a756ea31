"""Fixtures: a fresh fake Mixpanel per test, with deterministic awkward events."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

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
