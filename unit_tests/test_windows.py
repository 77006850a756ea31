"""Window planning (by days and by volume) and splitting, as pure logic."""

import datetime as dt
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from source_mixpanel_export.api import where_clause
from source_mixpanel_export.windows import (
    BYTES_PER_TARGET_EVENT,
    PROBE_DAYS,
    Planner,
    SameAnswers,
    Segment,
    Window,
    plan_segments,
    span_days,
    split_window,
)

D = dt.date


def plan_windows(first, last, size, coverage=()):
    """Every window of a planner that is told nothing of the volume: windows of `size` days."""
    planner = Planner(plan_segments(first, last, coverage), size, 10**9, "UTC")
    return list(iter(planner.next, None))


def test_given_range_when_planned_then_windows_are_contiguous_and_bounded():
    """Windows cover the range exactly, in order, at most size days each."""
    windows = plan_windows(D(2024, 1, 1), D(2024, 1, 10), 4)
    assert [(w.first_day, w.last_day) for w in windows] == [
        (D(2024, 1, 1), D(2024, 1, 4)),
        (D(2024, 1, 5), D(2024, 1, 8)),
        (D(2024, 1, 9), D(2024, 1, 10)),
    ]
    assert all(w.processed_after_ms is None for w in windows)


def test_given_coverage_when_planned_then_reread_days_carry_the_watermark_and_never_mix():
    """Days an earlier sync delivered are read for late arrivals only, in windows of their own."""
    windows = plan_windows(D(2024, 1, 1), D(2024, 1, 6), 30, [(D(2024, 1, 2), 500), (D(2024, 1, 4), 100)])
    assert [(w.first_day, w.last_day, w.processed_after_ms) for w in windows] == [
        (D(2024, 1, 1), D(2024, 1, 2), 500),
        (D(2024, 1, 3), D(2024, 1, 4), 100),
        (D(2024, 1, 5), D(2024, 1, 6), None),
    ]


@given(
    start=st.dates(min_value=D(2020, 1, 1), max_value=D(2030, 1, 1)),
    length=st.integers(0, 400),
    size=st.integers(1, 60),
    through=st.integers(-5, 400),
)
def test_windows_partition_the_range(start, length, size, through):
    """Whatever the inputs, every day is in exactly one window, in order."""
    end = start + dt.timedelta(days=length)
    coverage = [(start + dt.timedelta(days=through), 1)]
    windows = plan_windows(start, end, size, coverage)
    days = [w.first_day + dt.timedelta(days=i) for w in windows for i in range(w.days)]
    assert days == [start + dt.timedelta(days=i) for i in range(length + 1)]
    assert all(w.days <= size for w in windows)


def test_given_multi_day_window_when_split_then_halves():
    """A window of several days splits into two halves with the same filter."""
    parts = split_window(Window(D(2024, 1, 1), D(2024, 1, 5), 42), "UTC")
    assert parts == [Window(D(2024, 1, 1), D(2024, 1, 3), 42), Window(D(2024, 1, 4), D(2024, 1, 5), 42)]


def test_given_one_day_when_split_then_four_open_ended_pieces():
    """A day splits into 6-hour pieces whose first and last are open, so nothing falls outside."""
    parts = split_window(Window(D(2024, 1, 1), D(2024, 1, 1)), "UTC")
    start = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    assert [(p.time_from, p.time_to) for p in parts] == [
        (None, start + 6 * 3600),
        (start + 6 * 3600, start + 12 * 3600),
        (start + 12 * 3600, start + 18 * 3600),
        (start + 18 * 3600, None),
    ]


def test_given_pieces_when_split_repeatedly_then_stops_at_one_hour():
    """Splitting goes down to one hour and then says it cannot go further."""
    piece = split_window(Window(D(2024, 1, 1), D(2024, 1, 1)), "UTC")[1]
    seen = 0
    while piece is not None:
        parts = split_window(piece, "UTC")
        if parts is None:
            break
        assert parts[0].time_from == piece.time_from and parts[-1].time_to == piece.time_to
        assert parts[0].time_to == parts[1].time_from
        piece = parts[0]
        seen += 1
    assert piece.time_to - piece.time_from == 3600 and seen >= 2


