"""Which profiles to ask for next: ranges of `$last_seen`, and walks over them (pure, no HTTP).

Mixpanel pages a query's profiles through a session that a later sync cannot reuse, so the only
progress a sync can keep is "every profile whose `$last_seen` is before X has been read". A walk
therefore reads ranges of `$last_seen` in ascending order, each in one session from page 0 to its
last page, and moves its cursor past each range once it is read whole (the STATE after it says so):
- a profile updated meanwhile gets a later `$last_seen`, so it moves forward, into a range still to
  come or past the walk's start (the next sync's changes): ascending order misses none;
- the profiles without `$last_seen` are one range of their own, read first; those whose `$last_seen`
  is no date fall in the first dated range (its `where` is a complement), so every profile is in
  exactly one range;
- a range holds about `target` profiles: it is sized from the density of the range before it, and a
  range whose page 0 reports far more (`total`) is narrowed before it is read (that page 0 is the
  one request it costs). One second of `$last_seen`, or the profiles without one, cannot be narrowed
  and are read whole however many they are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from .profiles import LAST_SEEN, mixpanel_time

MAX_SPAN_SECONDS = 20 * 366 * 86_400  # a range covers at most 20 years of $last_seen
NARROW_AT_MOST = 0.5  # a narrowed range holds at most half of the profiles (or seconds) of the one it replaces
MIN_SAMPLE = 20  # page 0's profiles in a range that show where its profiles lie (a page holds 1,000)
EMPTY_GROWTH = 4  # an empty range: the next one covers this many times its span
# Without a lower bound and without a sample, a range is narrowed from here: Mixpanel was launched in 2009.
FLOOR_SECONDS = int(dt.datetime(2009, 1, 1, tzinfo=dt.UTC).timestamp())
_PROPERTY = f'properties["{LAST_SEEN}"]'


@dataclass(frozen=True)
class Range:
    """Profiles by `$last_seen`: from `lo` (inclusive; None: the earliest, and values that are no date)
    up to `hi` (exclusive; None: no end), in UTC epoch seconds; or, with `unseen`, those without one."""

    lo: int | None = None
    hi: int | None = None
    unseen: bool = False

    def where(self) -> str:
        """The `where` expression that selects exactly this range's profiles (see the module docstring)."""
        if self.unseen:
            return f"not defined({_PROPERTY})"
        if self.lo is None:
            upper = f" and not ({_PROPERTY} >= {_datetime(self.hi)})" if self.hi is not None else ""
            return f"defined({_PROPERTY}){upper}"
        upper = f" and {_PROPERTY} < {_datetime(self.hi)}" if self.hi is not None else ""
        return f"{_PROPERTY} >= {_datetime(self.lo)}{upper}"

    def label(self) -> str:
        """The range as logs show it: `[2024-01-01T00:00:00, 2024-02-01T00:00:00)`, or `without $last_seen`."""
        if self.unseen:
            return f"without {LAST_SEEN}"
        lo = mixpanel_time(self.lo) if self.lo is not None else "earliest"
        hi = mixpanel_time(self.hi) if self.hi is not None else "now"
        return f"[{lo}, {hi})"


def _datetime(seconds: int | None) -> str:
    return f'datetime("{mixpanel_time(seconds or 0)}")'


