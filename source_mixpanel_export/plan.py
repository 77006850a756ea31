"""A sync's windows: the one owner of what is requested next and of what becomes of a window.

`prefetch.fetch_in_order` asks a `Plan` for windows and tells it what each returned; the read loop
(stream.py) only emits records and checkpoints (state.Checkpoints). The plan decides:
- what to request next: the fresh days in date order, each window sized by the ones before it
  (windows.Planner), then the backfill's (history days never read, whole, newest first, sized the same
  way from the volume measured so far: recent_first_days), then the history sweep's windows (sweep.py),
  planned beforehand;
- what replaces a window Mixpanel could not answer: smaller windows for one too large, a shorter one
  for one past Mixpanel's today, or an error that says what to do;
- whether a window is read whole however large (it cannot be split any further);
- when the fresh days are done, so that their STATE comes before any backfill or sweep window's records.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable

from .client import Download
from .config import Config
from .errors import system_error
from .retry import DateAfterToday, TooLarge
from .state import SyncPlan
from .sweep import block_days, syncs_per_pass
from .windows import ONE_DAY, Planner, SameAnswers, Segment, Window, requests_for, split_window


class Plan:
    """The windows of one sync, handed out one at a time (see the module docstring)."""

    def __init__(self, sync: SyncPlan, config: Config, budget_left: Callable[[], int], logger: logging.Logger) -> None:
        """`budget_left`: the export queries left in this hour, which the sweep must not exceed."""
        self.first, self.end = sync.first, sync.end
        self._sync = sync
        self._config = config
        self._budget_left = budget_left
        self._logger = logger
        self._fresh = Planner(
            sync.segments, config.date_window_size, config.window_target_events, config.request_timezone,
            sync.state.events_per_day,
        )
        self._outstanding = 0  # fresh windows handed out and neither read nor replaced yet
        self._backfill: Planner | None = None  # None: not decided yet (when the fresh days are read)
        self._sweep: collections.deque[Window] | None = None  # None: not decided yet
        self._pieces = SameAnswers()
        if sync.backfill:
            days = sum(_days(s) for s in sync.backfill)
            after = f"once {sync.first}..{sync.end} is read and checkpointed" if sync.first <= sync.end else "now"
            self._logger.info(
                f"Backfill: {days} days of history were never read ({sync.backfill[0].first_day}.."
                f"{sync.backfill[-1].last_day}); they are read newest first {after} (recent_first_days; 0 "
                "reads oldest first)."
            )

    def ready(self) -> bool:
        """Whether the next window may be sent now: not while the first window of its kind of the fresh
        days or of the backfill is out (windows.Planner), and no backfill or sweep window before every
        fresh window is read."""
        if not self._fresh.exhausted():
            return self._fresh.ready()
        if self._outstanding:
            return False
        backfill = self._backfill_planner()
        return backfill.exhausted() or backfill.ready()

    def next(self) -> Window | None:
        """The next window to request, or None when the sync has none left."""
        window = self._fresh.next()
        if window is not None:
            self._outstanding += 1
            return self._bounded(window)
        if self._outstanding:
            return None
        window = self._backfill_planner().next()
        if window is not None:
            return self._bounded(dataclasses.replace(window, backfill=True))
        sweep = self._sweep_windows()
        return self._bounded(sweep.popleft()) if sweep else None

    def observe(self, window: Window, download: Download) -> bool:
        """A window was read; False when it no longer counts (see `replace`: past Mixpanel's today)."""
        self._same_answer(window, download.head)
        if window.backfill and self._backfill is not None:
            self._backfill.observe(window, download.events, download.size)
        elif window.fresh:  # very late arrivals of old days tell nothing of the days read now
            self._outstanding -= 1
            self._fresh.observe(window, download.events, download.size)
        return window.first_day <= self.end

    def replace(self, window: Window, exc: Exception) -> list[Window] | None:
        """The windows to request instead of one whose fetch raised `exc` (possibly none); None when `exc`
        is not the plan's to answer (the sync ends with it)."""
        if isinstance(exc, TooLarge):
            parts = self._split(window, exc)
        elif isinstance(exc, DateAfterToday):
            parts = self._shortened(window, exc)
        else:
            return None
        if window.fresh:
            self._outstanding += len(parts) - 1
        return parts

    def fresh_done(self) -> bool:
        """Whether every fresh window has been read (the ones being emitted included)."""
        return self._fresh.exhausted() and self._outstanding == 0

    def rate(self) -> float | None:
        """The whole days' volume, in events a day, measured so far (or the state's): the larger of the
        fresh days' and the backfill's."""
        rates = [self._fresh.rate(), self._backfill.rate() if self._backfill is not None else None]
        return max((r for r in rates if r is not None), default=None)

    def days_left(self) -> int:
        """Days not yet requested: fresh, and of the backfill."""
        return self._fresh.days_left() + self._backfill_left()

    def estimate(self) -> int:
        """Records the fresh days and the backfill hold, from the volume measured so far."""
        total = 0.0
        for late in (False, True):
            days = sum(_days(s) for s in self._sync.segments if (s.processed_after_ms is not None) == late)
            total += (self._fresh.rate(late) or 0.0) * days
        return int(total + (self.rate() or 0.0) * sum(_days(s) for s in self._sync.backfill))

    def backfill_left(self) -> str | None:
        """What is left of the backfill, and about how many requests and hours of the hourly budget it
        needs at the volume measured so far, in words for the logs (None: no backfill left)."""
        days = self._backfill_left()
        if not days:
            return None
        config = self._config
        requests = requests_for(days, self.rate(), config.date_window_size, config.window_target_events)
        hours = requests / config.requests_per_hour
        return (
            f"backfill: {days} days of history left, about {requests:,} requests "
            f"({hours:.1f} hours at {config.requests_per_hour} an hour)"
        )

    def _backfill_left(self) -> int:
        if self._backfill is not None:
            return self._backfill.days_left()
        return sum(_days(s) for s in self._sync.backfill)

    def _backfill_planner(self) -> Planner:
        """The backfill's windows, decided once the fresh days are read: sized from the volume measured
        so far, their first still a probe that goes alone (old days need not be as heavy as new ones)."""
        if self._backfill is not None:
            return self._backfill
        segments = self._sync.backfill
        if segments and self.end < self.first and self._sync.state.reached() is None:
            self._logger.warning(  # a STATE of checked history and no days read would not be ours
                "Mixpanel's today is earlier than every day this first sync was to read first: the backfill "
                "starts with the next sync."
            )
            segments = []
        config = self._config
        self._backfill = Planner(
            segments, config.date_window_size, config.window_target_events, config.request_timezone,
            self.rate(), newest_first=True,
        )
        self._backfill.stop_after(self.end)
        left = self.backfill_left()
        if left is not None:
            self._logger.info(f"Starting the {left}, newest first. A STATE follows each window.")
        return self._backfill

    def _bounded(self, window: Window) -> Window:
        """The window, marked to be read whole however large when it cannot be split any further."""
        return dataclasses.replace(window, whole=split_window(window, self._config.request_timezone) is None)

    def _split(self, window: Window, exc: TooLarge) -> list[Window]:
        self._same_answer(window, exc.head)
        parts = split_window(window, self._config.request_timezone)
        if parts is None:
            raise system_error(
                f"Mixpanel timed out on window {window.label()} even at one hour ({exc}). "
                "Narrow the export with events or where.",
            )
        parts = [self._bounded(part) for part in parts]
        if window.backfill and window.days > 1:  # newest first; the pieces of a day stay in time order
            parts.reverse()
        labels = ", ".join(part.label() for part in parts)
        self._logger.info(f"Window {window.label()} is too large ({exc}); splitting it into {labels}.")
        self._pieces.split(window, exc.head, parts)
        return parts

    def _shortened(self, window: Window, exc: DateAfterToday) -> list[Window]:
        """Mixpanel's today is earlier than ours: nothing after its today is requested or counts."""
        last = min(window.last_day - ONE_DAY, self.end)
        self._logger.warning(
            f"Mixpanel says {window.last_day} is later than its today ({exc}): its clock or the "
            f"project's timezone is behind ours. Reading up to {last} instead; check project_timezone."
        )
        self.end = min(self.end, last)
        self._fresh.stop_after(last)
        if self._backfill is not None:
            self._backfill.stop_after(last)
        return [] if last < window.first_day else [dataclasses.replace(window, last_day=last)]

    def _same_answer(self, window: Window, head: bytes | None) -> None:
        """Fail when this piece's answer proves the server ignores the time filter (windows.SameAnswers)."""
        whole = self._pieces.ignored_by(window, head)
        if whole is not None:
            raise system_error(
                f"{self._config.base_url} answered two pieces of window {whole.label()}, the last "
                f"{window.label()}, with the start of the whole window's own answer: it ignores the time "
                "filter (where) that splitting a large window relies on, so every piece would hold the whole. "
                "Mixpanel's export API honours it: check api_base_url and what stands between this machine "
                "and Mixpanel."
            )

    def _sweep_windows(self) -> collections.deque[Window]:
        """The sweep's windows left, decided once, when the fresh days are read: none when the hour's
        budget left cannot pay for them (the sync would wait for the next hour)."""
        if self._sweep is not None:
            return self._sweep
        sweep, left = self._sync.sweep, self._budget_left()
        self._sweep = collections.deque()
        if not sweep:
            return self._sweep
        if left < len(sweep):
            self._logger.info(
                f"Skipping the history sweep this sync: {left} export queries are left in this hour's "
                f"budget and it needs {len(sweep)}. The next sync sweeps instead."
            )
            return self._sweep
        self._sweep.extend(sweep)
        history = self._sync.state.history_days(self._config.start_day())
        block = block_days(self._config.date_window_size, self._config.attribution_window)
        self._logger.info(
            f"History sweep: {len(sweep)} window(s) of old days, for events that arrived after they were "
            "last checked: " + ", ".join(w.label() for w in sweep) + f". Checking all {history} days of "
            f"history takes {syncs_per_pass(history, block, len(sweep))} syncs like this one."
        )
        return self._sweep

def _days(segment: Segment) -> int:
    return (segment.last_day - segment.first_day).days + 1