def test_given_day_in_project_timezone_when_split_then_pieces_follow_local_midnight():
    """Pieces of a legacy project's day are cut at that zone's local hours."""
    parts = split_window(Window(D(2024, 7, 1), D(2024, 7, 1)), "US/Pacific")
    midnight = int(dt.datetime(2024, 7, 1, 7, tzinfo=dt.UTC).timestamp())
    assert parts[0].time_to == midnight + 6 * 3600


def test_labels_are_readable():
    """Labels name the days, the piece and the late-arrival filter."""
    assert Window(D(2024, 1, 1), D(2024, 1, 1), 0).label() == "2024-01-01 (arrived after 1970-01-01T00:00:00Z)"


def test_given_coverage_reaching_before_the_first_day_when_planned_then_it_is_skipped():
    """A part of the state that ends before the first day read plays no role; later parts still filter."""
    windows = plan_windows(D(2024, 1, 5), D(2024, 1, 8), 30, [(D(2024, 1, 3), 900), (D(2024, 1, 6), 500)])
    assert [(w.first_day, w.last_day, w.processed_after_ms) for w in windows] == [
        (D(2024, 1, 5), D(2024, 1, 6), 500),
        (D(2024, 1, 7), D(2024, 1, 8), None),
    ]


def test_given_light_days_when_planned_then_windows_grow_to_the_target_within_max_days():
    """The first window has PROBE_DAYS; after it, as many days as the target holds at the volume seen."""
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 3, 31))], 30, 500, "UTC")
    first = planner.next()
    assert first == Window(D(2024, 1, 1), D(2024, 1, 1) + dt.timedelta(days=PROBE_DAYS - 1)) and not planner.ready()
    planner.observe(first, events=100 * PROBE_DAYS, size=0)  # 100 events a day
    assert planner.ready()
    assert [w.days for w in iter(planner.next, None)] == [5] * 16 + [4]


def test_given_bytes_heavier_than_the_events_when_planned_then_bytes_size_the_windows():
    """Events of 5 kB count ten times: a target of 500 events is 500 * 512 bytes."""
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 1, 31))], 10, 500, "UTC")
    first = planner.next()
    planner.observe(first, events=10 * PROBE_DAYS, size=100 * PROBE_DAYS * BYTES_PER_TARGET_EVENT)  # 10x heavy
    assert planner.next().days == 5


def test_given_a_day_heavier_than_the_target_when_planned_then_it_comes_in_pieces_that_partition_it():
    """3,000 events a day, a target of 1,000: each day in three 8-hour pieces, the outer ones open."""
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 1, 12))], 10, 1000, "UTC")
    first = planner.next()
    planner.observe(first, events=3000 * PROBE_DAYS, size=0)
    pieces = list(iter(planner.next, None))
    eight_hours = 8 * 3600
    days = [D(2024, 1, 1) + dt.timedelta(days=n) for n in range(PROBE_DAYS, 12)]
    assert len(pieces) == 3 * len(days)
    for day, three in ((day, pieces[3 * i : 3 * i + 3]) for i, day in enumerate(days)):
        midnight = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp())
        assert [(p.first_day, p.last_day, p.time_from, p.time_to) for p in three] == [
            (day, day, None, midnight + eight_hours),
            (day, day, midnight + eight_hours, midnight + 2 * eight_hours),
            (day, day, midnight + 2 * eight_hours, None),
        ]


def test_given_a_known_heavy_rate_when_planned_then_the_first_day_comes_in_pieces_without_a_probe():
    """The state's events_per_day (3,000 a day, target 1,000): the first window is already a third of a
    day, not a week too large to keep; it goes alone, and the rate read from it replaces the known one."""
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 1, 12))], 10, 1000, "UTC", known_rate=3000)
    first = planner.next()
    assert (first.first_day, first.last_day, first.time_from) == (D(2024, 1, 1), D(2024, 1, 1), None)
    assert first.time_to is not None and planner.rate() == 3000
    assert planner.ready()  # the day's other pieces may be fetched while it is out
    second, third = planner.next(), planner.next()
    assert second.first_day == third.first_day == D(2024, 1, 1) and not planner.ready()
    planner.observe(first, events=100, size=0)  # a third of a day: 300 a day, far lighter than known
    assert planner.rate() == 300 and planner.ready()
    assert planner.next() == Window(D(2024, 1, 2), D(2024, 1, 4))


