"""One sync of the profiles stream: which ranges it reads, in what order, and the STATE after each.

The one owner of both decisions for this stream (the read loop in profile_stream.py only emits):
- a sync reads one walk (profile_ranges.Walk) to its end: the one its state left under way, else the
  changes since the watermark (incremental, once a pass is complete), else a pass over every profile;
- then, incremental after a changes walk, the sweep: at most `profile_sweep_requests` requests a sync of
  a walk over every profile, so that what `$last_seen` does not show (edits in Mixpanel's UI, updates
  with `$ignore_time`) arrives within a bounded number of syncs;
- a range is read whole if its page 0 shows it fits, else narrowed first (`verdict`);
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


class Verdict(enum.Enum):
    """What becomes of a range once its page 0 is in."""

    READ = "read"  # read it whole
    NARROW = "narrow"  # read `narrowed` instead
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
        self.narrowed: Range | None = None

    def kind(self) -> str:
        """What the next range belongs to: "pass", "changes" or "sweep"."""
        return self.walk.kind if self.walk is not None else "sweep"

    def next(self) -> Range | None:
        """The next range to read, or None when the sync is done."""
        if self.narrowed is not None:
            return self.narrowed
        if self.walk is not None:
            return self.walk.next_range(self._now)
        if not self._sweeps or self.sweep_spent >= self._sweep_requests:
            return None
        sweep = self.state.sweep
        if sweep is None:
            sweep = Walk.new("sweep", self._now, end=self.state.watermark)
            self.state = dataclasses.replace(self.state, sweep=sweep)
        return sweep.next_range(self._now)

    def verdict(self, rng: Range, total: int, sample: Sequence[int]) -> Verdict:
        """Whether a range whose page 0 reported `total` profiles is read whole (`narrowed` says instead
        what to read when narrowed). Counts page 0 against the sweep's requests when it is the sweep's."""
        self.narrowed = None
        pages = total // self.page_size + 1  # Mixpanel's loop ends at the first page not full
        if self.walk is not None:
            target = self._range_pages
            if pages <= 2 * target:
                return Verdict.READ
        else:
            self.sweep_spent += 1
            left = self._sweep_requests - self.sweep_spent
            if pages - 1 <= left:
                return Verdict.READ
            target = left - 1  # a narrowed range costs its own page 0 first
            if target < 1:
                return Verdict.READ if self._sweep_ranges == 0 else self._stop_sweep()
        self.narrowed = narrower(rng, total, target * self.page_size, sample, self._now)
        if self.narrowed is None:  # cannot be narrowed: read it whole, unless a sweep can stop here
            return Verdict.READ if self.walk is not None or self._sweep_ranges == 0 else self._stop_sweep()
        return Verdict.NARROW

    def _stop_sweep(self) -> Verdict:
        """The sweep's next range does not fit in what is left of its requests: it waits for the next sync."""
        self._sweeps = False
        return Verdict.STOP

    def read(self, rng: Range, total: int, pages: int) -> dict[str, Any]:
        """The state after `rng` was read whole in `pages` requests (`total` profiles): the checkpoint."""
        self.narrowed = None
        if self.walk is not None:
            walk = self.walk.after(rng, total, self._range_pages * self.page_size, self._now)
            if walk is None:  # the walk is done: what it read is the watermark, less the margin
                watermark = max(self.walk.started - MARGIN_SECONDS, 0)
                self.state = dataclasses.replace(self.state, watermark=watermark, walk=None)
            else:
                self.state = dataclasses.replace(self.state, walk=walk)
            self.walk = walk
        else:
            self.sweep_spent += pages - 1
            self._sweep_ranges += 1
            sweep = self.state.sweep
            assert sweep is not None
            # sized to leave a page 0 and a page of slack for a next range denser than this one
            target = max(self._sweep_requests - 2, 1) * self.page_size
            after = sweep.after(rng, total, target, self._now)
            self.state = dataclasses.replace(self.state, sweep=after)
            if after is None:  # a sweep ends at most once a sync: the next one starts in the next sync
                self._sweeps = False
        return self.state.to_dict()
