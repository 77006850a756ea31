"""ExportClient against the fake Mixpanel in-process: what is retried, what fails at once, and how.

Time is a FakeClock: backoffs and Retry-After waits are asserted exactly and take no time.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import random
from collections.abc import Callable

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from clocks import WALL_START, FakeClock

from fake_mixpanel import FakeMixpanel, Fault, generate_events
from source_mixpanel_export.budget import RateBudget
from source_mixpanel_export.client import Cancelled, ExportClient
from source_mixpanel_export.clock import Clock
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.retry import (
    MAX_BACKOFF_SECONDS,
    DateAfterToday,
    TooLarge,
    backoff_seconds,
    describe_rejection,
    error_message,
    retry_after_seconds,
)
from source_mixpanel_export.windows import Window

DAY = dt.date(2024, 3, 1)
WINDOW = Window(DAY, DAY + dt.timedelta(days=1))
SECRET = "sa-secret-0c4b"


# -- pure parts ---------------------------------------------------------------------------------------------


def test_given_retry_after_when_backoff_then_it_is_used_as_is_within_an_hour():
    """Mixpanel's Retry-After wins over the exponential schedule; absurd values are bounded."""
    assert backoff_seconds(1, 7.5, base=2.0) == 7.5
    assert backoff_seconds(9, 0.25, base=2.0) == 0.25
    assert backoff_seconds(1, 10**6, base=2.0) == 3600.0


@pytest.mark.parametrize("retry_after", [0.0, -0.0, -3.0, -1e9, math.nan])
@pytest.mark.parametrize("attempt", [1, 4, 30])
def test_given_retry_after_that_is_no_positive_wait_when_backoff_then_the_exponential_backoff(attempt, retry_after):
    """A Retry-After of zero, below zero or NaN is ignored: a server cannot make the connector retry at once."""
    expected = backoff_seconds(attempt, None, 2.0, rand=lambda: 0.3)
    assert backoff_seconds(attempt, retry_after, 2.0, rand=lambda: 0.3) == expected > 0


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 12, 30])
def test_given_no_retry_after_when_backoff_then_exponential_capped_with_jitter_on_the_upper_half(attempt):
    """Without Retry-After: base * 2**(attempt-1), capped, jittered between half and all of it."""
    ceiling = min(2.0 * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)
    assert backoff_seconds(attempt, None, 2.0, rand=lambda: 0.0) == ceiling / 2
    assert backoff_seconds(attempt, None, 2.0, rand=lambda: 1.0) == ceiling
    assert ceiling / 2 <= backoff_seconds(attempt, None, 2.0) <= ceiling