def test_given_a_known_light_rate_when_planned_then_the_first_window_still_covers_probe_days_at_most():
    """A known rate may be stale (a partial today, a project that grew): it never makes the first whole-day
    window longer than a probe, and does not size late-arrival windows."""
    segments = [Segment(D(2024, 1, 1), D(2024, 1, 20), 500), Segment(D(2024, 1, 21), D(2024, 3, 20))]
    planner = Planner(segments, 30, 1000, "UTC", known_rate=1)
    assert planner.rate(late=True) is None
    assert planner.next() == Window(D(2024, 1, 1), D(2024, 1, 20), 500)
    planner.observe(Window(D(2024, 1, 1), D(2024, 1, 20), 500), events=0, size=0)
    whole = planner.next()
    assert whole == Window(D(2024, 1, 21), D(2024, 1, 21) + dt.timedelta(days=PROBE_DAYS - 1))
    assert not planner.ready()


def test_given_a_huge_known_rate_when_planned_then_the_first_day_costs_four_requests_at_most():
    """A hostile or stale events_per_day of 10^10: four pieces of the first day, then the rate read rules."""
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 1, 12))], 10, 1000, "UTC", known_rate=10**10)
    pieces = [planner.next() for _ in range(4)]
    assert all(p.first_day == p.last_day == D(2024, 1, 1) for p in pieces) and pieces[-1].time_to is None
    assert not planner.ready()
    planner.observe(pieces[0], events=25, size=0)  # six hours: 100 a day
    assert planner.next() == Window(D(2024, 1, 2), D(2024, 1, 11))  # ten days: the target at 100 a day


def test_given_a_known_rate_of_zero_when_planned_then_the_first_window_is_a_probe():
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 3, 31))], 30, 500, "UTC", known_rate=0)
    assert planner.next().days == PROBE_DAYS and not planner.ready()


def test_given_late_arrival_days_when_planned_then_their_volume_is_estimated_apart():
    """Re-read days return only late events: their windows are sized by what re-reads returned. The
    first has up to max_days (not PROBE_DAYS): late arrivals since the last sync are few whatever it spans."""
    segments = [Segment(D(2024, 1, 1), D(2024, 1, 20), 500), Segment(D(2024, 1, 21), D(2024, 2, 20))]
    planner = Planner(segments, 10, 1000, "UTC")
    late = planner.next()
    assert late == Window(D(2024, 1, 1), D(2024, 1, 10), 500) and not planner.ready()
    planner.observe(late, events=500, size=0)  # 50 a day: 20 days hold the target, max_days is 10
    assert planner.next() == Window(D(2024, 1, 11), D(2024, 1, 20), 500)
    whole = planner.next()
    assert whole == Window(D(2024, 1, 21), D(2024, 1, 27)) and planner.rate() is None and not planner.ready()


def test_given_mixpanels_today_earlier_when_stopped_after_a_day_then_nothing_later_is_planned():
    planner = Planner([Segment(D(2024, 1, 1), D(2024, 1, 9))], 3, 10**9, "UTC")
    assert planner.next() == Window(D(2024, 1, 1), D(2024, 1, 3))
    planner.stop_after(D(2024, 1, 4))
    assert list(iter(planner.next, None)) == [Window(D(2024, 1, 4), D(2024, 1, 4))]


