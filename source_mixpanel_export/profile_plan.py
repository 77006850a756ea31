"""One sync of the profiles stream: which ranges it reads, in what order, and the STATE after each.

The one owner of both decisions for this stream (the read loop in profile_stream.py only emits):
- a sync reads one walk (profile_ranges.Walk) to its end: the one its state left under way, else the
  changes since the watermark (incremental, once a pass is complete), else a pass over every profile;
- then, incremental after a changes walk, the sweep: at most `profile_sweep_requests` requests a sync of
  a walk over every profile, so that what `$last_seen` does not show (edits in Mixpanel's UI, updates
  with `$ignore_time`) arrives within a bounded number of syncs;
- a range is read whole if its page 0 shows it fits, else narrowed first (`verdict`); the narrower range is
  kept in the walk (`to`), so a sweep that runs out of requests while narrowing goes on from it next sync;
- a sweep range stops when the sweep's requests do (`more`), whatever its page 0 said;
- the STATE after a range says it was read; a walk's end moves the watermark to its start, less
  MARGIN_SECONDS (clocks and Mixpanel's processing), so a profile updated while it ran is read again.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from .profile_ranges import Range, Walk, narrower
from .profile_state import ProfileState

MARGIN_SECONDS = 3600  # the next changes walk starts this long before this one did
DEFAULT_PAGE_SIZE = 1000  # Mixpanel's; each answer says its own
MISLED_AT = 0.75  # a narrowing aims at half a range's profiles or fewer: keeping more than this, it was misled


class Verdict(enum.Enum):
    """What becomes of a range once its page 0 is in."""

    READ = "read"  # read it whole
    NARROW = "narrow"  # read the narrower range `next` gives instead
    STOP = "stop"  # the sweep's requests for this sync are spent: read no more


class ProfilePlan:
    """The ranges of one sync and its checkpoints (see the module docstring)."""

    def __init__(
        self, state: ProfileState, incremental: bool, now: int, sweep_requests: int, range_pages: int = 25
    ) -> None:
        """`range_pages`: about how many pages a range of a pass or of the changes holds."""
        self.state = state
        self._range_pages = range_pages
        self._now = now
        self._sweep_requests = sweep_requests
        self.page_size = DEFAULT_PAGE_SIZE
        walk = state.walk
        if walk is None or not (incremental or walk.kind == "pass"):
            changes = incremental and state.watermark is not None
            walk = Walk.new("changes", now, cursor=state.watermark) if changes else Walk.new("pass", now)
        self.walk: Walk | None = walk
        self._sweeps = incremental and walk.kind == "changes" and sweep_requests > 0
        self.sweep_spent = 0  # requests the sweep sent in this sync
        self._sweep_ranges = 0  # ranges the sweep read whole in this sync
        self._capped = True  # whether the range under way stops at the sweep's requests (`more`)
        self._too_large: tuple[Range, int, Sequence[int | None]] | None = None  # the last range narrowed, its page 0

    def kind(self) -> str:
        """What the next range belongs to: "pass", "changes" or "sweep"."""
        return self.walk.kind if self.walk is not None else "sweep"

    def next(self) -> Range | None:
        """The next range to read, or None when the sync is done."""
        if self.walk is not None:
            return self.walk.next_range(self._now)
        # after its first range, a sweep begins one only with a page 0 and a page to spare
        if not self._sweeps or self.sweep_spent + (2 if self._sweep_ranges else 1) > self._sweep_requests:
            return None
        if self.state.sweep is None:  # every profile last seen before it begins (later ones: the next sweep)
            self._set_sweep(Walk.new("sweep", self._now, end=self._now))
        assert self.state.sweep is not None
        return self.state.sweep.next_range(self._now)

    def verdict(self, rng: Range, total: int | None, sample: Sequence[int | None]) -> Verdict:
        """Whether a range whose page 0 reported `total` profiles (None: a full page without a total) is read
        whole, or narrowed first (`next` then gives the narrower range). `sample`: page 0's `$last_seen`, in
        its order (None: no date)."""
        pages = None if total is None else total // self.page_size + 1  # Mixpanel's last page is not full
        if self.walk is not None:
            return self._walk_verdict(rng, total, pages, sample)
        return self._sweep_verdict(rng, total, pages, sample)

    def _walk_verdict(
        self, rng: Range, total: int | None, pages: int | None, sample: Sequence[int | None]
    ) -> Verdict:
        """A pass or the changes: read what holds up to twice `range_pages`. Without a total, a range sized from
        the density of the one before is taken to fit, and the first of a walk (no density yet) is halved
        until its page 0 is not full."""
        assert self.walk is not None
        sized = self.walk.span is not None and self.walk.to is None  # from the density of the range before
        if (pages is None and sized) or (pages is not None and pages <= 2 * self._range_pages):
            return Verdict.READ
        narrowed = narrower(rng, total, self._range_pages * self.page_size, sample, self._now, self._misled(rng, total))
        if narrowed is None:  # one second, or the profiles without $last_seen or with no date: read whole
            return Verdict.READ
        self.walk = self.walk.narrowed(narrowed, rng)
        self.state = dataclasses.replace(self.state, walk=self.walk)
        self._too_large = (rng, total, sample) if total is not None else None
        return Verdict.NARROW

    def _sweep_verdict(
        self, rng: Range, total: int | None, pages: int | None, sample: Sequence[int | None]
    ) -> Verdict:
        """The sweep: page 0 is one of its requests. Read what fits in those left; narrow what does not, to what
        is left less the narrower range's own page 0, or when nothing is left, to what the next sync can read
        (kept in the state); a range that fits the next sync as it is waits for it. A range of unknown size is
        read, and `more` stops it when the requests run out. One that cannot be narrowed is read whole, but
        only as the first range of a sync's sweep (the documented exception)."""
        self.sweep_spent += 1
        left = self._sweep_requests - self.sweep_spent
        if pages is not None and pages - 1 <= left:
            self._capped = True
            return Verdict.READ
        if pages is not None and left <= 1 and pages - 1 <= self._sweep_requests - 1:
            return self._stop_sweep()
        target = self._sweep_size(left if left > 1 and pages is not None else None)
        narrowed = narrower(rng, total, target, sample, self._now, self._misled(rng, total))
        self._capped = narrowed is not None
        if pages is None or narrowed is None:
            return Verdict.READ if self._capped or self._sweep_ranges == 0 else self._stop_sweep()
        self._set_sweep(self._sweep().narrowed(narrowed, rng))
        self._too_large = (rng, total, sample) if total is not None else None
        return Verdict.NARROW if left > 1 else self._stop_sweep()

    def more(self, requests: int, rng: Range, sample: Sequence[int | None]) -> bool:
        """Whether the range under way may send another page after `requests` of its own: always, but for
        the sweep, whose requests a sync are bounded (a page 0 without a total does not show how many
        pages follow). A sweep range stopped here is narrowed for the next sync; what it emitted had been
        read before, by a pass or the changes."""
        if self.walk is not None or not self._capped or self.sweep_spent + requests - 1 < self._sweep_requests:
            return True
        # no total: page 0's, if any, did not hold
        narrowed = narrower(rng, None, self._sweep_size(None), sample, self._now)
        if narrowed is not None:
            self._set_sweep(self._sweep().narrowed(narrowed, rng))
        self._stop_sweep()
        return False

    def _misled(self, rng: Range, total: int | None) -> bool:
        """Whether `rng`, narrowed from the last range too large in this sync, holds over MISLED_AT of its profiles:
        that narrowing misjudged page 0 (a fair sample, it seemed; the newest, in fact)."""
        last = self._too_large
        return last is not None and total is not None and last[0].lo == rng.lo and total > MISLED_AT * last[1]

    def _sweep_size(self, left: int | None) -> int:
        """The profiles a sweep range is sized for: what `left` queries of this sync read less the range's page
        0, or (None) what the next sync's K read less a page 0 and a page of slack for a range denser than
        the one it was sized from. K >= 3 (config), so both are a page or more."""
        pages = left - 1 if left is not None else self._sweep_requests - 2
        return pages * self.page_size

    def _sweep(self) -> Walk:
        assert self.state.sweep is not None
        return self.state.sweep

    def _set_sweep(self, sweep: Walk | None) -> None:
        self.state = dataclasses.replace(self.state, sweep=sweep)

    def _stop_sweep(self) -> Verdict:
        """The sweep's next range does not fit in what is left of its requests: it waits for the next sync."""
        self._sweeps = False
        return Verdict.STOP

    def read(self, rng: Range, total: int, pages: int, earliest: int | None = None) -> dict[str, Any]:
        """The state after `rng` was read whole in `pages` requests (`total` profiles; `earliest` the earliest
        date of `$last_seen` among them): the checkpoint."""
        too_large, self._too_large = self._too_large, None
        if self.walk is not None:
            target = self._range_pages * self.page_size
            walk = self.walk.after(rng, total, target, self._now, earliest)
            if walk is not None and total == 0:
                walk = self._narrow_rest(walk, too_large, target)
            if walk is None:  # the walk is done: what it read is the watermark, less the margin
                watermark = max(self.walk.started - MARGIN_SECONDS, 0)
                self.state = dataclasses.replace(self.state, watermark=watermark, walk=None)
            else:
                self.state = dataclasses.replace(self.state, walk=walk)
            self.walk = walk
        else:
            self.sweep_spent += pages - 1
            self._sweep_ranges += 1
            after = self._sweep().after(rng, total, self._sweep_size(None), self._now, earliest)
            if after is not None and total == 0:
                left = self._sweep_requests - self.sweep_spent
                after = self._narrow_rest(after, too_large, self._sweep_size(left if left > 1 else None))
            self._set_sweep(after)
            if after is None:  # a sweep ends at most once a sync: the next one starts in the next sync
                self._sweeps = False
        return self.state.to_dict()

    def _narrow_rest(
        self, walk: Walk, too_large: tuple[Range, int, Sequence[int | None]] | None, target: int
    ) -> Walk:
        """A narrower range found empty: the rest of the range too large, which comes next, holds all its
        profiles, and that range's page 0 showed where they lie; so the rest is narrowed now, without asking
        Mixpanel again (as it is when profiles bunch far from where the walk stands)."""
        rest = walk.next_range(self._now)
        if too_large is None or too_large[0].hi != rest.hi or too_large[1] <= target:
            return walk
        _, total, sample = too_large
        narrowed = narrower(rest, total, target, sample, self._now)
        if narrowed is None:
            return walk
        self._too_large = (rest, total, sample)
        return walk.narrowed(narrowed, rest)
