"""Window planning: which date ranges to request, as pure logic that can be tested without HTTP.

The export API has no pagination, so a sync is a sequence of date windows; each window is one request
and the unit of retry and of checkpointing. Their size follows the project's volume (see Planner).
"""

from __future__ import annotations

import collections
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pendulum

ONE_DAY = dt.timedelta(days=1)
MIN_SPLIT_SECONDS = 3600  # windows are split down to one hour, no further
FIRST_DAY_SPLIT = 4  # a whole day that is too large becomes four 6-hour pieces
MAX_PIECES = 24  # the most pieces a day is planned in: one hour each
# The window target in bytes of JSON, per event of the target: 1M events of the target are 512 MB,
# so that a project of heavy events (up to 1 MB each) gets windows bounded in bytes as well.
BYTES_PER_TARGET_EVENT = 512
RATES_KEPT = 3
# The most pieces a day is planned in from a volume no window of this sync has read (the state's, which
# may be stale or hostile): a wrong one costs that day at most this many requests, then a piece read replaces it.
KNOWN_RATE_PIECES = 4
# The first window of whole days, whose volume nothing tells yet, has at most this many days: a heavy
# project is found out in fewer halvings than from a month, and the next window (sized by it)
# downloads while it is emitted; a light project pays one request more than a month-long window.
# The first window of late arrivals needs no such cap: what it returns is bounded by the late
# arrivals since the last sync, mostly on the last attribution_window days, however many days it spans.
PROBE_DAYS = 7  # the estimate of a day's volume is the largest of the last few windows' (volume grows)


