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
  one request it costs). One second of `$last_seen`, the profiles without one, and those whose `$last_seen`
  is no date (with any before 2009) cannot be narrowed and are read whole however many they are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .profiles import LAST_SEEN, mixpanel_time

MAX_SPAN_SECONDS = 20 * 366 * 86_400  # a range covers at most 20 years of $last_seen
NARROW_AT_MOST = 0.5  # a narrowed range is aimed at half the profiles (or seconds) of the one it replaces, at most
MIN_SAMPLE = 20  # page 0's profiles in a range that show where its profiles lie (a page holds 1,000)
SORTED_AT_LEAST = 0.9  # page 0's steps of $last_seen going one way, for it to count as sorted by it
EDGE = 5  # page 0's newest (oldest) profiles whose gaps show how far beyond them a fair sample would reach
EDGE_GAPS = 10  # ...and how many such gaps beyond them show that page 0 holds the oldest (newest) profiles
# Where a range without a lower bound is taken to start when its profiles do not show: Mixpanel's launch, 2009.
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
    narrowing starts the next sync from the narrower range, not from the one too large), and then
    `span` the seconds from `to` to the end of the range found too large (None: open-ended): if the
    narrower range is empty, the rest of that one comes next, and its page 0 narrows it again.
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
        `earliest`: the earliest date of `$last_seen` in it, where its density starts when it has no lower bound."""
        if done.unseen:
            return dataclasses.replace(self, unseen_done=True)
        if done.hi is None or (self.end is not None and done.hi >= self.end):
            return None
        lo = done.lo
        if lo is None:
            lo = earliest if earliest is not None and earliest < done.hi else floor_of(done.hi)
        # empty: the rest of the range it was narrowed from, or up to the end; narrowed in turn
        rest = self.span if self.to is not None else None
        span = next_span(done.hi - lo, total, target) if total else rest
        return dataclasses.replace(self, cursor=done.hi, span=span, to=None)

    def narrowed(self, rng: Range, was: Range) -> Walk:
        """The walk reading `rng` (a narrower range from the same start) next, instead of `was`."""
        assert rng.hi is not None
        rest = min(was.hi - rng.hi, MAX_SPAN_SECONDS) if was.hi is not None else None
        return dataclasses.replace(self, to=rng.hi, span=rest)


def next_span(covered: int, total: int, target: int) -> int:
    """The seconds the next range should cover to hold about `target` profiles, if it is as dense as the
    last one, which covered `covered` seconds and held `total` (at least one)."""
    span = covered * target // total
    return min(max(span, 1), MAX_SPAN_SECONDS)


def floor_of(hi: int) -> int:
    """Where a range without a lower bound that ends at `hi` is taken to start when its profiles do not show
    it: Mixpanel's launch; or, for older times, 1970, or as far back as a range reaches."""
    return max(t for t in (FLOOR_SECONDS, 0, hi - MAX_SPAN_SECONDS) if t < hi)


def narrower(
    rng: Range, total: int | None, target: int, sample: Sequence[int | None], now: int, misled: bool = False
) -> Range | None:
    """A range to read instead of `rng`, whose page 0 reported `total` profiles (None: a full page, and no
    total) where about `target` fit; None when it cannot be narrowed (the unseen profiles, one second).

    The new range keeps the start and ends before the old one, and at `now` at the latest, so repeated
    narrowing ends; page 0's profiles tell where (`sample`: their `$last_seen` in the page's order, None for
    no date; see `_end`). A range without a lower bound is taken to start at the earlier of its earliest date
    in page 0 and `floor_of` (not at page 0's earliest alone: page 0 may hold only the newest), and its
    profiles whose `$last_seen` is no date count as earlier than any date. Profiles last seen after `now`
    are read, whole, in the walk's last range. `misled`: the last narrowing of this range barely shrank it, so
    its page 0 was misread: one that looked sorted oldest first was a fair sample (of profiles that end well
    before `hi`), and one of too few distinct seconds to show an order was the newest.
    """
    if rng.unseen:
        return None
    hi = rng.hi if rng.hi is not None else now + 1  # an end past now would be open-ended again, and not ours
    dated = [s for s in sample if s is not None and (rng.lo is None or s >= rng.lo)]
    lo = rng.lo if rng.lo is not None else min([floor_of(hi), *dated])
    if hi - lo <= 1:
        return None
    dated = [min(s, hi - 1) for s in dated]  # last seen after now (a clock ahead): at now
    undated = sum(s is None for s in sample) if rng.lo is None else 0
    end = _end(lo, hi, total, target, dated, undated, misled)
    return Range(rng.lo, min(max(end, lo + 1), hi - 1))