def test_retry_after_reads_seconds_and_http_dates():
    """Both forms of Retry-After (RFC 9110) are understood, a date against the given now; junk is ignored."""
    now = dt.datetime(2024, 4, 1, tzinfo=dt.UTC)
    assert retry_after_seconds("12", now) == 12.0
    later = email.utils.format_datetime(now + dt.timedelta(seconds=120), usegmt=True)
    assert retry_after_seconds(later, now) == 120.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds("nan", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize(
    "value", ["0", "-5", "-0.5", "nan", "-inf", "Sun, 31 Mar 2024 23:59:00 GMT", "Mon, 01 Apr 2024 00:00:00 GMT"]
)
def test_given_retry_after_that_is_no_positive_wait_when_read_then_none(value):
    """Zero, negative, NaN, and a date not after now read as no Retry-After, so the caller backs off."""
    assert retry_after_seconds(value, dt.datetime(2024, 4, 1, tzinfo=dt.UTC)) is None


def forbidden_message(credentials: dict) -> str:
    config = parse_config({"credentials": credentials, "start_date": DAY.isoformat()})
    error = describe_rejection(config, 403, "no access")
    assert isinstance(error, AirbyteTracedException) and error.failure_type == FailureType.config_error
    return error.message or ""


@pytest.mark.parametrize(
    "credentials",
    [
        {"username": "sa-user", "secret": SECRET, "project_id": 4242},
        {"option_title": "Project Secret", "api_secret": SECRET, "project_id": 4242},
    ],
    ids=["service-account", "project-secret"],
)
def test_given_403_with_a_project_id_when_described_then_the_message_names_the_project(credentials):
    """A 403 for a config that names its project says which project and to check credentials.project_id."""
    message = forbidden_message(credentials)
    assert "project 4242" in message and "credentials.project_id" in message and "no access" in message


def test_given_403_with_a_project_secret_and_no_project_id_when_described_then_it_says_to_check_the_secret():
    """A project secret without project_id: no "project None", but what to check, credentials.api_secret."""
    message = forbidden_message({"option_title": "Project Secret", "api_secret": SECRET})
    assert "None" not in message and "credentials.api_secret" in message and "no access" in message
    assert "credentials.project_id" not in message and SECRET not in message


def test_error_message_reads_json_and_plain_text_bodies():
    """Mixpanel answers errors as {"error": ...} or as text; both give the message."""
    assert error_message(b'{"error": "Timeout Error."}') == "Timeout Error."
    assert error_message(b"  Bad gateway \n") == "Bad gateway"
    assert error_message(b"") == "no message"


# -- against the fake --------------------------------------------------------------------------------------


@pytest.fixture
def fake():
    server = FakeMixpanel(
        generate_events(300, DAY, 3, seed=11), secret=SECRET, now_ms=int(dt.datetime(2024, 4, 1).timestamp() * 1000)
    )
    server.start()
    yield server
    server.stop()


class SpyBudget(RateBudget):
    """The real budget, remembering every hold asked of it."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(1000, 100000, clock)
        self.holds: list[float] = []

    def hold(self, seconds: float) -> None:
        self.holds.append(seconds)
        super().hold(seconds)


def make_client(
    fake: FakeMixpanel, clock: FakeClock | None = None, rand: Callable[[], float] = random.random, **overrides
) -> tuple[ExportClient, SpyBudget, FakeClock]:
    raw = {
        "credentials": {"username": "sa-user", "secret": SECRET, "project_id": 12345},
        "api_base_url": fake.base_url,
        "start_date": DAY.isoformat(),
        "retry_initial_backoff_seconds": 0.01,
        "max_retry_seconds": 5,
        **overrides,
    }
    clock = clock or FakeClock()
    budget = SpyBudget(clock.clock())
    client = ExportClient(parse_config(raw), budget, clock.clock(), clock.stop, logging.getLogger("test"), rand=rand)
    return client, budget, clock


def body_lines(fake: FakeMixpanel, window: Window) -> int:
    first = dt.datetime.combine(window.first_day, dt.time(), dt.UTC).timestamp() * 1000
    last = dt.datetime.combine(window.last_day + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp() * 1000
    return sum(1 for e in fake.events if first <= e.time_ms < last)


def read_lines(download) -> list[bytes]:
    return [line for line in b"".join(download.chunks()).split(b"\n") if line]


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", status=500),
        Fault("status", status=503, body="Service Unavailable"),
        Fault("status", status=429, headers={"Retry-After": "0"}),
        Fault("cut_off", at_fraction=0.4),
        Fault("terminated_early", trailer="[terminated early]"),
        Fault("drop"),
    ],
    ids=["500", "503-text", "429", "cut_off", "terminated_early", "drop"],
)
def test_given_one_failed_attempt_when_fetch_then_second_attempt_is_the_whole_body(fake, fault):
    """Each retriable failure costs one more request and nothing of the failed attempt survives."""
    fake.inject(1, fault)
    client, _, _ = make_client(fake)
    download = client.fetch(WINDOW)
    assert download.attempts == 2 and len(fake.export_requests) == 2
    assert len(read_lines(download)) == body_lines(fake, WINDOW) and download.malformed_lines == 0


def test_given_429_with_retry_after_when_fetch_then_the_whole_budget_is_held_that_long(fake):
    """Retry-After from a 429 holds every worker's next request, not just this window's."""
    fake.inject(1, Fault("status", status=429, headers={"Retry-After": "20"}))
    client, budget, clock = make_client(fake, max_retry_seconds=60)
    client.fetch(WINDOW)
    assert budget.holds == [20.0] and clock.slept == [20.0] and len(fake.export_requests) == 2


PAST = email.utils.formatdate(WALL_START - 60, usegmt=True)  # a minute before the FakeClock's wall start


@pytest.mark.parametrize("retry_after", ["0", "-5", PAST], ids=["zero", "negative", "past-date"])
def test_given_429s_with_retry_after_of_no_wait_when_fetch_then_exponential_backoff_is_slept(fake, retry_after):
    """Two 429s whose Retry-After asks for no wait: each retry waits the backoff of its attempt, budget held too."""
    fake.inject_when(lambda r: True, Fault("status", status=429, headers={"Retry-After": retry_after}), times=2)
    client, budget, clock = make_client(fake, rand=lambda: 0.25, retry_initial_backoff_seconds=4, max_retry_seconds=60)
    download = client.fetch(WINDOW)
    expected = [backoff_seconds(attempt, None, 4.0, rand=lambda: 0.25) for attempt in (1, 2)]
    assert expected == [2.5, 5.0]
    assert clock.slept == expected and budget.holds == expected
    assert download.attempts == 3 and len(fake.export_requests) == 3


def test_given_429_with_retry_after_zero_forever_when_fetch_then_few_requests_within_the_retry_budget(fake):
    """A server answering `429 Retry-After: 0` forever gets a handful of requests in 10 s, not a flood."""
    fake.inject_when(lambda r: True, Fault("status", status=429, headers={"Retry-After": "0"}), times=1000)
    client, _, clock = make_client(fake, rand=lambda: 0.0, retry_initial_backoff_seconds=2, max_retry_seconds=10)
    with pytest.raises(AirbyteTracedException) as caught:
        client.fetch(WINDOW)
    assert clock.slept == [1.0, 2.0, 4.0] and len(fake.export_requests) == 4
    assert "Retry-After" not in caught.value.message


def test_given_5xx_forever_when_fetch_then_transient_error_naming_window_and_setting(fake):
    """Past max_retry_seconds the window fails as a transient error that says what to do; no secret in it."""
    fake.inject_when(lambda r: True, Fault("status", status=502), times=1000)
    client, budget, clock = make_client(fake, max_retry_seconds=0.3)
    with pytest.raises(AirbyteTracedException) as caught:
        client.fetch(WINDOW)
    error = caught.value
    assert error.failure_type == FailureType.transient_error
    assert WINDOW.label() in error.message and "502" in error.message and "max_retry_seconds" in error.message
    assert "next sync resumes" in error.message
    assert len(fake.export_requests) == len(clock.slept) + 1 >= 2 and budget.holds == []
    assert sum(clock.slept) <= 0.3
    assert SECRET not in error.message + str(error.internal_message)


def test_given_retry_after_beyond_retry_budget_when_fetch_then_fails_at_once_saying_why(fake):
    """A Retry-After longer than max_retry_seconds is not slept through only to fail afterwards."""
    fake.inject(1, Fault("status", status=429, headers={"Retry-After": "600"}))
    client, _, _ = make_client(fake, max_retry_seconds=5)
    with pytest.raises(AirbyteTracedException) as caught:
        client.fetch(WINDOW)
    assert caught.value.failure_type == FailureType.transient_error
    assert "Retry-After" in caught.value.message and "requests_per_hour" in caught.value.message
    assert len(fake.export_requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (401, '{"error": "Invalid credentials"}', ["Invalid credentials", "credentials.username"]),
        (403, '{"error": "no access"}', ["no access", "project_id"]),
        (402, '{"error": "Payment required"}', ["Payment required", "plan"]),
    ],
)
def test_given_auth_or_plan_refusal_when_fetch_then_config_error_without_retry(fake, status, body, words):
    """401/403/402 are the user's to fix: one request, a config error quoting Mixpanel."""
    fake.inject(1, Fault("status", status=status, body=body))
    client, _, _ = make_client(fake)
    with pytest.raises(AirbyteTracedException) as caught:
        client.fetch(WINDOW)
    assert caught.value.failure_type == FailureType.config_error
    assert all(word in caught.value.message for word in words)
    assert len(fake.export_requests) == 1


def test_given_timeout_error_and_date_after_today_when_fetch_then_raised_for_the_reader(fake):
    """400 `Timeout Error.` and a to_date past Mixpanel's today are handed up, not retried."""
    fake.inject(1, Fault("status", status=400))
    client, _, _ = make_client(fake)
    with pytest.raises(TooLarge):
        client.fetch(WINDOW)
    fake.now_ms = int(dt.datetime(2024, 3, 1, 12).timestamp() * 1000)
    with pytest.raises(DateAfterToday):
        client.fetch(WINDOW)
    assert len(fake.export_requests) == 2


def test_given_bad_line_once_when_fetch_then_asked_again_and_clean(fake):
    """One corrupt line: the window is asked for once more, and the clean answer is kept."""
    fake.inject(1, Fault("bad_json"))
    client, _, _ = make_client(fake)
    download = client.fetch(WINDOW)
    assert download.malformed_lines == 0 and download.attempts == 2
    assert len(read_lines(download)) == body_lines(fake, WINDOW)


def test_given_bad_line_twice_when_fetch_then_download_reports_count_and_position(fake):
    """The same corruption again: the download says how many lines and where, for the reader to decide."""
    fake.inject_when(lambda r: True, Fault("bad_json"), times=2)
    client, _, _ = make_client(fake)
    download = client.fetch(WINDOW)
    lines = read_lines(download)
    assert download.malformed_lines == 1 and len(fake.export_requests) == 2
    assert lines[download.first_malformed_line - 1] == Fault("bad_json").corrupt_line


class StoppingClock(FakeClock):
    """A clock whose first sleep is interrupted: the sync stops while a download waits."""

    def sleep(self, seconds: float) -> bool:
        self.stop.set()
        return super().sleep(seconds)


def test_given_stop_when_fetch_waits_then_cancelled_quickly(fake):
    """A stopping sync does not sit out a long backoff, nor retry after it."""
    fake.inject_when(lambda r: True, Fault("status", status=500), times=1000)
    clock = StoppingClock()
    client, _, _ = make_client(fake, clock, retry_initial_backoff_seconds=30, max_retry_seconds=600)
    with pytest.raises(Cancelled):
        client.fetch(WINDOW)
    assert len(fake.export_requests) == 1 and len(clock.slept) == 1


def test_given_unreachable_host_when_fetch_then_transient_error_names_the_host_only(fake):
    """Connection errors are retried, then reported with the host; no URL query, no header, no secret."""
    client, _, _ = make_client(fake, api_base_url="http://127.0.0.1:9", max_retry_seconds=0.2)
    with pytest.raises(AirbyteTracedException) as caught:
        client.fetch(WINDOW)
    message = caught.value.message
    assert caught.value.failure_type == FailureType.transient_error
    assert "could not reach http://127.0.0.1:9" in message and "from_date" not in message
    assert SECRET not in message + str(caught.value.internal_message)


def test_given_retry_after_of_minutes_when_fetch_waits_then_log_says_when_the_sync_continues(fake, caplog):
    """A wait longer than a minute is announced with the time the sync goes on."""
    fake.inject(1, Fault("status", status=429, headers={"Retry-After": "120"}))
    client, budget, clock = make_client(fake, StoppingClock(), max_retry_seconds=600)
    with caplog.at_level(logging.WARNING, logger="test"), pytest.raises(Cancelled):
        client.fetch(WINDOW)
    resume = dt.datetime.fromtimestamp(WALL_START + 120, dt.UTC)
    assert f"retrying in 120.0 s; the sync continues at {resume:%H:%M:%S} UTC" in caplog.text
    assert budget.holds == [120.0]


class TickingClock(FakeClock):
    """Every reading of the monotonic clock is a minute later: a download that takes hours."""

    def monotonic(self) -> float:
        self.now += 60.0
        return super().monotonic()


def test_given_a_long_download_when_fetched_then_progress_is_logged_every_two_minutes(fake, caplog):
    """The platform never sees a silent connector while a window downloads for hours."""
    client, _, clock = make_client(fake, TickingClock(), max_retry_seconds=600_000)
    with caplog.at_level(logging.INFO, logger="test"):
        download = client.fetch(WINDOW)
    progress = [r.message for r in caplog.records if "received so far" in r.message]
    chunks = -(-download.spill.stored // (1 << 16))  # 64 kB reads, each a minute on this clock
    assert len(progress) >= chunks // 2 - 1 and progress[0].startswith(f"Window {WINDOW.label()}: ")