@dataclass(frozen=True, slots=True)
class Window:
    """One export request: whole days, optionally narrowed to a time range or to late arrivals.

    `processed_after_ms` re-reads days an earlier sync delivered, keeping only events Mixpanel
    processed after that sync's watermark. `time_from`/`time_to` (epoch seconds, `[from, to)`, None =
    open) exist only for pieces of a day split because Mixpanel could not answer it whole; the first
    and last pieces are open so that no event of the day can fall outside every piece. `sweep` marks
    a window of the history sweep (sweep.py), which checks old days for very late arrivals, and
    `backfill` one of the backfill, which reads whole the history days never read, newest first (both
    mark their days checked when read: state.Checkpoints). `whole` marks a window read whole however
    large, as it cannot be split any further (plan.Plan sets it). `later_marks` serves a sweep window
    over a block the history holds as several ranges: from each of its days on, the watermark of the
    next range applies instead (None: days never read), so one request checks the whole block (`marks`).
    """

    first_day: dt.date
    last_day: dt.date
    processed_after_ms: int | None = None
    time_from: int | None = None
    time_to: int | None = None
    sweep: bool = False
    whole: bool = False
    backfill: bool = False
    later_marks: tuple[tuple[dt.date, int | None], ...] = ()

    def marks(self) -> list[tuple[dt.date, dt.date, int | None]]:
        """The window's days as (first, last, processed_after_ms) parts, ascending: one part, unless a
        sweep window spans ranges checked at different watermarks. A window split by days keeps
        `later_marks`; the parts are those within its own days."""
        starts = [(self.first_day, self.processed_after_ms), *self.later_marks]
        parts = []
        for index, (first, mark) in enumerate(starts):
            last = starts[index + 1][0] - ONE_DAY if index + 1 < len(starts) else self.last_day
            first, last = max(first, self.first_day), min(last, self.last_day)
            if first <= last:
                parts.append((first, last, mark))
        return parts

    def mark_on(self, day: dt.date) -> int | None:
        """The watermark an event of `day` (one of the window's) must be processed after to be in the
        answer; None: any event of that day is."""
        return next((mark for first, last, mark in self.marks() if first <= day <= last), None)

    @property
    def fresh(self) -> bool:
        """Whether the window reads the sync's own days (new, or re-read for late arrivals), not history."""
        return not (self.sweep or self.backfill)

    @property
    def ends_day(self) -> bool:
        """Whether reading this window finishes its days: not for a piece of a day before its last."""
        return self.time_to is None

    @property
    def days(self) -> int:
        """How many calendar days the window spans."""
        return (self.last_day - self.first_day).days + 1

    def label(self) -> str:
        """A short description for logs and error messages."""
        text = str(self.first_day) if self.days == 1 else f"{self.first_day}..{self.last_day}"
        if self.time_from is not None or self.time_to is not None:
            text += f" [{_clock(self.time_from)}-{_clock(self.time_to)})"
        marks = self.marks()
        if len(marks) > 1:
            text += " (arrived after " + ", ".join(
                f"{_instant(mark)} from {first}" if mark is not None else f"any time from {first}"
                for first, _, mark in marks
            ) + ")"
        elif marks and marks[0][2] is not None:
            text += f" (arrived after {_instant(marks[0][2])})"
        if self.sweep:
            return "sweep " + text
        return "backfill " + text if self.backfill else text


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive days read the same way: whole (never read before), or only for events processed
    after `processed_after_ms` (days an earlier sync delivered)."""

    first_day: dt.date
    last_day: dt.date
    processed_after_ms: int | None = None


def plan_segments(
    first_day: dt.date, last_day: dt.date, coverage: Sequence[tuple[dt.date, int]] = ()
) -> list[Segment]:
    """Cut `[first_day, last_day]` into segments by what the state says of each day.

    `coverage` lists ascending `(through_day, watermark_ms)` pairs from the state: a day takes the
    watermark of the first pair that reaches it and is read for late arrivals only; days past
    every pair, and days of a pair with watermark 0 (never read), are read whole.
    """
    segments: list[Segment] = []
    cursor = first_day
    for through, watermark in coverage:
        segment_end = min(through, last_day)
        if segment_end >= cursor:
            segments.append(Segment(cursor, segment_end, watermark or None))
            cursor = segment_end + ONE_DAY
    if cursor <= last_day:
        segments.append(Segment(cursor, last_day, None))
    return segments


class Planner:
    """Hands out a sync's windows one at a time, each sized by what the windows before it returned.

    A window covers at most `max_days` days and, at the volume seen so far, about `target_events`
    events: fewer days when days are heavy, and one day in sub-day pieces when a day alone is heavier
    than the target. Windows of late arrivals return far less than whole days, so the two kinds are
    estimated apart. Until a window of a kind has been read its volume is unknown: the first has at
    most PROBE_DAYS days and goes alone (`ready` is False meanwhile), so that a heavy project is found
    out by one request, not by several at once; one too large to hold is split (client.OVERSIZE_FACTOR).
    `known_rate`, the whole-day volume an earlier sync measured (the state's events_per_day), sizes
    the first whole-day window: a heavy project's then comes in pieces at once, not after a probe too
    large to keep. It may be stale or hostile, so that window still covers PROBE_DAYS at most, its day
    KNOWN_RATE_PIECES pieces at most, and nothing after it is planned until one of them is read.
    `newest_first` hands the days out from the last backwards (the backfill: plan.Plan); a day's pieces
    still come in time order, so that the piece that ends the day comes last.
    """

    def __init__(
        self, segments: Iterable[Segment], max_days: int, target_events: int, timezone: str,
        known_rate: float | None = None, newest_first: bool = False,
    ) -> None:
        self._newest_first = newest_first
        ordered = list(segments)
        self._segments = collections.deque(reversed(ordered) if newest_first else ordered)
        self._cursor = self._start_of(self._segments[0]) if self._segments else None
        self._pieces: collections.deque[Window] = collections.deque()
        self._max_days = max_days
        self._target = target_events
        self._timezone = timezone
        self._rates: dict[bool, collections.deque[float]] = {
            False: collections.deque(maxlen=RATES_KEPT),
            True: collections.deque(maxlen=RATES_KEPT),
        }
        self._probing: set[bool] = set()  # kinds whose first window is out and not yet read
        self._known_rate = known_rate

    def exhausted(self) -> bool:
        """Whether every window has been handed out."""
        return not self._pieces and not self._segments

    def ready(self) -> bool:
        """Whether the next window may be planned now: not while the first window of its kind is out."""
        if self._pieces or not self._segments:
            return True
        return (self._segments[0].processed_after_ms is not None) not in self._probing

    def next(self) -> Window | None:
        """The next window in date order (newest first: backwards), or None when the sync has none left."""
        if self._pieces:
            return self._pieces.popleft()
        if not self._segments or self._cursor is None:
            return None
        segment = self._segments[0]
        late = segment.processed_after_ms is not None
        rate = self.rate(late)
        days, pieces = self._max_days, 1
        if rate is not None and rate > self._target:
            most = MAX_PIECES if self._rates[late] else KNOWN_RATE_PIECES
            days, pieces = 1, min(math.ceil(rate / self._target), most)
        elif rate is not None and rate > 0:
            days = max(1, min(self._max_days, int(self._target // rate)))
        if not self._rates[late]:  # the first of its kind goes alone; of whole days, a short one at most
            self._probing.add(late)
            days = days if late else min(days, PROBE_DAYS)
        span = dt.timedelta(days=days - 1)
        if self._newest_first:
            first, last = max(segment.first_day, self._cursor - span), self._cursor
        else:
            first, last = self._cursor, min(segment.last_day, self._cursor + span)
        self._advance(first, last)
        window = Window(first, last, segment.processed_after_ms)
        if pieces == 1:
            return window
        self._pieces.extend(day_pieces(window, pieces, self._timezone))
        return self._pieces.popleft()

    def observe(self, window: Window, events: int, size: int) -> None:
        """A window was read: `events` lines, `size` bytes of JSON. Heavy events count by their bytes."""
        late = window.processed_after_ms is not None
        self._probing.discard(late)
        weight = max(events, size / BYTES_PER_TARGET_EVENT)
        self._rates[late].append(weight / span_days(window, self._timezone))

    def rate(self, late: bool = False) -> float | None:
        """Events per day as estimated so far, for whole days or for late arrivals; None before any."""
        rates = self._rates[late]
        if rates:
            return max(rates)
        return None if late else self._known_rate

    def stop_after(self, day: dt.date) -> None:
        """Plan nothing after `day` (Mixpanel's today turned out to be earlier than ours)."""
        kept: collections.deque[Segment] = collections.deque()
        for first, last, segment in self._unplanned():
            if first <= day:
                kept.append(replace(segment, first_day=first, last_day=min(last, day)))
        self._segments = kept
        self._cursor = self._start_of(kept[0]) if kept else None
        self._pieces = collections.deque(p for p in self._pieces if p.first_day <= day)

    def days_left(self, late: bool | None = None) -> int:
        """Days not yet planned: of whole days, of late arrivals, or (None) of both."""
        return sum(
            (last - first).days + 1
            for first, last, segment in self._unplanned()
            if late is None or (segment.processed_after_ms is not None) == late
        )

    def _unplanned(self) -> list[tuple[dt.date, dt.date, Segment]]:
        """The days of each segment not yet planned, as (first, last, segment), in reading order."""
        out = []
        for index, segment in enumerate(self._segments):
            first, last = segment.first_day, segment.last_day
            if index == 0 and self._cursor is not None:
                first, last = (first, self._cursor) if self._newest_first else (self._cursor, last)
            out.append((first, last, segment))
        return out

    def _start_of(self, segment: Segment) -> dt.date:
        """The day a segment is read from: its first, or (newest first) its last."""
        return segment.last_day if self._newest_first else segment.first_day

    def _advance(self, first: dt.date, last: dt.date) -> None:
        segment = self._segments[0]
        if (first <= segment.first_day) if self._newest_first else (last >= segment.last_day):
            self._segments.popleft()
            self._cursor = self._start_of(self._segments[0]) if self._segments else None
        else:
            self._cursor = first - ONE_DAY if self._newest_first else last + ONE_DAY


def day_pieces(window: Window, count: int, timezone: str) -> list[Window]:
    """One day as `count` consecutive pieces by `$time`; the first and last are open so that no event
    of the day can fall outside every piece (as with split_window)."""
    day_start = midnight(window.first_day, timezone)
    day_end = midnight(window.first_day + ONE_DAY, timezone)
    step = max(MIN_SPLIT_SECONDS, (day_end - day_start) // count)
    bounds: list[int | None] = [None]
    bounds += [day_start + step * i for i in range(1, count) if day_start + step * i < day_end]
    bounds.append(None)
    return [replace(window, time_from=a, time_to=b) for a, b in zip(bounds, bounds[1:], strict=False)]


def span_days(window: Window, timezone: str) -> float:
    """How many days' worth of events the window asks for (a piece of a day: its share of the day)."""
    if window.time_from is None and window.time_to is None:
        return float(window.days)
    day_start = midnight(window.first_day, timezone)
    day_end = midnight(window.first_day + ONE_DAY, timezone)
    low = window.time_from if window.time_from is not None else day_start
    high = window.time_to if window.time_to is not None else day_end
    return max(high - low, 1) / (day_end - day_start)


def split_window(window: Window, timezone: str) -> list[Window] | None:
    """Smaller windows covering exactly the same events, or None when it is one hour already.

    Several days split into two halves; a whole day into four 6-hour pieces (days in `timezone`, the
    one Mixpanel reads dates in); a piece of a day into two halves, down to one hour.
    """
    if window.days > 1:
        middle = window.first_day + dt.timedelta(days=(window.days - 1) // 2)
        return [replace(window, last_day=middle), replace(window, first_day=middle + ONE_DAY)]
    day_start = midnight(window.first_day, timezone)
    day_end = midnight(window.first_day + ONE_DAY, timezone)
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
    cut = low + max(MIN_SPLIT_SECONDS, (high - low) // 2 // MIN_SPLIT_SECONDS * MIN_SPLIT_SECONDS)
    if cut >= high:
        return None
    return [replace(window, time_to=cut), replace(window, time_from=cut)]


def midnight(day: dt.date, timezone: str) -> int:
    """The epoch second a day starts at in `timezone` (the one Mixpanel reads dates in)."""
    return pendulum.datetime(day.year, day.month, day.day, tz=timezone).int_timestamp


def _clock(epoch: int | None) -> str:
    if epoch is None:
        return ""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%H:%MZ")


def _instant(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class SameAnswers:
    """Tells a server that ignores the time filter splitting relies on (a proxy, a server that is not
    Mixpanel's): it answers every piece of a split window with the window's own body, so splitting
    would go on down to one-hour pieces, each downloading all of it, each emitting all of it.

    Proof, not a guess: two pieces of one window cover disjoint times, so no two honest answers share
    an event, and two answers that begin with the same bytes as their window's (its head, a digest of
    its first 64 kB) prove the filter ignored. One such answer proves nothing: a first piece, in time
    order, begins as its day does.
    """

    def __init__(self) -> None:
        self._parent: dict[Window, tuple[Window, bytes]] = {}
        self._alike: collections.Counter[Window] = collections.Counter()

    def split(self, window: Window, head: bytes | None, parts: Iterable[Window]) -> None:
        """`window`, whose answer began as `head` (None: no body, as for Mixpanel's `Timeout Error.`),
        is asked for again as `parts`."""
        if head is not None:
            for part in parts:
                self._parent[part] = (window, head)

    def ignored_by(self, window: Window, head: bytes | None) -> Window | None:
        """The window whose pieces this answer, with another, proves answered as a whole; else None."""
        parent = self._parent.get(window)
        if parent is None or head != parent[1]:
            return None
        self._alike[parent[0]] += 1
        return parent[0] if self._alike[parent[0]] >= 2 else None


def requests_for(days: int, rate: float | None, max_days: int, target_events: int) -> int:
    """About how many windows Planner cuts `days` whole days into when each holds `rate` events (None:
    not known yet, so windows of `max_days`): for saying how long a backfill takes, not for planning."""
    if days <= 0:
        return 0
    if rate is not None and rate > target_events:
        return days * min(math.ceil(rate / target_events), MAX_PIECES)
    per_window = max(1, min(max_days, int(target_events // rate))) if rate else max_days
    return math.ceil(days / per_window)
