"""Windows sized by volume: heavy days come in sub-day pieces, the spill stays within its bound, the
record set is exact, and a kill -9 in the middle loses nothing.

The heavy read and the kills are real CLI runs; the resumes and the forged-volume syncs run the console
script's `run` in this process (harness.run_in_process).

The window target is made small (window_target_events) so that a few thousand events behave as a
project of billions would with the default of a million.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest

from fake_mixpanel import generate_events
from integration_tests.conftest import TODAY
from integration_tests.harness import (
    INCREMENTAL,
    config_for,
    make_fake,
    nth_state,
    read_and_kill,
    record_keys,
    run_cli,
    run_in_process,
    state_input,
    truth,
)

FIRST = TODAY - dt.timedelta(days=12)
HEAVY = [FIRST + dt.timedelta(days=n) for n in (4, 5, 6)]
TARGET = 250
CONCURRENT = 2


@pytest.fixture
def heavy_fake():
    """Twelve light days (~40 events each) and three heavy ones (~1,000 each) in the middle."""
    events = generate_events(480, FIRST, 12, seed=21) + [
        event for n, day in enumerate(HEAVY) for event in generate_events(1000, day, 1, seed=40 + n)
    ]
    fake = make_fake(sorted(events, key=lambda e: e.time_ms))
    yield fake
    fake.stop()


def volume_config(fake):
    return config_for(
        fake, start_date=FIRST.isoformat(), end_date=(TODAY - dt.timedelta(days=1)).isoformat(),
        date_window_size=30, window_target_events=TARGET, max_concurrent_requests=CONCURRENT,
    )


def piece_requests(fake):
    return [r for r in fake.export_requests if r.status == 200 and '$time"] <' in r.params.get("where", "")
            or r.status == 200 and '$time"] >=' in r.params.get("where", "")]


def test_given_heavy_days_when_read_then_sub_day_windows_exact_records_and_spill_within_bound(tmp_path, heavy_fake):
    """The heavy days are read in pieces of about the target; every light day in windows of several days."""
    last = TODAY - dt.timedelta(days=1)
    run = run_cli(tmp_path, "read", volume_config(heavy_fake))
    assert run.returncode == 0, run.stdout[-2000:]
    assert record_keys(run.records) == truth(heavy_fake, FIRST, last)
    pieces = piece_requests(heavy_fake)
    assert {r.params["from_date"] for r in pieces} >= {day.isoformat() for day in HEAVY[1:]}
    complete = [r for r in heavy_fake.export_requests if r.status == 200]
    # No body the connector kept was larger than its limit (twice the target), but an hour's piece.
    kept = [int(m) for m in re.findall(r": (\d+) records, ", run.logs())]
    assert sum(kept) == len(run.records) and max(kept) <= 2 * TARGET
    # The spill bound: at most max_concurrent_requests + 1 bodies as sent, at any time.
    peak_mb = float(re.search(r"the spill files held at most ([\d.]+) MB", run.logs()).group(1))
    largest = max(r.sent_bytes for r in heavy_fake.export_requests)
    assert 0 < peak_mb * 1e6 <= (CONCURRENT + 1) * largest + 0.05e6
    assert len(complete) >= len(HEAVY) * 4


def test_given_heavy_days_when_killed_mid_sync_and_resumed_then_nothing_lost(tmp_path, heavy_fake):
    """kill -9 after the third STATE (inside or after the heavy days), then resume from the last STATE."""
    config = volume_config(heavy_fake)
    first = read_and_kill(tmp_path, config, None, nth_state(3))
    states = first.states
    assert states and first.returncode != 0
    second = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(states[-1]))
    assert second.returncode == 0, second.stdout[-2000:]
    delivered = record_keys(first.records) + record_keys(second.records)
    expected = truth(heavy_fake, FIRST, TODAY - dt.timedelta(days=1))
    assert set(delivered) == set(expected)
    assert all(delivered[key] >= count for key, count in expected.items())


@pytest.fixture
def uniform_fake():
    """Ten days of ~600 events each: every day heavier than the target, none in a week a body can keep."""
    events = [event for n in range(10) for event in generate_events(600, FIRST + dt.timedelta(days=n), 1, seed=60 + n)]
    fake = make_fake(sorted(events, key=lambda e: e.time_ms))
    yield fake
    fake.stop()


def test_given_heavy_days_when_killed_and_resumed_then_the_resume_sizes_its_first_window_from_the_state(
    tmp_path, uniform_fake
):
    """The state keeps events_per_day: the first sync finds the volume out by a probe too large to keep,
    the resumed one plans its first day in pieces at once (no window too large), and nothing is lost."""
    config = {**volume_config(uniform_fake), "end_date": (FIRST + dt.timedelta(days=9)).isoformat()}
    first = read_and_kill(tmp_path, config, None, nth_state(2))
    assert first.returncode != 0 and "is too large" in first.logs()
    state = first.states[-1]
    assert 400 <= state["events_per_day"] <= 1000  # ~600, the most of the last pieces read
    before = len(uniform_fake.export_requests)
    second = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state))
    assert second.returncode == 0, second.stdout[-2000:]
    assert "is too large" not in second.logs()
    resumed = uniform_fake.export_requests[before:]
    whole_days = [r for r in resumed if "mp_processing_time_ms" not in r.params.get("where", "")]
    assert whole_days[0] in piece_requests(uniform_fake)  # the first of whole days: a piece of a day, at once
    delivered = record_keys(first.records) + record_keys(second.records)
    expected = truth(uniform_fake, FIRST, FIRST + dt.timedelta(days=9))
    assert set(delivered) == set(expected)
    assert all(delivered[key] >= count for key, count in expected.items())
    assert 400 <= second.states[-1]["events_per_day"] <= 1000


def test_given_a_state_claiming_a_huge_volume_when_read_then_it_costs_four_requests_at_most(tmp_path, heavy_fake):
    """events_per_day 10^10 (stale or forged) on the light days after a sync: the first new day comes in the
    4 pieces the user guide bounds it to, the days after it in windows sized by what those returned (a few more
    requests than without the forged value, as the README says)."""
    config = volume_config(heavy_fake)
    last = TODAY - dt.timedelta(days=1)
    first_run = run_in_process(tmp_path, "read", {**config, "end_date": HEAVY[-1].isoformat()}, mode=INCREMENTAL)
    assert first_run.returncode == 0, first_run.stdout[-2000:]
    state = {**first_run.states[-1], "events_per_day": 10**10}
    before = len(heavy_fake.export_requests)
    run = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state))
    assert run.returncode == 0, run.stdout[-2000:]
    resumed = heavy_fake.export_requests[before:]
    new_days = [r for r in resumed if "mp_processing_time_ms" not in r.params.get("where", "")]
    first_day = (HEAVY[-1] + dt.timedelta(days=1)).isoformat()
    # the 4 pieces go out first, but at 3 downloads at once the window after them may be planned (from the
    # first piece read) and sent before the last piece leaves: their order at the server is not fixed
    assert new_days[0].params["from_date"] == first_day
    assert [r.params["from_date"] for r in new_days[:5]].count(first_day) == 4
    assert len([r for r in new_days if r.params["from_date"] == first_day]) == 4
    assert len(new_days) <= 4 + 2  # the 5 light days left: ~40 events each, one or two windows at a target of 250
    delivered = record_keys(first_run.records) + record_keys(run.records)
    assert set(delivered) == set(truth(heavy_fake, FIRST, last))


def test_given_a_forged_volume_on_a_light_month_when_read_then_a_few_requests_more_and_the_same_records(tmp_path):
    """The README's figure: 200 events a day for 30 days at a target of 1,000, one request at a time. A
    state claiming 10^10 a day costs 4 pieces of the first day and windows sized from quarter days after
    them (found by a hostile review): a few requests more than without it, never other records."""
    first, last = TODAY - dt.timedelta(days=30), TODAY - dt.timedelta(days=1)
    events = generate_events(200 * 30, first, 30, seed=5)
    counts, delivered = {}, {}
    for claimed in (None, 10**10):
        fake = make_fake(events)
        try:
            config = config_for(fake, start_date=first.isoformat(), end_date=last.isoformat(), date_window_size=30,
                                window_target_events=1000, max_concurrent_requests=1)
            state = {"version": 3} if claimed is None else {"version": 3, "events_per_day": claimed}
            run = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state))
            assert run.returncode == 0, run.stdout[-2000:]
            delivered[claimed] = record_keys(run.records)
            assert delivered[claimed] == truth(fake, first, last)
            counts[claimed] = len(fake.export_requests)
        finally:
            fake.stop()
    assert delivered[None] == delivered[10**10]
    assert counts[10**10] <= counts[None] + 8, counts  # 13 against 8 when written