@dataclass(frozen=True)
class Walk:
    """A read of ranges in ascending `$last_seen`, resumable: what is left of it is all a STATE keeps.

    `kind` is "pass" (every profile), "changes" (from the watermark on) or "sweep" (every profile, a few
    requests a sync). `cursor` is where the next dated range starts (None: the earliest); `unseen_done`
    whether the profiles without `$last_seen` are read (a changes walk has none to read); `span` the
    seconds the next range should cover, from the density of the last one (None: not known yet);
    `started` when the walk began (epoch seconds; a pass or changes walk's next watermark comes from
    it); `end` where it stops (exclusive; None: it ends with an open-ended range); `to` where the next
    range ends once narrowed (kept in the state, so that a sweep that runs out of requests while
    narrowing starts the next sync from the narrower range, not from the one too large).
    """

    kind: str
    cursor: int | None
    unseen_done: bool
    span: int | None
    started: int
    end: int | None = None
    to: int | None = None

    @classmethod
    def new(cls, kind: str, started: int, cursor: int | None = None, end: int | None = None) -> Walk:
        """A walk from its start: a changes walk begins at `cursor` and has no unseen range to read."""
        return cls(kind, cursor, unseen_done=kind == "changes", span=None, started=started, end=end)

    def next_range(self, now: int) -> Range:
        """The range to read next. Ranges reach `end`, or past `now` become open-ended."""
        if not self.unseen_done:
            return Range(unseen=True)
        hi = self.to
        if hi is None and self.cursor is not None and self.span is not None:
            hi = self.cursor + self.span
        if self.end is not None:
            hi = self.end if hi is None else min(hi, self.end)
        elif hi is not None and hi > now:
            hi = None
        return Range(self.cursor, hi)

    def after(self, done: Range, total: int, target: int, now: int, earliest: int | None = None) -> Walk | None:
        """The walk once `done` is read whole (`total` profiles in it), or None when it was the last range.
        `earliest`: the earliest `$last_seen` seen in it, where its density starts when it has no lower bound."""
        if done.unseen:
            return dataclasses.replace(self, unseen_done=True)
        if done.hi is None or (self.end is not None and done.hi >= self.end):
            return None
        lo = done.lo
        if lo is None and earliest is not None and earliest < done.hi:
            lo = earliest
        elif lo is None:  # from Mixpanel's launch; or, for older times, from 1970, or as far as a range reaches
            lo = max(t for t in (FLOOR_SECONDS, 0, done.hi - MAX_SPAN_SECONDS) if t < done.hi)
        span = next_span(done.hi - lo, total, target)
        return dataclasses.replace(self, cursor=done.hi, span=span, to=None)

    def narrowed(self, rng: Range) -> Walk:
        """The walk reading `rng` (a narrower range from the same start) next, instead of its planned range."""
        return dataclasses.replace(self, to=rng.hi)


def next_span(covered: int, total: int, target: int) -> int:
    """The seconds the next range should cover to hold about `target` profiles, if it is as dense as the
    last one, which covered `covered` seconds and held `total` (an empty one: EMPTY_GROWTH times more)."""
    span = covered * EMPTY_GROWTH if total == 0 else covered * target // total
    return min(max(span, 1), MAX_SPAN_SECONDS)


def narrower(rng: Range, total: int | None, target: int, sample: Sequence[int], now: int) -> Range | None:
    """A range to read instead of `rng`, whose page 0 reported `total` profiles (None: a full page, and no
    total) where about `target` fit; None when it cannot be narrowed (the unseen profiles, one second).

    The new range keeps the start and ends where the share `target` is of `total` (at most half) of page
    0's profiles (`sample`, their `$last_seen`) lie below: a range's profiles are seldom spread evenly
    (most were seen lately), and page 0 shows where they are; it ends before the old one, so repeated
    narrowing ends. With too few of them in the range, or no total, it covers that share of the seconds
    instead. Without a lower bound, the earliest of `sample` stands in for it, or FLOOR_SECONDS.
    """
    if rng.unseen:
        return None
    lo = rng.lo if rng.lo is not None else min(min(sample, default=FLOOR_SECONDS), now)
    hi = rng.hi if rng.hi is not None else max(now, lo) + 1
    if hi - lo <= 1:
        return None
    share = min(target / total, NARROW_AT_MOST) if total else NARROW_AT_MOST
    inside = sorted(s for s in sample if lo <= s < hi)
    if total and len(inside) >= MIN_SAMPLE:
        return Range(rng.lo, min(max(inside[int(len(inside) * share)], lo + 1), hi - 1))
    return Range(rng.lo, lo + max(int((hi - lo) * share), 1))
