"""Window planning: which date ranges to request, as pure functions that can be tested without HTTP.

The export API has no pagination, so a sync is a list of date windows; each window is one request
and the unit of retry and of checkpointing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace

import pendulum

ONE_DAY = dt.timedelta(days=1)
MIN_SPLIT_SECONDS = 3600  # windows are split down to one hour, no further
FIRST_DAY_SPLIT = 4  # a whole day that is too large becomes four 6-hour pieces


@dataclass(frozen=True, slots=True)
class Window:
    """One export request: whole days, optionally narrowed to a time range or to late arrivals.

    `processed_after_ms` re-reads days an earlier sync delivered, keeping only events Mixpanel
    processed after that sync's watermark. `time_from`/`time_to` (epoch seconds, `[from, to)`, None =
    open) exist only for pieces of a day split because Mixpanel could not answer it whole; the first
    and last pieces are open so that no event of the day can fall outside every piece.
    """

    first_day: dt.date
    last_day: dt.date
    processed_after_ms: int | None = None
    time_from: int | None = None
    time_to: int | None = None

    @property
    def days(self) -> int:
        """How many calendar days the window spans."""
        return (self.last_day - self.first_day).days + 1

    def label(self) -> str:
        """A short description for logs and error messages."""
        text = str(self.first_day) if self.days == 1 else f"{self.first_day}..{self.last_day}"
        if self.time_from is not None or self.time_to is not None:
            text += f" [{_clock(self.time_from)}-{_clock(self.time_to)})"
        if self.processed_after_ms is not None:
            text += f" (arrived after {_instant(self.processed_after_ms)})"
        return text


def plan_windows(
    first_day: dt.date,
    last_day: dt.date,
    size_days: int,
    coverage: Sequence[tuple[dt.date, int]] = (),
) -> list[Window]:
    """Cut `[first_day, last_day]` into windows of at most `size_days` days.

    `coverage` lists ascending `(through_day, watermark_ms)` pairs from the state: a day takes the
    watermark of the first pair that reaches it and is read for late arrivals only; days past
    every pair have never been read and are read whole. Windows never mix the two.

    >>> [w.label() for w in plan_windows(dt.date(2024, 1, 1), dt.date(2024, 1, 5), 2)]
    ['2024-01-01..2024-01-02', '2024-01-03..2024-01-04', '2024-01-05']
    """
    windows: list[Window] = []
    cursor = first_day
    for through, watermark in coverage:
        segment_end = min(through, last_day)
        if segment_end >= cursor:
            windows.extend(_chunks(cursor, segment_end, size_days, watermark))
            cursor = segment_end + ONE_DAY
    if cursor <= last_day:
        windows.extend(_chunks(cursor, last_day, size_days, None))
    return windows


def _chunks(first: dt.date, last: dt.date, size: int, watermark: int | None) -> list[Window]:
    out = []
    while first <= last:
        end = min(last, first + dt.timedelta(days=size - 1))
        out.append(Window(first, end, watermark))
        first = end + ONE_DAY
    return out


def split_window(window: Window, timezone: str) -> list[Window] | None:
    """Smaller windows covering exactly the same events, or None when it is one hour already.

    Several days split into two halves; a whole day into four 6-hour pieces (days in `timezone`, the
    one Mixpanel reads dates in); a piece of a day into two halves, down to one hour.
    """
    if window.days > 1:
        middle = window.first_day + dt.timedelta(days=(window.days - 1) // 2)
        return [replace(window, last_day=middle), replace(window, first_day=middle + ONE_DAY)]
    day_start = _midnight(window.first_day, timezone)
    day_end = _midnight(window.first_day + ONE_DAY, timezone)
    if window.time_from is None and window.time_to is None:
        step = (day_end - day_start) // FIRST_DAY_SPLIT
        bounds: list[int | None] = [None]
        bounds += [day_start + step * i for i in range(1, FIRST_DAY_SPLIT)]
        bounds.append(None)
        return [replace(window, time_from=a, time_to=b) for a, b in zip(bounds, bounds[1:], strict=False)]
    low = window.time_from if window.time_from is not None else day_start
    high = window.time_to if window.time_to is not None else day_end
    if high - low <= MIN_SPLIT_SECONDS:
        return None
    middle = low + max(MIN_SPLIT_SECONDS, (high - low) // 2 // MIN_SPLIT_SECONDS * MIN_SPLIT_SECONDS)
    if middle >= high:
        return None
    return [replace(window, time_to=middle), replace(window, time_from=middle)]


def _midnight(day: dt.date, timezone: str) -> int:
    return pendulum.datetime(day.year, day.month, day.day, tz=timezone).int_timestamp


def _clock(epoch: int | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%MZ")


def _instant(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
