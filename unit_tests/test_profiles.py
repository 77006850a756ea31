"""The profiles stream's pure parts: pages and records, ranges and walks, the state, the plan of a sync."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from typing import Any

import pytest

from source_mixpanel_export.profile_plan import MARGIN_SECONDS, ProfilePlan, Verdict
from source_mixpanel_export.profile_ranges import (
    FLOOR_SECONDS,
    MAX_SPAN_SECONDS,
    Range,
    Walk,
    _growing_share,
    narrower,
    next_span,
)
from source_mixpanel_export.profile_state import ProfileState, parse_profile_state
from source_mixpanel_export.profiles import BadPage, last_seen_seconds, mixpanel_time, parse_page, profile_record
from source_mixpanel_export.state import StateRefused

NOW = int(dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC).timestamp())
DAY = 86_400


def page(results: list[Any], **fields: Any) -> bytes:
    return json.dumps({"page": 0, "page_size": 1000, "session_id": "s1", "status": "ok", "total": len(results),
                       "results": results, **fields}).encode()


# -- pages and records -------------------------------------------------------------------------------------------


def test_given_a_page_with_awkward_values_when_parsed_then_records_keep_them_exactly() -> None:
    """Numbers as ids become their digits; integers past 64 bits, nesting and U+2028 stay as sent."""
    body = (
        b'{"page":0,"page_size":2,"session_id":"s","status":"ok","total":2,"results":['
        b'{"$distinct_id":18446744073709551623,"$properties":{"n":100000000000000000000000000001,'
        b'"$last_seen":"2024-05-01T10:00:00","a":{"b":[1,{"c":"x\xe2\x80\xa8y"}]}}},'
        b'{"$distinct_id":"u","$properties":{}}]}'
    )
    parsed = parse_page(body)
    first, second = parsed.records
    assert first == {
        "distinct_id": "18446744073709551623",
        "last_seen": "2024-05-01T10:00:00Z",
        "properties": {"n": 10**29 + 1, "$last_seen": "2024-05-01T10:00:00", "a": {"b": [1, {"c": "x\u2028y"}]}},
    }
    assert second == {"distinct_id": "u", "properties": {}}
    assert parsed.full() and parsed.session_id == "s" and parsed.total == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (page([])[:-5], "not complete JSON"),
        (b"[]", "no list of results"),
        (page([], page_size=0), "page_size"),
        (page([{"$properties": {}}]), "no $distinct_id"),
        (page([{"$distinct_id": "a", "$properties": [1]}]), "not an object"),
        (page(["x"]), "not a JSON object"),
    ],
)
def test_given_an_answer_that_is_no_page_when_parsed_then_bad_page_says_why(body: bytes, words: str) -> None:
    with pytest.raises(BadPage, match=re.escape(words)) as info:
        parse_page(body)
    assert info.value.is_json == (words != "not complete JSON")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2024-05-01T10:00:00", 1714557600),
        ("2024-05-01T10:00:00.750", 1714557600),
        ("2024-05-01T12:00:00+02:00", 1714557600),
        ("2024-05-01", 1714521600),
        ("yesterday", None),
        (1714557600, None),
        (None, None),
    ],
)
def test_given_last_seen_values_when_read_then_utc_seconds_or_none(value: Any, seconds: int | None) -> None:
    """A naive time is UTC, a zone is honoured, a fraction dropped; anything else has no time."""
    assert last_seen_seconds(value) == seconds
    record = profile_record({"$distinct_id": True, "$properties": {"$last_seen": value}})
    assert record["distinct_id"] == "true" and ("last_seen" in record) == (seconds is not None)


# -- ranges and walks --------------------------------------------------------------------------------------------


def test_given_ranges_when_their_where_is_written_then_they_partition_every_profile() -> None:
    """Unseen; the first range takes values that are no dates (a complement); the last is open-ended."""
    p = 'properties["$last_seen"]'
    assert Range(unseen=True).where() == f"not defined({p})"
    assert Range(None, NOW).where() == f'defined({p}) and not ({p} >= datetime("2024-06-01T12:00:00"))'
    one_second = f'{p} >= datetime("2024-06-01T12:00:00") and {p} < datetime("2024-06-01T12:00:01")'
    assert Range(NOW, NOW + 1).where() == one_second
    assert Range(NOW).where() == f'{p} >= datetime("2024-06-01T12:00:00")'
    assert Range(None, None).where() == f"defined({p})"


def test_given_a_pass_when_walked_then_unseen_first_then_ascending_ranges_to_an_open_end() -> None:
    walk = Walk.new("pass", NOW)
    assert walk.next_range(NOW) == Range(unseen=True)
    walk = walk.after(Range(unseen=True), 10, 25_000, NOW)
    assert walk is not None and walk.next_range(NOW) == Range(None, None)
    walk = walk.after(Range(None, NOW - 10 * DAY), 25_000, 25_000, NOW)
    assert walk is not None and walk.cursor == NOW - 10 * DAY and walk.span is not None
    last = walk.next_range(NOW)
    assert last.lo == NOW - 10 * DAY
    assert walk.after(Range(NOW - DAY, None), 5, 25_000, NOW) is None  # the open-ended range ends the walk


def test_given_a_span_reaching_past_now_when_planned_then_the_range_is_open_ended() -> None:
    walk = Walk("changes", NOW - 3600, True, span=7200, started=NOW)
    assert walk.next_range(NOW) == Range(NOW - 3600, None)


def test_given_a_sweep_when_planned_then_its_ranges_stop_at_its_end() -> None:
    walk = Walk("sweep", NOW - 2 * DAY, True, span=10 * DAY, started=NOW, end=NOW - DAY)
    assert walk.next_range(NOW) == Range(NOW - 2 * DAY, NOW - DAY)
    assert walk.after(Range(NOW - 2 * DAY, NOW - DAY), 3, 1000, NOW) is None


@pytest.mark.parametrize(
    ("covered", "total", "target", "span"),
    [(1000, 100, 1000, 10_000), (1000, 10_000, 1000, 100), (1, 10**9, 1, 1),
     (MAX_SPAN_SECONDS, 1, 5, MAX_SPAN_SECONDS)],
)
def test_given_a_range_read_when_the_next_is_sized_then_by_its_density(covered: int, total: int, target: int,
                                                                        span: int) -> None:
    assert next_span(covered, total, target) == span


def test_given_too_many_profiles_when_narrowed_then_the_start_is_kept_and_at_most_half_remains() -> None:
    assert narrower(Range(NOW - 100, NOW), 400, 100, [], NOW) == Range(NOW - 100, NOW - 75)
    assert narrower(Range(NOW - 100, NOW), 101, 100, [], NOW) == Range(NOW - 100, NOW - 50)
    assert narrower(Range(NOW - 1, NOW), 10**6, 100, [], NOW) is None
    assert narrower(Range(unseen=True), 10**6, 100, [], NOW) is None


def test_given_no_lower_bound_when_narrowed_then_the_floor_or_an_earlier_date_stands_in() -> None:
    quarter = FLOOR_SECONDS + (NOW + 1 - FLOOR_SECONDS) // 4
    assert narrower(Range(None, None), 4000, 1000, [NOW - 400, NOW - 1000], NOW) == Range(None, quarter)
    assert narrower(Range(None, None), 4000, 1000, [], NOW) == Range(None, quarter)
    old = FLOOR_SECONDS - 400 * DAY  # a date before 2009 is earlier than the floor
    assert narrower(Range(None, None), 4000, 1000, [old], NOW) == Range(None, old + (NOW + 1 - old) // 4)


def test_given_page_0_all_in_the_last_second_when_a_range_without_start_is_narrowed_then_it_still_narrows() -> None:
    """Page 0 sorted newest first shows only the latest second: that is no lower bound (it was read whole)."""
    assert narrower(Range(None, None), 16_150, 200, [NOW] * 100, NOW) == Range(None, NOW)
    assert narrower(Range(None, NOW + 1), 16_150, 200, [NOW] * 100, NOW) == Range(None, NOW)


def test_given_page_0_all_undated_when_narrowed_then_down_to_the_floor_then_read_whole() -> None:
    """Profiles whose `$last_seen` is no date lie below every date: two narrowings, not one per halving."""
    first = narrower(Range(None, None), 5000, 1000, [None] * 100, NOW)
    assert first == Range(None, FLOOR_SECONDS + 1)
    assert narrower(first, 5000, 1000, [None] * 100, NOW) is None


def _profiles(count: int, seed: int) -> list[int]:
    """`$last_seen` of a project's profiles: 90% in the 3 days before NOW, the rest over the 2 years before."""
    rng = random.Random(seed)
    return [NOW - (rng.randrange(3 * DAY) if rng.random() < 0.9 else rng.randrange(730 * DAY)) for _ in range(count)]


