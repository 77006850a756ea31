"""The rate budget: Mixpanel's per-second and per-hour limits, held before a request leaves, never after.

Time is a FakeClock: an hour of waiting takes no time, and every wait is asserted exactly.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

import pytest
from clocks import FakeClock

from fake_mixpanel import FakeMixpanel, generate_events
from source_mixpanel_export.budget import ARRIVAL_MARGIN_SECONDS, HOUR_SECONDS, RateBudget
from source_mixpanel_export.client import ExportClient
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.plan import Plan
from source_mixpanel_export.prefetch import fetch_in_order
from source_mixpanel_export.state import ExportState, sync_plan

DAY = dt.date(2024, 3, 1)


def test_given_room_in_both_rates_when_acquire_then_no_wait():
    """Within the per-second rate, acquire never sleeps."""
    clock = FakeClock()
    budget = RateBudget(3, 60, clock.clock())
    assert all(budget.acquire() for _ in range(3))
    assert clock.slept == [] and budget.left_this_hour() == 57


def test_given_per_second_rate_used_when_acquire_then_waits_for_the_oldest_to_leave_the_second():
    """The fourth request of a second waits until the first is a second (plus the arrival margin) old."""
    clock = FakeClock()
    budget = RateBudget(3, 60, clock.clock())
    for _ in range(4):
        budget.acquire()
    assert clock.slept == [1 + ARRIVAL_MARGIN_SECONDS]


def test_given_hourly_budget_used_when_acquire_then_long_wait_is_announced_with_resume_time(caplog):
    """A wait of minutes is logged, saying when the sync goes on; the 61st request leaves an hour after the first."""
    clock = FakeClock()
    budget = RateBudget(100, 60, clock.clock(), logging.getLogger("test"))
    with caplog.at_level(logging.INFO, logger="test"):
        for _ in range(61):
            budget.acquire()
    assert clock.slept == [HOUR_SECONDS + ARRIVAL_MARGIN_SECONDS]
    assert "60 queries per hour" in caplog.text and "waiting 60 min" in caplog.text
    assert "the sync continues at 01:00:00 UTC" in caplog.text
    assert budget.left_this_hour() == 59


def test_given_hold_when_acquire_then_waits_out_the_hold_first():
    """A 429's Retry-After holds back every caller, not only the one that got the 429."""
    clock = FakeClock()
    budget = RateBudget(100, 1000, clock.clock())
    budget.hold(30)
    budget.hold(5)  # a shorter hold never shortens a longer one
    budget.acquire()
    assert clock.slept == [30]


def test_given_stop_during_wait_when_acquire_then_returns_false_without_counting():
    """A sync that is stopping is not kept waiting for budget."""
    stop = threading.Event()
    clock = FakeClock(stop)
    budget = RateBudget(1, 1, clock.clock())
    assert budget.acquire()
    stop.set()
    assert budget.acquire() is False  # over budget: the wait returns at once, saying the sync stops
    assert clock.slept == [HOUR_SECONDS + ARRIVAL_MARGIN_SECONDS]
    assert budget.left_this_hour() == 1  # the hour has passed for the first; the refused one was not counted


@pytest.fixture
def small_fake():
    fake = FakeMixpanel(generate_events(200, DAY, 8, seed=3), now_ms=int(dt.datetime(2024, 4, 1).timestamp() * 1000))
    fake.start()
    yield fake
    fake.stop()


def test_given_an_hourly_budget_when_windows_fetched_in_parallel_then_no_more_than_it_leave_per_hour(small_fake):
    """Three downloads at once, three queries a second and an hour: seven windows leave in three hours'
    batches, never four within a second (or an hour) by the clock the budget keeps."""
    config = parse_config({
        "credentials": {"username": "sa-user", "secret": "sa-secret", "project_id": 12345},
        "api_base_url": small_fake.base_url, "start_date": DAY.isoformat(), "max_concurrent_requests": 3,
        "date_window_size": 1,
    })
    stop = threading.Event()
    clock = FakeClock(stop)
    sent: list[float] = []
    budget = RateBudget(3, 3, clock.clock())
    original = budget.acquire

    def acquire() -> bool:
        ok = original()
        sent.append(clock.now)
        return ok

    budget.acquire = acquire  # type: ignore[method-assign]
    client = ExportClient(config, budget, clock.clock(), stop)
    sync = sync_plan(config, ExportState(), DAY + dt.timedelta(days=6))
    plan = Plan(sync, config, lambda: 0, logging.getLogger("test"))
    downloads = list(fetch_in_order(plan, client.fetch, 3))
    stop.set()
    assert [d.window.first_day for d in downloads] == [DAY + dt.timedelta(days=i) for i in range(7)]
    assert len(small_fake.export_requests) == 7
    hour = HOUR_SECONDS + ARRIVAL_MARGIN_SECONDS
    assert sorted(sent) == pytest.approx([0, 0, 0, hour, hour, hour, 2 * hour], abs=hour / 10)
    assert all(later - first >= hour for first, later in zip(sorted(sent)[:-3], sorted(sent)[3:], strict=True))
