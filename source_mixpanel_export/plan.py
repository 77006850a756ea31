"""A sync's windows: the one owner of what is requested next and of what becomes of a window.

`prefetch.fetch_in_order` asks a `Plan` for windows and tells it what each returned; the read loop
(stream.py) only emits records and checkpoints (state.Checkpoints). The plan decides:
- what to request next: the fresh days in date order, each window sized by the ones before it
  (windows.Planner), then the history sweep's windows (sweep.py), planned beforehand;
- what replaces a window Mixpanel could not answer: smaller windows for one too large, a shorter one
  for one past Mixpanel's today, or an error that says what to do;
- whether a window is read whole however large (it cannot be split any further);
- when the fresh days are done, so that their STATE comes before any sweep window's records.
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
from .windows import ONE_DAY, Planner, SameAnswers, Segment, Window, split_window


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
        self._sweep: collections.deque[Window] | None = None  # None: not decided yet
        self._pieces = SameAnswers()

    def ready(self) -> bool:
        """Whether the next window may be sent now: not while the first fresh window of its kind is out
        (windows.Planner), and no sweep window before every fresh window is read."""
        if not self._fresh.exhausted():
            return self._fresh.ready()
        return self._outstanding == 0

    def next(self) -> Window | None:
        """The next window to request, or None when the sync has none left."""
        window = self._fresh.next()
        if window is not None:
            self._outstanding += 1
            return self._bounded(window)
        if self._outstanding:
            return None
        sweep = self._sweep_windows()
        return self._bounded(sweep.popleft()) if sweep else None

    def observe(self, window: Window, download: Download) -> bool:
        """A window was read; False when it no longer counts (see `replace`: past Mixpanel's today)."""
        self._same_answer(window, download.head)
        if not window.sweep:  # very late arrivals of old days tell nothing of the days read now
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
        if not window.sweep:
            self._outstanding += len(parts) - 1
        return parts

    def fresh_done(self) -> bool:
        """Whether every fresh window has been read (the ones being emitted included)."""
        return self._fresh.exhausted() and self._outstanding == 0

    def rate(self) -> float | None:
        """The whole days' volume, in events a day, measured so far (or the state's)."""
        return self._fresh.rate()

    def days_left(self) -> int:
        """Fresh days not yet requested."""
        return self._fresh.days_left()

    def estimate(self) -> int:
        """Records the fresh days hold, from the volume measured so far."""
        total = 0.0
        for late in (False, True):
            days = sum(_days(s) for s in self._sync.segments if (s.processed_after_ms is not None) == late)
            total += (self._fresh.rate(late) or 0.0) * days
        return int(total)

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