@pytest.mark.parametrize("order", ["none", "oldest first", "newest first"])
@pytest.mark.parametrize("start", [None, NOW - 731 * DAY])
def test_given_page_0_in_any_order_when_narrowed_then_few_narrowings_to_a_range_that_fits(
    order: str, start: int | None
) -> None:
    """Mixpanel documents no order for a page: a fair sample places the end by its quantile, a sorted one
    counts from the oldest or the newest it shows. 16,150 profiles, 200 fit, page 0 of 100."""
    profiles = _profiles(16_150, 1)
    rng: Range | None = Range(start, None)
    for narrowings in range(1, 6):
        assert rng is not None
        inside = [s for s in profiles if (rng.lo is None or s >= rng.lo) and (rng.hi is None or s < rng.hi)]
        if order == "none":
            random.Random(narrowings).shuffle(inside)
        else:
            inside.sort(reverse=order == "newest first")
        rng = narrower(rng, len(inside), 200, inside[:100], NOW)
        assert rng is not None
        held = sum((rng.lo is None or s >= rng.lo) and rng.hi is not None and s < rng.hi for s in profiles)
        if held <= 200:
            break
    assert narrowings <= 5 and held <= 200


def test_given_repeated_narrowing_when_nothing_fits_then_it_ends_at_one_second() -> None:
    rng: Range | None = Range(NOW - 20 * 366 * DAY, None)
    steps = 0
    while rng is not None:
        last, rng, steps = rng, narrower(rng, 10**9, 1, [], NOW), steps + 1
    assert last.hi is not None and last.lo is not None and last.hi - last.lo == 1 and steps < 40


