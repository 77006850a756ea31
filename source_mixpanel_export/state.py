"""The incremental state: small, versioned, readable by a person, read and written only here.

What a state promises, with N the attribution window in days: every event dated on or before
`synced_through` that Mixpanel processed at or before `watermark_ms`, and at most N days after it
happened, has been emitted. `in_progress` says the same for the days up to its `through`, with
another watermark (a sync partway, or one whose end_date stopped short of `synced_through`).
Nothing per event is kept.

`events_per_day` promises nothing about data: it is the heaviest whole-day volume the last windows
read (windows.Planner.rate), so that the next sync, or a resumed one, sizes its first window by it
instead of sending a probe that a heavy project answers with a body too large to keep.

`history` extends that promise to any lateness for the days before the recent stretch the syncs
re-read: ranges of days, each with the watermark it was last checked at (every event of those days
that Mixpanel processed at or before it has been emitted, however late). The history sweep
(sweep.py) checks its stalest ranges again each sync. A version-2 state has no history: its synced
days before the recent stretch count as checked at its watermark.

A range checked at 0 holds days never read, which promise nothing. With recent_first_days, a first sync
(or one after a reset) leaves the days before its last recent_first_days so (`ExportState.recent_first`)
and reads them after those, newest first, a window at a time (the backfill: plan.Plan); each window's
days then count as checked at the sync's watermark, so a killed backfill goes on where it stopped and
reads no day twice. An older release reads such a state as it is: its sweep reads those days whole.

A state is input the connector cannot trust. A state from a clock in the future would make every
later sync skip new events without an error: a day after today is read as today, and a watermark
ahead of now as an hour before now (re-reading is harmless, skipping is not), and one too far ahead to come from a
clock a little off (DATE_SKEW, WATERMARK_SKEW_MS) is refused with a config error that says to reset the
stream (see `parse_state`). A state describes one project's days in one zone: `binding` names the
region, project and day zone it was read for, and a config that names another is refused (`bind`).

Why the next sync loses nothing within that promise: it re-reads, keeping only events processed
after the watermark of the part that covers them, every day from the watermark's date minus N days
(an event processed later and at most N days late cannot be older), and reads whole the days never
read. Its own watermark is at most the moment Mixpanel received its earliest request, so every event
processed by then was in the answers it emitted.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import pendulum
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from . import clock
from .config import FIRST_DATE, Config
from .errors import config_error
from .sweep import (
    MAX_RANGES_PER_WINDOW,
    Checked,
    block_days,
    fold_limit,
    history_days,
    mark,
    sweep_windows,
    unread_spans,
)
from .windows import Segment, Window, plan_segments

if TYPE_CHECKING:
    from airbyte_cdk.models import AirbyteStateMessage

STATE_VERSION = 3
READ_VERSIONS = (2, 3)  # a version-2 state is read as one without history (see ExportState.with_history)
MAX_HISTORY_RANGES = 10_000  # a sweep pass leaves about one range per sync; far more is not our state
MAX_EVENTS_PER_DAY = 10**10  # ~115,000 events a second; a rate above it is not one we wrote
NO_CURSOR_MARKER = "__ab_no_cursor_state_message"
ONE_DAY = dt.timedelta(days=1)
MS_PER_DAY = 86_400_000
# How far ahead of this machine's clock a state may lie and still be brought back to now rather than
# refused: a clock an hour off (a watermark) or a date off by a day (a zone, a clock near midnight).
DATE_SKEW = dt.timedelta(days=1)
WATERMARK_SKEW_MS = 3_600_000


@dataclass(frozen=True)
class Binding:
    """What a state describes: one project's days, read in one zone, from one region.

    A project secret names no project: its state is bound to project_id only when the config gives one.
    The secret itself is not bound, not even as a hash: rotating it changes no data, and a hash of a
    secret in a state file would let anyone who reads the file test guesses of it.
    """

    region: str
    project_id: int | None
    day_zone: str

    @classmethod
    def of(cls, config: Config) -> Binding:
        """The binding a sync with this config writes."""
        return cls(config.region, config.project_id, config.request_timezone)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"region": self.region, "day_zone": self.day_zone}
        if self.project_id is not None:
            out["project_id"] = self.project_id
        return out


@dataclass(frozen=True)
class ExportState:
    """Where the last sync got to: see the module docstring for what it promises."""

    synced_through: dt.date | None = None
    watermark_ms: int | None = None
    partial_through: dt.date | None = None
    partial_watermark_ms: int | None = None
    migrated_from: str | None = None  # set when read from another connector's state
    history_from: dt.date | None = None  # the first day of `history`; None: no history kept yet
    history: tuple[Checked, ...] = ()  # (through_day, watermark_ms) ranges from history_from on
    events_per_day: int | None = None  # the volume the last windows read, to size the next first window
    binding: Binding | None = None  # None: a state written before states were bound, or migrated
    notes: tuple[str, ...] = ()  # what reading the state changed (a future date brought back), to log

    def first_day(self, start_day: dt.date, attribution_days: int, timezone: str = "UTC") -> dt.date:
        """The first event date this sync reads: the earliest day an event up to N days late can miss.

        An event processed after the oldest watermark and at most `attribution_days` late happened
        after that watermark less N days. Days never read come after `reached` and are read whole.
        """
        reached = self.reached()
        if reached is None:  # days before the history's end are left to the backfill (recent_first)
            return max(start_day, self.recent_from() or start_day)
        candidates = [reached + ONE_DAY]
        recent_start = self.recent_start(attribution_days, timezone)
        if recent_start is not None:
            candidates.append(recent_start)
        if self.synced_through is not None and self.watermark_ms is None:  # migrated: no watermark
            candidates.append(self.synced_through - dt.timedelta(days=max(attribution_days, 1) - 1))
        recent_from = self.recent_from()
        if recent_from is not None:  # the days after the history are re-read until they join it
            candidates.append(recent_from)
        return max(start_day, min(candidates))

    def recent_start(self, attribution_days: int, timezone: str) -> dt.date | None:
        """The earliest day on which an event processed after the recent watermarks can be at most
        `attribution_days` late (None when there is no watermark)."""
        marks = [mark for _, mark in self._recent_coverage()]
        return day_of(min(marks) - attribution_days * MS_PER_DAY, timezone) if marks else None

    def recent_from(self) -> dt.date | None:
        """The first day after the history (None when no history is kept yet)."""
        return self.history[-1][0] + ONE_DAY if self.history else self.history_from

    def reached(self) -> dt.date | None:
        """The last event date any sync has read, finished or not."""
        days = [d for d in (self.synced_through, self.partial_through) if d is not None]
        return max(days, default=None)

    def coverage(self) -> list[tuple[dt.date, int]]:
        """Ascending (through_day, watermark_ms) pairs for `windows.plan_segments`: the history's
        ranges, then the recent days'."""
        pairs = list(self.history)
        for through, watermark in self._recent_coverage():
            if not pairs or through > pairs[-1][0]:
                pairs.append((through, watermark))
        return pairs

    def _recent_coverage(self) -> list[tuple[dt.date, int]]:
        pairs: list[tuple[dt.date, int]] = []
        if self.partial_through is not None and self.partial_watermark_ms is not None:
            pairs.append((self.partial_through, self.partial_watermark_ms))
        if self.synced_through is not None and self.watermark_ms is not None:
            if not pairs or self.synced_through > pairs[0][0]:
                pairs.append((self.synced_through, self.watermark_ms))
        return pairs

    def progressed(self, through: dt.date, watermark_ms: int) -> ExportState:
        """The state after this sync has finished every window up to `through`.

        A resumed sync that has not yet caught up with the part it resumes keeps that part's reach
        (with the lower of the two watermarks), so a second interruption re-reads nothing whole.
        """
        if self.partial_through is not None and self.partial_watermark_ms is not None:
            if self.partial_through >= through:
                through = self.partial_through
                watermark_ms = min(watermark_ms, self.partial_watermark_ms)
        return replace(self, partial_through=through, partial_watermark_ms=watermark_ms)

    def completed(self, through: dt.date, watermark_ms: int) -> ExportState:
        """The state after this sync has finished all its windows, up to `through`.

        When an earlier sync reached further (end_date moved back), the days past `through` keep
        the older watermark they were read with: this sync's watermark would claim events it
        never asked for.
        """
        reached = self.reached()
        done = replace(self, partial_through=through, partial_watermark_ms=watermark_ms)
        if reached is None or through >= reached:
            return replace(self, synced_through=through, watermark_ms=watermark_ms,
                           partial_through=None, partial_watermark_ms=None)
        if self.synced_through is not None and self.synced_through >= reached:
            return done
        return replace(done, synced_through=self.partial_through, watermark_ms=self.partial_watermark_ms)

    def with_history(self, start_day: dt.date, first: dt.date) -> ExportState:
        """This state with a history, for a state that keeps none yet (`first`: the sync's first day).

        A new state's history starts at start_day, and so does that of a state that has read nothing
        (its history can only hold days never read: `recent_first` plans them anew). A version-2 state's
        synced days before `first` count as checked at its watermark (the oldest, if it has two); the
        official connector's state has no watermark, so its days before `first` are not in the history
        (not swept).
        """
        if self.reached() is None:
            return replace(self, history_from=start_day, history=())
        if self.history_from is not None:
            return self
        marks = [mark for _, mark in self._recent_coverage()]
        if marks and first <= start_day:
            return replace(self, history_from=start_day)
        if not marks:
            return replace(self, history_from=first)
        return replace(self, history_from=start_day, history=((first - ONE_DAY, min(marks)),))

    def recent_first(self, start_day: dt.date, end: dt.date, days: int) -> ExportState:
        """This state, when it has read nothing yet (a first sync, a reset) and `start_day..end` spans
        more than `days` days, with the days before the last `days` in the history as never read
        (checked at 0): the sync reads the last `days` first, then those newest first (the backfill,
        sweep.unread_spans), each window then checked at the sync's watermark. A state that has read
        nothing promises nothing, so its history may hold such days (see `_history`)."""
        if days <= 0 or self.reached() is not None or (end - start_day).days < days:
            return self
        return replace(self, history_from=start_day, history=((end - dt.timedelta(days=days), 0),))

    def extended(self, start_day: dt.date) -> ExportState:
        """This state with the days from a `start_day` before its history's first day added to the
        history as never read, while it still holds days never read (a backfill under way), so the
        backfill goes on to the new start_date. Once every day has been read, an earlier start_date
        changes nothing, as before the backfill existed (reset the stream to read those days)."""
        first = self.history_from
        if first is None or start_day >= first or all(mark_ms for _, mark_ms in self.history):
            return self
        history = self.history if self.history[0][1] == 0 else ((first - ONE_DAY, 0), *self.history)
        return replace(self, history_from=start_day, history=tuple(history))

    def unread_days(self, days: tuple[dt.date, dt.date]) -> int:
        """How many days within `days` (both included) were never read: the backfill left."""
        if self.history_from is None:
            return 0
        return sum((b - a).days + 1 for a, b in unread_spans(self.history_from, self.history, days))

    def folded(self, limit: dt.date) -> ExportState:
        """This state with the recent days before `limit` moved to the history, each range with the
        watermark the recent part covering it has (see sweep.fold_limit for where `limit` falls)."""
        cursor = self.recent_from()
        if cursor is None or limit <= cursor:
            return self
        history = list(self.history)
        for through, watermark in self._recent_coverage():
            last = min(through, limit - ONE_DAY)
            if last < cursor:
                continue
            if history and history[-1][1] == watermark:
                history[-1] = (last, watermark)
            else:
                history.append((last, watermark))
            cursor = last + ONE_DAY
        if cursor < limit:  # days no recent part covers were never read (start_date moved past them):
            history.append((limit - ONE_DAY, 0))  # checked at 0, so that a sweep would read them whole
        return replace(self, history=tuple(history))

    def settled(self, config: Config) -> ExportState:
        """This state with the recent days that the next sync need not re-read moved to the history
        (whole blocks of them, see sweep.py): after a sync, and before one (a killed sync left them)."""
        recent_start = self.recent_start(config.attribution_window, config.request_timezone)
        reached = self.reached()
        if recent_start is None or reached is None:
            return self
        return self.folded(fold_limit(recent_start, reached, _block(config)))

    def history_days(self, start_day: dt.date) -> int:
        """How many days of history the sweep checks (those from `start_day` on)."""
        return history_days(self.history_from, self.history, start_day) if self.history_from else 0

    def sized(self, events_per_day: float | None) -> ExportState:
        """This state with the volume the sync measured (kept as it was when the sync measured none)."""
        if events_per_day is None:
            return self
        return replace(self, events_per_day=min(math.ceil(events_per_day), MAX_EVENTS_PER_DAY))

    def checked(self, first: dt.date, last: dt.date, watermark_ms: int) -> ExportState:
        """The state after the history days `first..last` were read again, each for the events
        processed after the watermark its range had, up to `watermark_ms` (a sweep window, or history
        days a sync re-read because its attribution window reaches them)."""
        recent_from = self.recent_from()
        if self.history_from is None or recent_from is None:
            return self
        last = min(last, recent_from - ONE_DAY)
        if last < max(first, self.history_from):
            return self
        history = mark(self.history_from, self.history, first, last, watermark_ms)
        return replace(self, history=tuple(history))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with readable copies of the millisecond watermarks."""
        out: dict[str, Any] = {"version": STATE_VERSION}
        if self.synced_through is not None:
            out["synced_through"] = self.synced_through.isoformat()
        if self.watermark_ms is not None:
            out["watermark_ms"] = self.watermark_ms
            out["watermark"] = _readable(self.watermark_ms)
        if self.partial_through is not None and self.partial_watermark_ms is not None:
            out["in_progress"] = {
                "through": self.partial_through.isoformat(),
                "watermark_ms": self.partial_watermark_ms,
                "watermark": _readable(self.partial_watermark_ms),
            }
        if self.history_from is not None:
            out["history"] = {
                "from": self.history_from.isoformat(),
                "checked": [
                    {"through": through.isoformat(), "watermark_ms": mark_ms, "watermark": _readable(mark_ms)}
                    for through, mark_ms in self.history
                ],
            }
        if self.events_per_day is not None:
            out["events_per_day"] = self.events_per_day
        if self.binding is not None:
            out["binding"] = self.binding.to_dict()
        return out


def bind(state: ExportState, config: Config) -> ExportState:
    """The state bound to the config's project, or a config error when it was read for another one.

    Airbyte keeps a connection's state when its source settings are edited: a state of project A used
    for project B would take B's days as read and skip their events, every sync, exit 0.
    """
    now = Binding.of(config)
    was = state.binding
    if was is not None:
        if was.region != now.region:
            raise _changed("region", was.region, now.region)
        if was.project_id is not None and now.project_id is not None and was.project_id != now.project_id:
            raise _changed("credentials.project_id", was.project_id, now.project_id)
        if was.day_zone != now.day_zone:
            raise _changed("project_timezone / legacy_local_time (the zone days are read in)", was.day_zone,
                           now.day_zone)
    if was is not None and was.project_id is not None and now.project_id is None:
        now = replace(now, project_id=was.project_id)  # a project secret without project_id: keep what was known
    return replace(state, binding=now)


def _changed(field: str, was: Any, now: Any) -> Exception:
    return StateRefused(
        f"was written for {field} {was!r}, and the config now says {now!r}. "
        "Its days would count as read for the new setting and their events would be skipped. Reset the "
        f"stream's state to sync from start_date with the new setting, or set {field} back to {was!r}."
    )


@dataclass(frozen=True)
class SyncPlan:
    """What one sync reads: event dates `first..end` (in the request timezone), as segments, then the
    backfill's days (history never read, read whole and newest first), then the history sweep's
    windows; `state` is the state it starts from, with its history."""

    first: dt.date
    end: dt.date
    segments: list[Segment]
    backfill: list[Segment]
    sweep: list[Window]
    state: ExportState


def sync_plan(config: Config, state: ExportState, today: dt.date) -> SyncPlan:
    """The days a sync reads: from the config's start or where the state says late events may still
    arrive, up to end_date or Mixpanel's today, whichever comes first; with recent_first_days, the
    history days never read (the backfill); and the history it sweeps."""
    end = min(config.end_day or today, today)
    start, attribution, timezone = config.start_day(), config.attribution_window, config.request_timezone
    state = state.with_history(start, state.first_day(start, attribution, timezone)).settled(config)
    recent = config.recent_first_days
    if recent:
        state = state.recent_first(start, end, recent).extended(start)
    first = state.first_day(start, attribution, timezone)
    state = state.folded(first)  # days before `first` are not re-read: the history holds them
    segments = plan_segments(first, end, state.coverage()) if first <= end else []
    backfill: list[Segment] = []
    sweep: list[Window] = []
    if state.history_from is not None:
        if recent:  # the days before `first`: the fresh segments read whole those after it
            unread = unread_spans(state.history_from, state.history, (start, min(end, first - ONE_DAY)))
            backfill = [Segment(a, b) for a, b in unread]
        # not the days from `first` on: the fresh segments re-read them (history days too, when they reach
        # into it), and the same sync must not deliver their late arrivals twice
        days, count = (start, min(end, first - ONE_DAY)), config.history_sweep_requests
        # a legacy project's `$time` is its local clock shifted, so where its days begin on `$time` is not
        # known for sure: there, a sweep window keeps to one range (api.arrivals_clause)
        ranges = 1 if config.legacy_local_time else MAX_RANGES_PER_WINDOW
        sweep = sweep_windows(
            state.history_from, state.history, days, _block(config), count, unread=not recent, ranges=ranges
        )
    return SyncPlan(first, end, segments, backfill, sweep, state)


class PlanView(Protocol):
    """What a checkpoint needs of the sync's plan (plan.Plan)."""

    first: dt.date
    end: dt.date

    def fresh_done(self) -> bool:
        """Whether every fresh window has been read."""

    def rate(self) -> float | None:
        """The whole days' volume measured so far."""


