"""The rate budget: Mixpanel's per-second and per-hour limits, held before a request leaves, never after."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest

from fake_mixpanel import FakeMixpanel, generate_events
from source_mixpanel_export.budget import ARRIVAL_MARGIN, RateBudget
from source_mixpanel_export.client import ExportClient
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.prefetch import fetch_in_order
from source_mixpanel_export.windows import Window

DAY = dt.date(2024, 3, 1)


class Sleeps:
    """A sleep that records what it was asked and tells acquire() to stop, so nothing really waits."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return True


def test_given_room_in_both_rates_when_acquire_then_no_wait():
    """Within the per-second rate, acquire never sleeps."""
    sleeps = Sleeps()
    budget = RateBudget(3, 60, sleep=sleeps)
    for _ in range(3):
        budget.acquire()
    assert sleeps.asked == [] and budget.left_this_hour() == 57


def test_given_per_second_rate_used_when_acquire_then_waits_about_a_second():
    """The fourth request of a second waits for the oldest to leave the window (plus the arrival margin)."""
    sleeps = Sleeps()
    budget = RateBudget(3, 60, sleep=sleeps)
    for _ in range(4):
        budget.acquire()
    (wait,) = sleeps.asked
    assert 0.9 < wait <= 1 + ARRIVAL_MARGIN.total_seconds()


def test_given_hourly_budget_used_when_acquire_then_long_wait_is_announced_with_resume_time(caplog):
    """A wait of minutes is logged, saying when the sync goes on."""
    sleeps = Sleeps()
    budget = RateBudget(100, 2, hour=dt.timedelta(minutes=10), logger=logging.getLogger("test"), sleep=sleeps)
    with caplog.at_level(logging.INFO, logger="test"):
        for _ in range(3):
            budget.acquire()
    (wait,) = sleeps.asked
    assert 590 < wait <= 600 + ARRIVAL_MARGIN.total_seconds()
    assert "2 queries per hour" in caplog.text and "waiting 10 min" in caplog.text
    assert "the sync continues at" in caplog.text and "UTC" in caplog.text
    assert budget.left_this_hour() == 0


def test_given_hold_when_acquire_then_waits_out_the_hold_first():
    """A 429's Retry-After holds back every caller, not only the one that got the 429."""
    sleeps = Sleeps()
    budget = RateBudget(100, 1000, sleep=sleeps)
    budget.hold(30)
    budget.hold(5)  # a shorter hold never shortens a longer one
    budget.acquire()
    (wait,) = sleeps.asked
    assert 29 < wait <= 30


def test_given_stop_during_wait_when_acquire_then_returns_without_counting():
    """A sync that is stopping is not kept waiting for budget."""
    stop = threading.Event()
    stop.set()
    budget = RateBudget(1, 1, hour=dt.timedelta(seconds=30), sleep=stop.wait)
    budget.acquire()
    budget.acquire()  # over budget, but the stop event ends the wait at once
    assert budget.left_this_hour() == 0


@pytest.fixture
def small_fake():
    fake = FakeMixpanel(generate_events(200, DAY, 8, seed=3), now_ms=int(dt.datetime(2024, 4, 1).timestamp() * 1000))
    fake.start()
    yield fake
    fake.stop()


def test_given_short_hour_when_windows_fetched_in_parallel_then_fake_sees_no_more_than_the_hourly_rate(small_fake):
    """Observed by the server: never more than `per_hour` arrivals within one (shortened) hour."""
    config = parse_config({
        "credentials": {"username": "sa-user", "secret": "sa-secret", "project_id": 12345},
        "api_base_url": small_fake.base_url, "start_date": DAY.isoformat(), "max_concurrent_requests": 3,
    })
    hour, per_hour = dt.timedelta(seconds=1.5), 3
    stop = threading.Event()
    budget = RateBudget(100, per_hour, hour=hour, sleep=stop.wait)
    client = ExportClient(config, budget, stop=stop)
    windows = [Window(DAY + dt.timedelta(days=i), DAY + dt.timedelta(days=i)) for i in range(7)]
    downloads = list(fetch_in_order(windows, client.fetch, 3, lambda w, e: [], ()))
    stop.set()
    assert [d.window for d in downloads] == windows
    arrivals = sorted(r.arrived_monotonic for r in small_fake.export_requests)
    assert len(arrivals) == 7
    spans = [later - first for first, later in zip(arrivals[:-per_hour], arrivals[per_hour:], strict=True)]
    assert min(spans) >= hour.total_seconds()