# -- the state ---------------------------------------------------------------------------------------------------


def test_given_a_state_when_written_and_read_then_the_same() -> None:
    state = ProfileState(
        watermark=NOW - DAY,
        walk=Walk("changes", NOW - DAY, True, 3600, NOW - 60),
        sweep=Walk("sweep", None, False, None, NOW - 60, end=NOW - DAY),
    )
    raw = json.loads(json.dumps(state.to_dict()))
    assert raw["watermark"] == "2024-05-31T12:00:00"
    assert parse_profile_state(raw, NOW) == state


@pytest.mark.parametrize("raw", [None, {}, {"__ab_no_cursor_state_message": True}])
def test_given_no_state_when_read_then_a_fresh_one(raw: Any) -> None:
    assert parse_profile_state(raw, NOW) == ProfileState()


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ([], "not a JSON object"),
        ({"version": 2}, "version 2"),
        ({"version": True}, "version True"),
        ({"version": 1, "extra": 1}, "'extra'"),
        ({"version": 1, "walk": {"kind": "pass", "started": "2024-06-01T00:00:00", "page": 3}}, "'walk.page'"),
        ({"version": 1, "walk": []}, "'walk'"),
        ({"version": 1, "walk": {"kind": "pass"}}, "'walk.started'"),
        ({"version": 1, "walk": {"kind": "sweep", "started": "2024-06-01T00:00:00"}}, "'walk.kind'"),
        ({"version": 1, "walk": {"kind": "pass", "started": "2024-06-01T00:00:00", "unseen_done": 1}}, "unseen_done"),
        ({"version": 1, "walk": {"kind": "pass", "started": "2024-06-01T00:00:00", "span": 1.5}}, "'walk.span'"),
        ({"version": 1, "walk": {"kind": "pass", "started": "2024-06-01T00:00:00", "from": "2024-06-01"}}, "walk.from"),
        ({"version": 1, "watermark": "2024-06-03T00:00:00"}, "lies in the future"),
        ({"version": 1, "sweep": {"started": "2024-06-01T00:00:00"}}, "'sweep.until'"),
    ],
)
def test_given_a_state_it_could_not_have_written_when_read_then_refused_naming_the_key(raw: Any, words: str) -> None:
    with pytest.raises(StateRefused) as info:
        parse_profile_state(raw, NOW)
    assert words in info.value.message


