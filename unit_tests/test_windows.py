"""Window planning and splitting, as pure functions."""

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from source_mixpanel_export.windows import Window, plan_windows, split_window

D = dt.date


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