class Checkpoints:
    """What each finished window means for the state, and which states to write: the read's one author
    of checkpoints. A STATE covers only windows whose records were emitted before it.

    Incremental: after a window that finishes its days, the state says the sync has read up to its
    last day (`progressed`), and history days among them (an attribution window longer than the recent
    days re-reads them) count as checked; once every fresh window is read, that the sync is complete up
    to its end (`completed`); after a sweep or backfill window, that its days were checked at the
    sync's watermark (a backfill window read them whole, so they are no longer "never read"). The
    watermark is the lowest any window of the sync had, and every day the sync checked is marked at it
    (`_replay`). Full refresh: a STATE without a cursor after each window that finishes its days.
    """

    def __init__(self, state: ExportState, incremental: bool, config: Config, plan: PlanView) -> None:
        self.state = state
        self._start = state
        self._steps: list[Window | None] = []  # the windows that ended days, None where the fresh ones were done
        self._incremental = incremental
        self._config = config
        self._plan = plan
        self._watermark: int | None = None
        self._completed = False
        self._written: dict[str, Any] | None = None

    def after(self, window: Window, server_time_ms: int) -> list[dict[str, Any]]:
        """The states to write once `window`'s records are emitted (Mixpanel had its request by `server_time_ms`)."""
        lowered = self._watermark is not None and server_time_ms < self._watermark
        if self._watermark is None or lowered:
            self._watermark = server_time_ms
        if not self._incremental:
            return [{NO_CURSOR_MARKER: True}] if window.ends_day else []
        if lowered:
            self._replay()
        if not window.ends_day:
            return []
        if not window.fresh:  # the sweep's or the backfill's days: checked now, after the fresh ones
            self._complete()
        self._step(window)
        if window.fresh and self._plan.fresh_done():
            self._complete()
        return [self._write()]

    def final(self) -> list[dict[str, Any]]:
        """The states to write when every window is read: the last one, unless it was written already."""
        if not self._incremental:
            return [{NO_CURSOR_MARKER: True}] if self._watermark is None else []
        self._complete()
        return [self._write()] if self.state.to_dict() != self._written else []

    def _complete(self) -> None:
        """The state once every fresh window is read (done once)."""
        plan = self._plan
        if self._completed or self._watermark is None or plan.end < plan.first:
            return
        self._completed = True
        self._step(None)

    def _step(self, step: Window | None) -> None:
        self._steps.append(step)
        self.state = self._apply(self.state, step)

    def _replay(self) -> None:
        """The state at a watermark lower than the sync had: a later window can be stamped a few ms before
        an earlier one (round trips differ). Every day the sync checked is marked at the one watermark, so
        the history keeps one range per sync, whole blocks for the sweep (sweep.py); lowering a mark only
        re-reads more. At most once a window, over the sync's windows: cheap beside a request."""
        state = self._start
        for step in self._steps:
            state = self._apply(state, step)
        self.state = state

    def _apply(self, state: ExportState, step: Window | None) -> ExportState:
        """`state` once `step`'s records are out, at the sync's watermark (`step` None: every fresh window)."""
        plan, watermark = self._plan, self._watermark
        assert watermark is not None  # set by the first window, before any step
        if step is None:
            # History days an attribution window longer than the recent days made the sync re-read are
            # checked anew, so that the next sync does not ask for their late arrivals again.
            state = state.checked(plan.first, plan.end, watermark)
            return state.completed(plan.end, watermark).settled(self._config).sized(plan.rate())
        if not step.fresh:  # a sweep or backfill window
            return state.checked(step.first_day, step.last_day, watermark)
        state = state.progressed(step.last_day, watermark)
        # the history days among them (an attribution window longer than the recent days re-reads them,
        # whole if never read) count as checked now, so that a resumed sync does not read them again
        state = state.checked(step.first_day, step.last_day, watermark)
        return state.sized(plan.rate())

    def _write(self) -> dict[str, Any]:
        self._written = self.state.to_dict()
        return self._written


