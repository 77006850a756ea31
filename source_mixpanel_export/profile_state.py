"""The `profiles` stream's state: read, checked and written only here.

    {"version": 1,
     "watermark": "2024-06-01T11:00:00",            # the next changes walk reads $last_seen from here on
     "walk": {"kind": "pass", "from": "2023-01-01T00:00:00", "unseen_done": true,
              "span": 86400, "started": "2024-06-01T12:00:00"},   # a pass or changes walk under way
                                    # ("to": where its next range ends, when that range was narrowed;
                                    #  "span" is then the rest of the range found too large)
     "sweep": {"from": null, "unseen_done": false, "span": null,
               "started": "2024-06-01T12:00:00", "until": "2024-06-01T12:00:00"}}

Times are UTC, written as profiles write `$last_seen`. Every key but `version` may be left out: `{}` (or
no state) starts a full pass. A STATE is written after every range read whole, so a killed or stopped
sync resumes at the range it was reading, in either sync mode (a full refresh reads a pass under way to
its end, then starts none). A state is input like the config: one this connector could not have written
is refused with a config error naming the key, before any request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .profile_ranges import MAX_SPAN_SECONDS, Walk
from .profiles import mixpanel_time
from .state import StateRefused, is_no_state

STATE_VERSION = 1
FUTURE_ALLOWANCE_SECONDS = 86_400  # a clock a day ahead wrote it; further ahead, it is not our state
CLOCK_AHEAD_SECONDS = 3600  # a time ahead of now is read as this long before now: re-reading is harmless
_WALK_KINDS = ("pass", "changes")
_WALK_KEYS = {"kind", "from", "to", "unseen_done", "span", "started"}
_SWEEP_KEYS = {"from", "to", "unseen_done", "span", "started", "until"}


@dataclass(frozen=True)
class ProfileState:
    """Where the profiles stream stands: the watermark of the last complete pass or changes walk, the
    walk under way, and the sweep's progress (profile_ranges.Walk)."""

    watermark: int | None = None
    walk: Walk | None = None
    sweep: Walk | None = None

    def to_dict(self) -> dict[str, Any]:
        """The state as a STATE message holds it (see the module docstring)."""
        out: dict[str, Any] = {"version": STATE_VERSION}
        if self.watermark is not None:
            out["watermark"] = mixpanel_time(self.watermark)
        if self.walk is not None:
            out["walk"] = {"kind": self.walk.kind, **_progress(self.walk)}
        if self.sweep is not None:
            out["sweep"] = {**_progress(self.sweep), "until": mixpanel_time(self.sweep.end or 0)}
        return out


def _progress(walk: Walk) -> dict[str, Any]:
    narrowed = {"to": mixpanel_time(walk.to)} if walk.to is not None else {}
    return {
        "from": mixpanel_time(walk.cursor) if walk.cursor is not None else None,
        **narrowed,
        "unseen_done": walk.unseen_done,
        "span": walk.span,
        "started": mixpanel_time(walk.started),
    }


def parse_profile_state(raw: Any, now: int) -> ProfileState:
    """A saved state of the profiles stream, or StateRefused naming what is wrong; `now` is epoch seconds."""
    if is_no_state(raw):
        return ProfileState()
    if not isinstance(raw, Mapping):
        raise StateRefused(f"is a {type(raw).__name__}, not a JSON object")
    version = raw.get("version")
    if type(version) is not int or version != STATE_VERSION:
        raise StateRefused(f"has version {_shown(version)}; the profiles stream writes version {STATE_VERSION}")
    _no_unknown(raw, {"version", "watermark", "walk", "sweep"}, "")
    walk = sweep = None
    if raw.get("walk") is not None:
        entry = _object(raw["walk"], "walk", _WALK_KEYS)
        kind = entry.get("kind")
        if kind not in _WALK_KINDS:
            raise StateRefused(f"has 'walk.kind' {_shown(kind)}; it must be one of {', '.join(_WALK_KINDS)}")
        walk = _walk(entry, str(kind), "walk", now, end=None)
    if raw.get("sweep") is not None:
        entry = _object(raw["sweep"], "sweep", _SWEEP_KEYS)
        sweep = _walk(entry, "sweep", "sweep", now, end=_time(entry.get("until"), "sweep.until", now, needed=True))
    return ProfileState(_time(raw.get("watermark"), "watermark", now), walk, sweep)


def _walk(entry: Mapping[str, Any], kind: str, key: str, now: int, end: int | None) -> Walk:
    unseen_done = entry.get("unseen_done", False)
    if type(unseen_done) is not bool:
        raise StateRefused(f"has '{key}.unseen_done' {_shown(unseen_done)}; it must be true or false")
    span = entry.get("span")
    if span is not None and (type(span) is not int or not 1 <= span <= MAX_SPAN_SECONDS):
        raise StateRefused(f"has '{key}.span' {_shown(span)}; it must be whole seconds from 1 to {MAX_SPAN_SECONDS}")
    cursor = _time(entry.get("from"), f"{key}.from", now)
    to = _time(entry.get("to"), f"{key}.to", now)
    if to is not None and cursor is not None and to <= cursor:
        if str(entry.get("to")) <= str(entry.get("from")):  # as written (one format: text order is time order)
            raise StateRefused(f"has '{key}.to' {_shown(entry.get('to'))}, not after '{key}.from': no range ends there")
        to = None  # brought back from ahead of now to before `from`: the range as planned
    started = _time(entry.get("started"), f"{key}.started", now, needed=True)
    return Walk(kind, cursor, unseen_done, span, started or 0, end, to)


def _time(value: Any, key: str, now: int, needed: bool = False) -> int | None:
    """A time as profiles write it (UTC, to the second). One ahead of now (a clock set ahead wrote it) is read
    as an hour before now, so that nothing updated since that clock's true time is skipped; one further
    ahead than a day is refused."""
    if value is None:
        if needed:
            raise StateRefused(f"has no '{key}'")
        return None
    try:
        moment = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except (TypeError, ValueError):
        raise StateRefused(f"has '{key}' {_shown(value)}; it must be a time like 2024-06-01T12:00:00 (UTC)") from None
    seconds = int(moment.timestamp())
    if seconds > now + FUTURE_ALLOWANCE_SECONDS:
        raise StateRefused(
            f"has '{key}' {_shown(value)}, which lies in the future (now is {mixpanel_time(now)} UTC): reading "
            "from it would skip every profile updated until then. It was written by a clock set ahead"
        )
    return min(seconds, now - CLOCK_AHEAD_SECONDS) if seconds > now else seconds


def _object(value: Any, key: str, allowed: set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise StateRefused(f"has '{key}' {_shown(value)}; it must be an object")
    _no_unknown(value, allowed, f"{key}.")
    return value


def _no_unknown(value: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise StateRefused(f"has unknown keys {', '.join(repr(prefix + key) for key in unknown)}")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
