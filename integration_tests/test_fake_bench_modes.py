"""The fake's settings for the benchmark: a set share of integers beyond 64 bits, and bodies kept and sent again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
import requests

from fake_mixpanel import FakeEvent, FakeMixpanel, generate_events
from fake_mixpanel.data import HUGE_INTS, holds_huge_int

DAY0 = dt.date(2024, 3, 1)
SA = ("sa-user", "sa-secret")
NOW_MS = int(dt.datetime(2024, 3, 20, tzinfo=dt.UTC).timestamp() * 1000)


def without_huge_int(event: FakeEvent) -> FakeEvent:
    """The event with its `huge_int` property left out."""
    return dataclasses.replace(event, properties={k: v for k, v in event.properties.items() if k != "huge_int"})


def test_given_no_huge_int_fraction_then_about_one_event_in_eight_holds_one() -> None:
    """The default mix, the hard one: unchanged, so every test's event set stays what it was."""
    events = generate_events(4000, DAY0, 10, seed=7)
    assert events == generate_events(4000, DAY0, 10, seed=7, huge_int_fraction=None)
    assert 0.10 < sum(map(holds_huge_int, events)) / len(events) < 0.14


@pytest.fixture(scope="module")
def hard_without_huge_int() -> list[FakeEvent]:
    """The default (hard) mix of 20,000 events, `huge_int` left out: made once for the fractions below."""
    return [without_huge_int(e) for e in generate_events(20_000, DAY0, 10, seed=3)]


@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.05, 1.0])
def test_given_a_huge_int_fraction_then_that_share_holds_one_and_the_rest_is_the_same_set(
    fraction: float, hard_without_huge_int: list[FakeEvent]
) -> None:
    """Only `huge_int` changes: beyond 64 bits on about `fraction` of events, 2**63 - 1 where one was drawn."""
    mixed = generate_events(20_000, DAY0, 10, seed=3, huge_int_fraction=fraction)
    assert [without_huge_int(e) for e in mixed] == hard_without_huge_int
    huge = [e for e in mixed if holds_huge_int(e)]
    assert abs(len(huge) / len(mixed) - fraction) <= max(0.1 * fraction, 0.0005)
    assert all(e.properties["huge_int"] in HUGE_INTS for e in huge)
    kept = {e.properties.get("huge_int") for e in mixed if not holds_huge_int(e)}
    assert kept <= {None, 2**63 - 1}


def test_given_a_huge_int_fraction_out_of_range_then_refused() -> None:
    with pytest.raises(ValueError, match="huge_int_fraction"):
        generate_events(10, DAY0, 1, huge_int_fraction=1.5)


def export(fake: FakeMixpanel, **params: str) -> list[int]:
    """The `time` of every exported line, in the order sent."""
    query = {"from_date": "2024-03-01", "to_date": "2024-03-10", "project_id": "12345", "time_in_ms": "true"}
    response = requests.get(f"{fake.base_url}/api/2.0/export", params={**query, **params}, auth=SA, timeout=10)
    response.raise_for_status()
    return [json.loads(line)["properties"]["time"] for line in response.content.split(b"\n") if line]


def test_given_cache_bodies_when_asked_again_then_the_same_answer_and_events_added_later_count() -> None:
    """A kept answer is the one a fresh fake gives; added events make a new one."""
    events = generate_events(500, DAY0, 10, seed=5)
    with FakeMixpanel(events, now_ms=NOW_MS) as plain, FakeMixpanel(events, now_ms=NOW_MS, cache_bodies=True) as kept:
        first = export(kept)
        assert export(kept) == first == export(plain)
        assert export(kept, to_date="2024-03-05") == export(plain, to_date="2024-03-05")
        late = FakeEvent("Late", events[0].time_ms, {"distinct_id": "x"}, processing_ms=events[0].time_ms + 1000)
        kept.add_events([late])
        plain.add_events([late])
        assert sorted(export(kept)) == sorted([*first, late.time_ms])
        assert export(kept) == export(plain)


def test_given_cache_bodies_when_events_are_not_all_processed_then_the_answer_follows_the_clock() -> None:
    """Before the last event is processed, the answer is not kept: moving the clock shows more events."""
    events = generate_events(300, DAY0, 10, seed=5, late_fraction=0.5)
    last = max(e.processing_ms or 0 for e in events)
    with FakeMixpanel(events, now_ms=last - 3_600_000, cache_bodies=True) as fake:
        early = export(fake)
        fake.now_ms = last
        assert len(export(fake)) > len(early)
        assert len(export(fake)) == len(events)