# -- the plan of a sync ------------------------------------------------------------------------------------------


def test_given_no_state_when_a_sync_starts_then_a_pass_and_no_sweep() -> None:
    plan = ProfilePlan(ProfileState(), incremental=True, now=NOW, sweep_requests=5)
    assert plan.kind() == "pass" and plan.next() == Range(unseen=True)
    plan.read(Range(unseen=True), 0, 1)
    assert plan.next() == Range(None, None)
    state = plan.read(Range(None, None), 10, 1)
    assert state == {"version": 1, "watermark": "2024-06-01T11:00:00"}  # the pass's start, less the margin
    assert plan.next() is None  # a sync that read a pass sweeps nothing


def test_given_a_watermark_when_incremental_then_the_changes_and_then_at_most_the_sweep_requests() -> None:
    plan = ProfilePlan(ProfileState(watermark=NOW - DAY), incremental=True, now=NOW, sweep_requests=5)
    assert plan.kind() == "changes" and plan.next() == Range(NOW - DAY, None)
    plan.read(Range(NOW - DAY, None), 7, 1)
    assert plan.state.watermark == NOW - MARGIN_SECONDS
    assert plan.kind() == "sweep" and plan.next() == Range(unseen=True)
    assert plan.verdict(Range(unseen=True), 150, []) is Verdict.READ
    plan.read(Range(unseen=True), 150, 2)  # 2 requests: page 0 (counted by verdict) and page 1
    assert plan.sweep_spent == 2
    assert plan.verdict(Range(None, NOW - MARGIN_SECONDS), 100_000, [NOW - 300 * DAY]) is Verdict.NARROW
    narrowed = plan.next()
    assert narrowed is not None and narrowed.lo is None and narrowed.hi is not None
    assert plan.verdict(narrowed, 5_000, []) is Verdict.STOP  # 4 spent, 1 left: it waits for the next sync
    assert plan.next() is None and plan.sweep_spent == 4


def test_given_a_sweep_that_cannot_narrow_its_first_range_when_planned_then_read_whole_once() -> None:
    state = ProfileState(watermark=NOW - DAY, sweep=Walk("sweep", None, False, None, NOW - DAY, end=NOW - 2 * DAY))
    plan = ProfilePlan(state, incremental=True, now=NOW, sweep_requests=3)
    plan.read(Range(NOW - DAY, None), 0, 1)
    assert plan.next() == Range(unseen=True)
    assert plan.verdict(Range(unseen=True), 50_000, []) is Verdict.READ


def test_given_a_full_refresh_with_a_changes_walk_under_way_when_started_then_a_new_pass() -> None:
    state = ProfileState(watermark=NOW - DAY, walk=Walk("changes", NOW - 3600, True, 60, NOW - 60))
    assert ProfilePlan(state, incremental=False, now=NOW, sweep_requests=5).kind() == "pass"
    resumed = ProfilePlan(ProfileState(walk=Walk("pass", NOW - 3600, True, 60, NOW - 60)), False, NOW, 5)
    assert resumed.kind() == "pass" and resumed.next() == Range(NOW - 3600, NOW - 3540)