@given(
    length=st.integers(0, 60),
    size=st.integers(1, 10),
    target=st.integers(1, 10_000),
    rates=st.lists(st.integers(0, 100_000), min_size=1, max_size=30),
    through=st.integers(-5, 60),
)
def test_whatever_the_volume_the_windows_partition_the_days_and_pieces_partition_a_day(
    length, size, target, rates, through
):
    """Every day in exactly one whole-day window or in pieces that cover all of it, none over max_days."""
    start = D(2024, 3, 1)
    end = start + dt.timedelta(days=length)
    planner = Planner(plan_segments(start, end, [(start + dt.timedelta(days=through), 1)]), size, target, "UTC")
    days: list[D] = []
    share: dict[D, float] = {}
    for index in range(10_000):
        window = planner.next()
        if window is None:
            break
        assert window.days <= size
        if window.time_from is None and window.time_to is None:
            days.extend(window.first_day + dt.timedelta(days=i) for i in range(window.days))
        else:
            share[window.first_day] = share.get(window.first_day, 0) + span_days(window, "UTC")
            if window.time_to is None:
                days.append(window.first_day)
        rate = rates[index % len(rates)]
        planner.observe(window, events=int(rate * span_days(window, "UTC")), size=0)
    assert days == [start + dt.timedelta(days=i) for i in range(length + 1)]
    assert all(abs(total - 1) < 1e-9 for total in share.values())


def test_given_pieces_answered_like_their_window_when_two_are_alike_then_the_window_is_named():
    """One piece that begins as its window did is an honest first piece in time order; two prove the time
    filter ignored; pieces of a window that had no body (Mixpanel's timeout) are never compared."""
    day = Window(dt.date(2024, 1, 1), dt.date(2024, 1, 1))
    parts = split_window(day, "UTC")
    assert parts is not None
    honest = SameAnswers()
    honest.split(day, b"H", parts)
    assert [honest.ignored_by(p, h) for p, h in zip(parts, [b"H", b"2", b"3", b""], strict=True)] == [None] * 4
    ignored = SameAnswers()
    ignored.split(day, b"H", parts)
    assert ignored.ignored_by(parts[0], b"H") is None and ignored.ignored_by(parts[2], b"H") == day
    timeout = SameAnswers()
    timeout.split(day, None, parts)
    assert timeout.ignored_by(parts[0], b"") is None and timeout.ignored_by(parts[1], b"") is None


def test_given_a_sweep_window_over_ranges_when_asked_then_each_days_watermark_by_midnight():
    """A sweep window over three ranges (one never read) asks for each range's days past its own watermark,
    told apart at UTC midnights; a half split off by days keeps only its own ranges; a
    piece of a day adds its hours to the one range the day is in; the label names each watermark."""
    window = Window(D(2024, 7, 1), D(2024, 7, 9), 500, sweep=True,
                    later_marks=((D(2024, 7, 4), None), (D(2024, 7, 6), 900)))
    july = [int(dt.datetime(2024, 7, day, tzinfo=dt.UTC).timestamp()) for day in (4, 6)]
    after = 'number(properties["mp_processing_time_ms"]) > '
    assert where_clause("x", window, "UTC") == (
        f'(x) and ((properties["$time"] < datetime({july[0]}) and {after}500)'
        f' or (properties["$time"] >= datetime({july[0]}) and properties["$time"] < datetime({july[1]}))'
        f' or (properties["$time"] >= datetime({july[1]}) and {after}900))'
    )
    first_half, second_half = split_window(window, "UTC")
    assert first_half.marks() == [(D(2024, 7, 1), D(2024, 7, 3), 500), (D(2024, 7, 4), D(2024, 7, 5), None)]
    assert second_half.marks() == [(D(2024, 7, 6), D(2024, 7, 9), 900)]
    assert where_clause(None, second_half, "UTC") == f"{after}900"
    piece = split_window(replace(window, first_day=D(2024, 7, 7), last_day=D(2024, 7, 7)), "UTC")[1]
    assert where_clause(None, piece, "UTC") == (
        f'{after}900 and properties["$time"] >= datetime({piece.time_from})'
        f' and properties["$time"] < datetime({piece.time_to})'
    )
    assert window.label() == (
        "sweep 2024-07-01..2024-07-09 (arrived after 1970-01-01T00:00:00Z from 2024-07-01, any time from "
        "2024-07-04, 1970-01-01T00:00:00Z from 2024-07-06)"
    )
