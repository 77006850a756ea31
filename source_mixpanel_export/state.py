"""The incremental state: small, versioned, readable by a person, read and written only here.

What a state promises, with N the attribution window in days: every event dated on or before
`synced_through` that Mixpanel processed at or before `watermark_ms`, and at most N days after it
happened, has been emitted. `in_progress` says the same for the days up to its `through`, with
another watermark (a sync partway, or one whose end_date stopped short of `synced_through`).
Nothing per event is kept.

Why the next sync loses nothing within that promise: it re-reads, keeping only events processed
after the watermark of the part that covers them, every day from the watermark's date minus N days
(an event processed later and at most N days late cannot be older), and reads whole the days never
read. Its own watermark is at most the moment Mixpanel received its earliest request, so every event
processed by then was in the answers it emitted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pendulum

from .config import Config
from .errors import config_error
from .windows import Segment, plan_segments

STATE_VERSION = 2
NO_CURSOR_MARKER = "__ab_no_cursor_state_message"
ONE_DAY = dt.timedelta(days=1)
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class ExportState:
    """Where the last sync got to: see the module docstring for what it promises."""

    synced_through: dt.date | None = None
    watermark_ms: int | None = None
    partial_through: dt.date | None = None
    partial_watermark_ms: int | None = None
    migrated_from: str | None = None  # set when read from another connector's state

    def first_day(self, start_day: dt.date, attribution_days: int, timezone: str = "UTC") -> dt.date:
        """The first event date this sync reads: the earliest day an event up to N days late can miss.

        An event processed after the oldest watermark and at most `attribution_days` late happened
        after that watermark less N days. Days never read come after `reached` and are read whole.
        """
        reached = self.reached()
        if reached is None:
            return start_day
        candidates = [reached + ONE_DAY]
        marks = [mark for _, mark in self.coverage()]
        if marks:
            oldest = min(marks) - attribution_days * MS_PER_DAY
            candidates.append(day_of(oldest, timezone))
        if self.synced_through is not None and self.watermark_ms is None:  # migrated: no watermark
            candidates.append(self.synced_through - dt.timedelta(days=max(attribution_days, 1) - 1))
        return max(start_day, min(candidates))

    def reached(self) -> dt.date | None:
        """The last event date any sync has read, finished or not."""
        days = [d for d in (self.synced_through, self.partial_through) if d is not None]
        return max(days, default=None)

    def coverage(self) -> list[tuple[dt.date, int]]:
        """Ascending (through_day, watermark_ms) pairs for `windows.plan_segments`."""
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
        return ExportState(self.synced_through, self.watermark_ms, through, watermark_ms)

    def completed(self, through: dt.date, watermark_ms: int) -> ExportState:
        """The state after this sync has finished all its windows, up to `through`.

        When an earlier sync reached further (end_date moved back), the days past `through` keep
        the older watermark they were read with: this sync's watermark would claim events it
        never asked for.
        """
        reached = self.reached()
        if reached is None or through >= reached:
            return ExportState(through, watermark_ms)
        if self.synced_through is not None and self.synced_through >= reached:
            return ExportState(self.synced_through, self.watermark_ms, through, watermark_ms)
        return ExportState(self.partial_through, self.partial_watermark_ms, through, watermark_ms)

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
        return out


@dataclass(frozen=True)
class SyncPlan:
    """What one sync reads: event dates `first..end` (in the request timezone), as segments."""

    first: dt.date
    end: dt.date
    segments: list[Segment]


def sync_plan(config: Config, state: ExportState, today: dt.date) -> SyncPlan:
    """The days a sync reads: from the config's start or where the state says late events may still
    arrive, up to end_date or Mixpanel's today, whichever comes first."""
    end = min(config.end_day or today, today)
    first = state.first_day(config.start_day(), config.attribution_window, config.request_timezone)
    segments = plan_segments(first, end, state.coverage()) if first <= end else []
    return SyncPlan(first, end, segments)


def parse_state(raw: Any) -> ExportState:
    """Read a stream state: ours, the official connector's `{"time": ...}`, or none at all."""
    if raw is None or raw == {} or (isinstance(raw, Mapping) and raw.get(NO_CURSOR_MARKER)):
        return ExportState()
    if not isinstance(raw, Mapping):
        raise _bad(f"it is a {type(raw).__name__}, not a JSON object")
    if "version" not in raw:
        return _migrate(raw)
    if raw.get("version") != STATE_VERSION:
        raise _bad(f"version {raw.get('version')!r} is not one this connector writes ({STATE_VERSION})")
    unknown = set(raw) - {"version", "synced_through", "watermark_ms", "watermark", "in_progress"}
    if unknown:
        raise _bad(f"unknown keys {sorted(unknown)}")
    partial = raw.get("in_progress")
    if partial is not None and not isinstance(partial, Mapping):
        raise _bad("'in_progress' must be an object")
    partial = partial or {}
    state = ExportState(
        synced_through=_day(raw.get("synced_through"), "synced_through"),
        watermark_ms=_millis(raw.get("watermark_ms"), "watermark_ms"),
        partial_through=_day(partial.get("through"), "in_progress.through"),
        partial_watermark_ms=_millis(partial.get("watermark_ms"), "in_progress.watermark_ms"),
    )
    if state.watermark_ms is not None and state.synced_through is None:
        raise _bad("'watermark_ms' is given without 'synced_through'")
    if (state.partial_through is None) != (state.partial_watermark_ms is None):
        raise _bad("'in_progress' needs both 'through' and 'watermark_ms'")
    return state


def _migrate(raw: Mapping[str, Any]) -> ExportState:
    """The official connector keeps the latest event time it saw; trust only the day before it.

    Its cursor is the maximum `time` of an unordered stream, so any day up to it may be incomplete:
    the attribution window before it is read again whole (duplicates possible, no loss).
    """
    value = raw.get("time", raw.get("date"))
    if not isinstance(value, str | int | float) or len(raw) != 1:
        raise _bad(f"keys {sorted(raw)} are neither this connector's state nor the official {{'time': ...}}")
    try:
        if isinstance(value, str):
            moment = pendulum.parse(value, tz="UTC")
        else:
            moment = pendulum.from_timestamp(value / 1000 if value > 10**11 else value)
    except Exception:
        raise _bad(f"'time' {value!r} is not a date or timestamp") from None
    day = moment.date()  # type: ignore[union-attr]
    return ExportState(synced_through=day, migrated_from=f"official state time={value}")


def day_of(epoch_ms: int, timezone: str) -> dt.date:
    """The calendar date of an instant in the timezone Mixpanel reads dates in."""
    return pendulum.from_timestamp(epoch_ms / 1000, tz=timezone).date()


def _day(value: Any, key: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise _bad(f"'{key}' must be a YYYY-MM-DD date, got {value!r}") from None


def _millis(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"'{key}' must be epoch milliseconds (a whole number), got {value!r}")
    return value


def _readable(epoch_ms: int) -> str:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _bad(problem: str) -> Exception:
    return config_error(
        f"The saved state of stream 'export' cannot be used: {problem}. Reset the stream's state "
        "(or fix the state file) to sync again.",
    )