def test_given_a_pass_range_of_many_pages_when_judged_then_read_up_to_twice_the_target() -> None:
    plan = ProfilePlan(ProfileState(), incremental=False, now=NOW, sweep_requests=0, range_pages=25)
    assert plan.verdict(Range(None, None), 49_999, []) is Verdict.READ
    assert plan.verdict(Range(None, None), 50_000, [NOW - DAY]) is Verdict.NARROW


def test_given_times_a_little_ahead_of_now_when_read_then_an_hour_before_now() -> None:
    """A clock set ahead wrote them: reading from an hour ago re-reads a little, never skips."""
    raw = {"version": 1, "watermark": "2024-06-01T18:00:00",
           "walk": {"kind": "changes", "from": "2024-06-01T13:00:00", "unseen_done": True, "span": 60,
                    "started": "2024-06-01T13:00:00"}}
    state = parse_profile_state(raw, NOW)
    assert state.watermark == NOW - 3600 and state.walk is not None
    assert state.walk.cursor == NOW - 3600 and state.walk.started == NOW - 3600


# -- the sweep's bound: narrowing kept, ranges stopped at its queries ------------------------------------------


def sweeping(sweep_requests: int, sweep: Walk | None = None) -> ProfilePlan:
    """A plan whose changes walk is read, so that its next range is the sweep's."""
    state = ProfileState(watermark=NOW - DAY, sweep=sweep)
    plan = ProfilePlan(state, incremental=True, now=NOW, sweep_requests=sweep_requests)
    plan.read(Range(NOW - DAY, None), 0, 1)
    return plan


def test_given_a_sweep_out_of_queries_while_narrowing_when_stopped_then_the_next_sync_starts_narrower() -> None:
    """The narrowing a sync paid for is kept in the state (`to`), so a dense range costs page 0s once."""
    plan = sweeping(4, Walk("sweep", NOW - 100 * DAY, True, 10 * DAY, NOW - DAY, end=NOW - DAY))
    first = plan.next()
    assert first == Range(NOW - 100 * DAY, NOW - 90 * DAY)
    assert plan.verdict(first, 100_000, []) is Verdict.NARROW  # 3 left: narrowed to 2 pages' worth
    second = plan.next()
    assert second is not None and second.lo == first.lo and second.hi is not None and second.hi < first.hi
    assert plan.verdict(second, 90_000, []) is Verdict.NARROW
    third = plan.next()
    assert third is not None and third.hi is not None and second.hi is not None and third.hi < second.hi
    assert plan.verdict(third, 80_000, []) is Verdict.STOP and plan.sweep_spent == 3 and plan.next() is None
    saved = parse_profile_state(plan.state.to_dict(), NOW)
    assert saved.sweep is not None and saved.sweep.to is not None and saved.sweep.to < third.hi
    assert sweeping(4, saved.sweep).next() == Range(first.lo, saved.sweep.to)


def test_given_a_sweep_range_that_fits_a_whole_sync_when_queries_run_out_then_it_waits_unnarrowed() -> None:
    plan = sweeping(4, Walk("sweep", NOW - 100 * DAY, True, DAY, NOW - DAY, end=NOW - DAY))
    first = plan.next()
    assert first is not None and plan.verdict(first, 150, []) is Verdict.READ
    plan.read(first, 150, 3)
    assert plan.next() is None  # 3 spent: a range is not begun without a page 0 and a page to spare
    plan = sweeping(4, Walk("sweep", NOW - 100 * DAY, True, DAY, NOW - DAY, end=NOW - DAY))
    plan.sweep_spent = 2
    second = plan.next()
    assert second is not None and plan.verdict(second, 2_500, []) is Verdict.STOP
    assert plan.state.sweep is not None and plan.state.sweep.to is None  # 3 pages after page 0: the next sync's