def _end(lo: int, hi: int, total: int | None, target: int, dated: list[int], undated: int, misled: bool) -> int:
    """Where a range from `lo` to `hi` ends once narrowed to about `target` of its `total` profiles. Page 0
    shows `dated` (in the page's order) and `undated` of them; Mixpanel documents no order for a page:
    - in no order of `$last_seen`, page 0 is a fair sample: the end is where the share that fits of it lies
      below (a range's profiles are seldom spread evenly: most were seen lately);
    - sorted by it, page 0 holds the oldest or the newest profiles: the end is counted among the oldest when
      enough of those fit, else placed in the seconds past them or before the newest, as far as the rest
      would reach at page 0's own density (halving the seconds when the rest must be denser than that);
    - too few of them, or no total: that share of the seconds.
    """
    share = min(target / total, NARROW_AT_MOST) if total else NARROW_AT_MOST
    seen = len(dated) + undated
    if not total or seen < MIN_SAMPLE:
        return lo + max(int((hi - lo) * share), 1)
    ascending = sorted(dated)
    order = _order(dated, lo, hi)
    if misled and order > 0:  # not the oldest: a fair sample, sorted within itself, of data that ends early
        order = 0
    elif misled and order == 0 and 0 < len(set(dated)) <= MIN_SAMPLE:  # the newest, in too few seconds to tell
        order = -1
    rest = max(total - seen, 1)  # the profiles page 0 does not show
    if order > 0 and target < seen:  # among the oldest
        return lo + 1 if target < undated else ascending[target - undated]
    if order > 0:  # past the oldest, at the density their newer half shows, growing or falling to hold the rest
        start, half = ascending[-1] + 1, ascending[len(ascending) // 2 :]
        seconds, density = max(hi - start, 1), len(half) / max(start - half[0], 1)
        return start + int(seconds * _growing_share(min((target - seen) / rest, 1.0), rest / seconds / density))
    if order < 0:  # before the newest, as far as the rest reach at their density
        end, reach = ascending[0], rest * (ascending[-1] - ascending[0] + 1) // len(dated)
        if end - reach < lo:
            return lo + int((end - lo) * max(min(target / rest, 1.0), NARROW_AT_MOST))
        start = end - reach
        return start + int((end - start) * min(target / rest, 1.0))
    index = int(seen * share)
    return lo + 1 if index < undated else ascending[index - undated]


def _order(dated: Sequence[int], lo: int, hi: int) -> int:
    """1 when page 0 holds the oldest profiles of the range from `lo` to `hi`, -1 the newest, 0 a fair sample.

    Sorted means that neighbours that differ go one way: SORTED_AT_LEAST of at least MIN_SAMPLE steps (20 steps
    of a fair sample go one way that often less than once in 10^5), or, on a page of few distinct seconds, all
    steps, each second in one run where a fair sample would change second at least MIN_SAMPLE times. But a page
    sorted within itself may still be a fair sample: it is taken as the oldest only if the seconds above it are
    many times (EDGE_GAPS) the gaps between its newest few, which a fair sample would not leave (and the newest
    likewise)."""
    steps = [b > a for a, b in zip(dated, dated[1:], strict=False) if a != b]
    if len(steps) >= MIN_SAMPLE:
        up = sum(steps) / len(steps)
    elif steps and len(steps) == len(set(dated)) - 1 and _changes_if_shuffled(dated) >= MIN_SAMPLE:
        up = sum(steps) / len(steps)
    else:
        return 0
    ascending = sorted(dated)
    top, bottom = ascending[-1] - ascending[-EDGE], ascending[EDGE - 1] - ascending[0]  # EDGE - 1 gaps each
    if up >= SORTED_AT_LEAST and hi - 1 - ascending[-1] > EDGE_GAPS * max(top, EDGE - 1) / (EDGE - 1):
        return 1
    if up <= 1 - SORTED_AT_LEAST and ascending[0] - lo > EDGE_GAPS * max(bottom, EDGE - 1) / (EDGE - 1):
        return -1
    return 0


def _changes_if_shuffled(dated: Sequence[int]) -> float:
    """How often neighbours would differ, on average, were the page in no order."""
    counts = Counter(dated)
    return (len(dated) - 1) * (1 - sum((c / len(dated)) ** 2 for c in counts.values()))


def _growing_share(share: float, ratio: float) -> float:
    """The share of a stretch of seconds that holds `share` of its profiles, when their density changes
    exponentially along it from d0 at its start to `ratio` times d0 on average (`ratio` 1: even).

    Page 0 sorted oldest first shows the density only where the rest begins; profiles are seldom even (most
    were seen lately), and a share of the seconds alone left narrowed ranges holding a tenth of their target."""
    ratio = min(max(ratio, 0.02), 1e15)
    if abs(ratio - 1) < 1e-3:
        return share
    low, high = -60.0, 60.0  # u = the exponent over the stretch, where (e^u - 1) / u = ratio
    for _ in range(60):
        mid = (low + high) / 2 or 1e-9
        if math.expm1(mid) / mid < ratio:
            low = mid
        else:
            high = mid
    u = (low + high) / 2 or 1e-9
    return math.log1p(share * math.expm1(u)) / u