def _block(config: Config) -> int:
    return block_days(config.date_window_size, config.attribution_window)


def is_no_state(raw: Any) -> bool:
    """Whether a stream's saved state says there is none: absent, `{}`, or the marker a full refresh leaves,
    alone (with other keys it is no state this connector wrote, and is refused like any other)."""
    return raw is None or raw == {} or (isinstance(raw, Mapping) and set(raw) == {NO_CURSOR_MARKER})


def parse_state(raw: Any, now: dt.datetime | None = None, timezone: str = "UTC") -> ExportState:
    """Read a stream state: ours, the official connector's `{"time": ...}`, or none at all.

    `now` (default: clock.utc_now) is the present the state must not lie after, and `timezone` the one
    its days are dates of: a state dated in the future would make this and every later sync skip every
    new event, exit 0. What lies a little ahead is brought back to now (see `notes`).
    """
    if is_no_state(raw):
        return ExportState()
    if not isinstance(raw, Mapping):
        raise _bad(f"it is a {type(raw).__name__}, not a JSON object")
    present = _Present.at(now, timezone)
    if "version" not in raw:
        return replace(_migrate(raw, present), notes=tuple(present.notes))
    version = raw.get("version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise _bad(f"version {_shown(version)} is not one this connector reads {READ_VERSIONS}")
    known = {"version", "synced_through", "watermark_ms", "watermark", "in_progress"}
    unknown = set(raw) - (known | {"history", "events_per_day", "binding"} if version == STATE_VERSION else known)
    if unknown:
        raise _bad(f"unknown keys {_shown(sorted(map(str, unknown)))}")
    partial = raw.get("in_progress")
    if partial is not None and not isinstance(partial, Mapping):
        raise _bad("'in_progress' must be an object")
    partial = partial or {}
    state = ExportState(
        synced_through=present.day(raw.get("synced_through"), "synced_through"),
        watermark_ms=present.millis(raw.get("watermark_ms"), "watermark_ms"),
        partial_through=present.day(partial.get("through"), "in_progress.through"),
        partial_watermark_ms=present.millis(partial.get("watermark_ms"), "in_progress.watermark_ms"),
    )
    if state.watermark_ms is not None and state.synced_through is None:
        raise _bad("'watermark_ms' is given without 'synced_through'")
    if (state.partial_through is None) != (state.partial_watermark_ms is None):
        raise _bad("'in_progress' needs both 'through' and 'watermark_ms'")
    if raw.get("history") is not None:
        history_from, history = _history(raw["history"], present, state.reached())
        state = replace(state, history_from=history_from, history=history)
    return replace(state, events_per_day=_events_per_day(raw.get("events_per_day")),
                   binding=_binding(raw.get("binding")), notes=tuple(present.notes))


def _binding(value: Any) -> Binding | None:
    """The `binding` part: the region, day zone and (when known) project a state was read for."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"region", "project_id", "day_zone"}:
        raise _bad("'binding' must be an object with 'region', 'day_zone' and, optionally, 'project_id'")
    region, zone, project = value.get("region"), value.get("day_zone"), value.get("project_id")
    if not isinstance(region, str) or not isinstance(zone, str):
        raise _bad("'binding' needs a 'region' and a 'day_zone' (strings)")
    if project is not None and (isinstance(project, bool) or not isinstance(project, int)):
        raise _bad(f"'binding.project_id' must be a whole number, got {_shown(project)}")
    return Binding(region, project, zone)


def _events_per_day(value: Any) -> int | None:
    """A whole number of events a day, from 0 to MAX_EVENTS_PER_DAY (sized() writes no more). Whatever
    it says plans one day in windows.KNOWN_RATE_PIECES pieces at most before a window read replaces it."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EVENTS_PER_DAY:
        raise _bad(f"'events_per_day' must be a whole number from 0 to {MAX_EVENTS_PER_DAY}, got {_shown(value)}")
    return value


def _history(raw: Any, present: _Present, reached: dt.date | None) -> tuple[dt.date, tuple[Checked, ...]]:
    """The history part: a first day and ascending ranges, none past the days the state has read (in a
    state that has read nothing: only days never read)."""
    if not isinstance(raw, Mapping) or set(raw) - {"from", "checked"}:
        raise _bad("'history' must be an object with 'from' and 'checked'")
    first = present.day(raw.get("from"), "history.from")
    checked = raw.get("checked")
    if first is None or not isinstance(checked, list):
        raise _bad("'history' needs a 'from' date and a 'checked' list")
    if len(checked) > MAX_HISTORY_RANGES:
        raise _bad(f"'history.checked' holds {len(checked)} ranges (at most {MAX_HISTORY_RANGES})")
    ranges: list[Checked] = []
    previous = first - ONE_DAY
    for index, item in enumerate(checked):
        key = f"history.checked[{index}]"
        if not isinstance(item, Mapping) or set(item) - {"through", "watermark_ms", "watermark"}:
            raise _bad(f"'{key}' must be an object with 'through' and 'watermark_ms'")
        through = present.day(item.get("through"), f"{key}.through")
        watermark = present.millis(item.get("watermark_ms"), f"{key}.watermark_ms")
        if through is None or watermark is None:
            raise _bad(f"'{key}' needs both 'through' and 'watermark_ms'")
        if through <= previous and previous == present.today:  # brought back to today: the
            break  # ranges after it covered days that have not come yet
        if through <= previous:
            raise _bad(f"'{key}.through' {through} does not come after the day before it ({previous})")
        ranges.append((through, watermark))
        previous = through
    if reached is None:  # it may hold days never read (checked at 0: ExportState.recent_first) only
        past = [through for through, mark_ms in ranges if mark_ms]
    else:
        past = [through for through, _ in ranges if through > reached]
    if past:
        raise _bad(f"'history' reaches {ranges[-1][0]}, past the days this state has read ({reached})")
    return first, tuple(ranges)


def state_file_entries(content: Any) -> list[Any]:
    """The per-stream state entries of a `--state` file, in each form a person may have saved.

    The CDK reads only a list of state entries (`[{"type": "STREAM", "stream": {...}}]`). A person
    who keeps the last STATE line of a sync's output has a whole message
    (`{"type": "STATE", "state": {...}}`), a list of such messages, or just its `state` object; each
    is accepted here. In a list of STATE messages a later one for a stream replaces an earlier one,
    as in the output they came from. Other shapes are passed on as they are, for the CDK's parser
    to refuse.
    """
    if not content:
        return []
    items = content if isinstance(content, list) else [content]
    entries: list[tuple[str | None, Any]] = []
    for item in items:
        if isinstance(item, dict) and item.get("type") == "STATE" and isinstance(item.get("state"), dict):
            inner = item["state"]
            entries.append((_stream_name(inner), inner))
        else:
            entries.append((None, item))
    last = {name: index for index, (name, _) in enumerate(entries) if name is not None}
    return [entry for index, (name, entry) in enumerate(entries) if name is None or last[name] == index]


def _stream_name(entry: dict[str, Any]) -> str | None:
    """The stream a STREAM state entry is for (None when it names none)."""
    stream = entry.get("stream")
    descriptor = stream.get("stream_descriptor") if isinstance(stream, dict) else None
    name = descriptor.get("name") if isinstance(descriptor, dict) else None
    return name if isinstance(name, str) else None


def stream_state_of(state_messages: Sequence[AirbyteStateMessage] | None, name: str) -> Any:
    """The raw stream_state of stream `name` from the --state messages (None when there is none).

    This connector only ever writes per-stream STATE messages. A GLOBAL or LEGACY state, or several
    entries for `name`, came from somewhere else; guessing which part to trust could lose data, so
    each is a config error that names the stream and says to reset. Entries for other streams are
    ignored. A namespace is ignored: the source declares none, and writes its records and states
    without one, so a catalog that sets one must still find the state it wrote.
    """
    found: list[Any] = []
    for message in state_messages or ():
        kind = getattr(getattr(message, "type", None), "value", getattr(message, "type", None))
        if kind not in (None, "STREAM"):
            problem = f"it is a {kind} state; this connector keeps one per-stream (STREAM) state for {name!r}"
            raise _bad(problem).named(name)
        stream = getattr(message, "stream", None)
        if stream is None:
            raise _bad("a STREAM state message has no 'stream'").named(name)
        descriptor = stream.stream_descriptor
        if descriptor.name == name:
            found.append(stream.stream_state)
    if len(found) > 1:
        raise _bad(f"it holds {len(found)} entries for stream {name!r} (one is expected)").named(name)
    if not found or found[0] is None:
        return None
    blob = found[0]
    return dict(blob.__dict__) if hasattr(blob, "__dict__") else blob


@dataclass
class _Present:
    """Now and today (in the state's day zone), and what reading a state brought back to them.

    A date ahead of today is brought back to today, and a watermark ahead of now to an hour before
    now (the clock that wrote it was up to that much ahead), with a note to log: re-reading is
    harmless, skipping is not. One further ahead than a clock a little off explains (DATE_SKEW,
    WATERMARK_SKEW_MS) is refused: the state is not one this connector wrote for this project.
    """

    now_ms: int
    today: dt.date
    notes: list[str] = field(default_factory=list)

    @classmethod
    def at(cls, now: dt.datetime | None, timezone: str = "UTC") -> _Present:
        moment = (now or clock.utc_now()).astimezone(dt.UTC)
        return cls(int(moment.timestamp() * 1000), pendulum.instance(moment).in_timezone(timezone).date())

    def day(self, value: Any, key: str) -> dt.date | None:
        """A YYYY-MM-DD date from Mixpanel's launch to today."""
        if value is None:
            return None
        try:
            day = dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            raise _bad(f"'{key}' must be a YYYY-MM-DD date, got {_shown(value)}") from None
        return self.check_day(day, key, value)

    def check_day(self, day: dt.date, key: str, value: Any) -> dt.date:
        if day < FIRST_DATE:
            raise _bad(f"'{key}' {_shown(value)} is before {FIRST_DATE}, when Mixpanel did not exist yet")
        if day > self.today + DATE_SKEW:
            raise _bad(
                f"'{key}' {_shown(value)} lies in the future (today is {self.today}): syncing from it "
                "would skip every event until then. It was written by a clock set ahead"
            )
        if day > self.today:
            self.notes.append(f"The state's {key} {value} lies after today ({self.today}); read as {self.today}.")
            return self.today
        return day

    def millis(self, value: Any, key: str) -> int | None:
        """Epoch milliseconds, at most now."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _bad(f"'{key}' must be epoch milliseconds (a whole number), got {_shown(value)}")
        if value > self.now_ms + WATERMARK_SKEW_MS:
            raise _bad(
                f"'{key}' {_shown(value)} lies in the future (now is {_readable(self.now_ms)}): the next syncs "
                "would skip every event processed until then. It was written by a clock set ahead"
            )
        if value > self.now_ms:  # the clock that wrote it was ahead, by up to the allowance
            earlier = self.now_ms - WATERMARK_SKEW_MS
            self.notes.append(
                f"The state's {key} {_readable(value)} lies after now ({_readable(self.now_ms)}): it was written "
                f"by a clock set ahead. Read as {_readable(earlier)}, an hour before now, so that nothing "
                "processed since that clock's true time is skipped."
            )
            return earlier
        return value


def _migrate(raw: Mapping[str, Any], present: _Present) -> ExportState:
    """The official connector keeps the latest event time it saw; trust only the day before it.

    Its cursor is the maximum `time` of an unordered stream, so any day up to it may be incomplete:
    the attribution window before it is read again whole (duplicates possible, no loss). That time
    comes from devices' clocks, so it can lie in the future: a day ahead is read as today, further is refused.
    """
    value = raw.get("time", raw.get("date"))
    if isinstance(value, bool) or not isinstance(value, str | int | float) or len(raw) != 1:
        keys = _shown(sorted(map(str, raw)))
        raise _bad(f"keys {keys} are neither this connector's state nor the official {{'time': ...}}")
    try:
        if isinstance(value, str):
            moment = pendulum.parse(value, tz="UTC")
            day = moment.date()  # type: ignore[union-attr]
        else:
            if not math.isfinite(value) or abs(value) > 10**15:
                raise ValueError(value)
            seconds = value / 1000 if value > 10**11 else value
            day = dt.datetime.fromtimestamp(seconds, dt.UTC).date()
    except Exception:
        raise _bad(f"'time' {_shown(value)} is not a date or timestamp") from None
    day = present.check_day(day, "time", value)
    return ExportState(synced_through=day, migrated_from=f"official state time={value}")


def day_of(epoch_ms: int, timezone: str) -> dt.date:
    """The calendar date of an instant in the timezone Mixpanel reads dates in."""
    return pendulum.from_timestamp(epoch_ms / 1000, tz=timezone).date()


def _readable(epoch_ms: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message, cut short (a state can hold a 4,000-digit number)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return "a number of more than 60 digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _bad(problem: str) -> StateRefused:
    return StateRefused(f"cannot be used: {problem}. Reset the stream's state (or fix the state file) to sync again.")


class StateRefused(AirbyteTracedException):
    """A saved state this connector will not use: a config error in words that name no stream. The
    source, which knows whose state it read, raises `named(stream)` in its place."""

    def __init__(self, rest: str) -> None:
        self.rest = rest
        message = f"The saved state {rest}"
        super().__init__(internal_message=message, message=message, failure_type=FailureType.config_error)

    def named(self, stream: str) -> AirbyteTracedException:
        """The same config error, saying which stream's state it was."""
        return config_error(f"The saved state of stream {stream!r} {self.rest}")