@pytest.mark.parametrize("total", [None, 1_000])
def test_given_a_sweep_range_larger_than_its_page_0_says_when_read_then_stopped_at_the_sweeps_queries(
    total: int | None,
) -> None:
    """Without a total (or with a wrong one) the pages tell: the range stops when the queries do, narrowed."""
    plan = sweeping(4, Walk("sweep", NOW - 100 * DAY, True, DAY, NOW - DAY, end=NOW - DAY))
    rng = plan.next()
    assert rng is not None and plan.verdict(rng, total, [NOW - 100 * DAY]) is Verdict.READ
    assert plan.more(1, rng, []) and plan.more(3, rng, [])
    assert not plan.more(4, rng, [])  # page 0 and 3 pages: the sweep's 4
    assert plan.next() is None
    assert plan.state.sweep is not None and plan.state.sweep.to == rng.lo + DAY // 2


def test_given_a_walk_when_asked_for_more_pages_then_always() -> None:
    plan = ProfilePlan(ProfileState(), incremental=False, now=NOW, sweep_requests=4)
    assert plan.more(10_000, Range(None, None), [])


def test_given_a_pass_without_totals_when_judged_then_its_first_range_halves_and_later_ones_are_read() -> None:
    plan = ProfilePlan(ProfileState(), incremental=False, now=NOW, sweep_requests=0, range_pages=25)
    plan.read(Range(unseen=True), 0, 1)
    assert plan.verdict(Range(None, None), None, [NOW - 400 * DAY]) is Verdict.NARROW
    half = plan.next()
    assert half == Range(None, FLOOR_SECONDS + (NOW + 1 - FLOOR_SECONDS) // 2)
    assert plan.verdict(half, None, [NOW - 300 * DAY]) is Verdict.NARROW  # still full: halved again
    quarter = plan.next()
    assert quarter is not None and quarter.hi is not None and plan.verdict(quarter, 30, []) is Verdict.READ
    plan.read(quarter, 30, 1, FLOOR_SECONDS + DAY)
    assert plan.walk is not None and plan.walk.span == min(
        (quarter.hi - FLOOR_SECONDS - DAY) * 25_000 // 30, MAX_SPAN_SECONDS
    )
    later = plan.next()
    assert later is not None and plan.verdict(later, None, []) is Verdict.READ


def test_given_a_range_without_lower_bound_when_read_then_density_from_its_earliest_profile() -> None:
    walk = Walk("pass", None, True, None, NOW)
    after = walk.after(Range(None, NOW - 10 * DAY), 1_000, 1_000, NOW, earliest=NOW - 20 * DAY)
    assert after is not None and after.span == 10 * DAY
    old = walk.after(Range(None, FLOOR_SECONDS - 10 * DAY), 1_000, 1_000, NOW)  # before 2009: not from 2009
    assert old is not None and old.span == MAX_SPAN_SECONDS  # (was 1 second: an empty range's growth, many times)


def test_given_a_narrowed_range_found_empty_when_read_then_the_rest_of_the_one_too_large_comes_next() -> None:
    """An empty range tells nothing of density: the next is what is left of the range it was narrowed from
    (its page 0 narrows it in turn), or, not narrowed, everything up to the walk's end."""
    walk = Walk("sweep", NOW - 100 * DAY, True, DAY, NOW, end=NOW)
    narrowed = walk.narrowed(Range(NOW - 100 * DAY, NOW - 80 * DAY), Range(NOW - 100 * DAY, NOW - 50 * DAY))
    after = narrowed.after(Range(NOW - 100 * DAY, NOW - 80 * DAY), 0, 1000, NOW)
    assert after is not None and after.next_range(NOW) == Range(NOW - 80 * DAY, NOW - 50 * DAY)
    plain = walk.after(Range(NOW - 100 * DAY, NOW - 99 * DAY), 0, 1000, NOW)
    assert plain is not None and plain.next_range(NOW) == Range(NOW - 99 * DAY, NOW)


def test_given_a_narrowed_walk_when_written_then_read_back_with_its_end() -> None:
    walk = Walk("pass", NOW - 10 * DAY, True, DAY, NOW).narrowed(
        Range(NOW - 10 * DAY, NOW - 9 * DAY - 3600), Range(NOW - 10 * DAY, NOW - 9 * DAY)
    )
    raw = ProfileState(walk=walk).to_dict()
    assert raw["walk"]["to"] == "2024-05-23T11:00:00"
    assert parse_profile_state(raw, NOW) == ProfileState(walk=walk)
    assert walk.next_range(NOW) == Range(NOW - 10 * DAY, NOW - 9 * DAY - 3600)
    raw["walk"]["to"] = raw["walk"]["from"]
    with pytest.raises(StateRefused, match="'walk.to'"):
        parse_profile_state(raw, NOW)


def test_given_the_no_state_marker_beside_other_keys_when_read_then_refused() -> None:
    marker = "__ab_no_cursor_state_message"
    assert parse_profile_state({marker: True}, NOW) == ProfileState()
    with pytest.raises(StateRefused):
        parse_profile_state({marker: True, "version": 99}, NOW)


def test_given_a_narrowed_sweep_written_by_a_clock_hours_ahead_when_read_back_then_its_planned_range() -> None:
    """Its `to` is brought back to an hour before now, before its `from`: the state is still ours (found by a
    hostile run), and the narrowing is dropped, not the state."""
    ahead = NOW + 4 * 3600
    raw = {"version": 1, "watermark": mixpanel_time(NOW - DAY),
           "sweep": {"from": mixpanel_time(NOW - 10), "to": mixpanel_time(ahead - 3000), "unseen_done": True,
                     "span": 3 * 3600, "started": mixpanel_time(NOW - 3600), "until": mixpanel_time(NOW - 3600)}}
    state = parse_profile_state(raw, NOW)
    assert state.sweep is not None and state.sweep.cursor == NOW - 10 and state.sweep.to is None


def test_given_profiles_last_seen_after_now_when_narrowed_then_the_end_is_never_past_now() -> None:
    """An end past now turns open-ended again (the same range, narrowed for ever), and a state would refuse it."""
    future = [NOW + 4 * DAY + i for i in range(100)]
    for rng in (Range(None, None), Range(NOW - 10 * DAY, None)):
        narrowed = narrower(rng, 5000, 100, future, NOW)
        assert narrowed is not None and narrowed.hi is not None and narrowed.hi <= NOW
    assert narrower(Range(NOW, None), 5000, 100, future, NOW) is None  # read whole, the walk's last range


def test_given_a_newest_page_of_few_distinct_seconds_when_narrowed_then_read_as_the_newest() -> None:
    """25 profiles a second: a page of 100 spans 4 seconds, too few steps to count, but each second is one run,
    where a fair sample would change second about 74 times: sorted, newest first."""
    page = [NOW - 7200 - second for second in range(4) for _ in range(25)]
    narrowed = narrower(Range(NOW - 730 * DAY, None), 3000, 100, page, NOW)
    assert narrowed is not None and narrowed.hi is not None and narrowed.hi < NOW - 7200 - 4 - 60
    shuffled = page[:]
    random.Random(1).shuffle(shuffled)  # the same seconds in no order: a fair sample, cut among them
    fair = narrower(Range(NOW - 730 * DAY, None), 3000, 100, shuffled, NOW)
    assert fair is not None and fair.hi == NOW - 7200 - 3


@pytest.mark.parametrize(("ratio", "more"), [(50.0, True), (0.02, False)])
def test_given_a_density_that_changes_when_a_share_is_placed_then_seconds_follow_it(ratio: float, more: bool) -> None:
    """Profiles growing denser along a stretch (most seen lately): its first tenth of them takes more than a tenth
    of its seconds; thinning, fewer; even, a tenth."""
    assert _growing_share(0.1, 1.0) == pytest.approx(0.1)
    share = _growing_share(0.1, ratio)
    assert 0 <= share <= 1 and (share > 0.1) is more
