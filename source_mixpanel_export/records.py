"""Record building: one exported event in, one typed, lossless Airbyte record out.

This runs once per event, so it avoids per-record date parsing libraries: times are formatted from
integer milliseconds with a per-minute cache, and legacy offsets are cached per quarter hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

import orjson
import pendulum

STREAM_NAME = "export"
PRIMARY_KEY = [["event_id"]]
CURSOR_FIELD = ["time"]
# Properties that identity merges rewrite: they must not feed the id of an event without $insert_id.
IDENTITY_PROPERTIES = frozenset({"distinct_id", "$user_id", "$distinct_id_before_identity"})

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": True,
    "required": ["event_id", "event", "properties"],
    "properties": {
        "event_id": {
            "type": "string",
            "description": "Stable id of the event: a hash of event name, raw time and $insert_id "
            "(without $insert_id: of the properties that identity merges do not change).",
        },
        "event": {"type": "string", "description": "Event name."},
        "time": {
            "type": ["null", "string"],
            "format": "date-time",
            "airbyte_type": "timestamp_with_timezone",
            "description": "When the event happened, true UTC, millisecond precision.",
        },
        "distinct_id": {
            "type": ["null", "string"],
            "description": "The user's canonical id at export time (changes after identity merges).",
        },
        "insert_id": {"type": ["null", "string"], "description": "The event's $insert_id, if any."},
        "mp_processing_time_ms": {
            "type": ["null", "integer"],
            "description": "When Mixpanel processed the event, UTC epoch milliseconds.",
        },
        "properties": {
            "type": "object",
            "additionalProperties": True,
            "description": "All of the event's properties, with their original names and JSON types.",
        },
    },
}


class BadEvent(ValueError):
    """A line that is JSON but not an event object."""


class IsoTime:
    """Formats UTC epoch milliseconds as ISO-8601 with a per-minute prefix cache (pure, fast)."""

    def __init__(self) -> None:
        self._prefixes: dict[int, str] = {}

    def __call__(self, epoch_ms: int) -> str:
        minute, rest = divmod(epoch_ms, 60_000)
        prefix = self._prefixes.get(minute)
        if prefix is None:
            if len(self._prefixes) > 200_000:
                self._prefixes.clear()
            moment = dt.datetime(1970, 1, 1) + dt.timedelta(minutes=minute)
            prefix = self._prefixes[minute] = moment.strftime("%Y-%m-%dT%H:%M:")
        seconds, millis = divmod(rest, 1000)
        return f"{prefix}{seconds:02d}.{millis:03d}Z"


class LegacyClock:
    """Turns a legacy project's local wall time (written as if UTC) back into true UTC.

    The offset is the one in force at that local time. In the hour that repeats when daylight saving
    ends, the wall time is ambiguous and the first occurrence (still daylight time, fold=0) is taken;
    a wall time inside the skipped spring hour cannot come from a real event and gets the offset before
    the change. Offsets are cached per quarter hour of wall time: every zone changes on such a boundary.
    """

    _BUCKET_MS = 15 * 60_000

    def __init__(self, timezone: str) -> None:
        self._zone = pendulum.timezone(timezone)
        self._offsets: dict[int, int] = {}

    def to_utc_ms(self, wall_ms: int) -> int:
        """True UTC epoch ms of a local wall time given as epoch ms."""
        bucket = wall_ms // self._BUCKET_MS
        offset = self._offsets.get(bucket)
        if offset is None:
            wall = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=bucket * self._BUCKET_MS)
            delta = wall.replace(tzinfo=self._zone, fold=0).utcoffset() or dt.timedelta(0)
            offset = self._offsets[bucket] = int(delta.total_seconds() * 1000)
        return wall_ms - offset


def event_id(name: str, raw_time: Any, insert_id: Any, properties: dict[str, Any]) -> str:
    """An id that survives a re-export: Mixpanel's dedupe key less `distinct_id`, which merges change."""
    if insert_id is not None:
        key = f"{name}\x1f{raw_time}\x1f{insert_id}".encode()
    else:
        stable = {k: v for k, v in properties.items() if k not in IDENTITY_PROPERTIES}
        key = f"{name}\x1f{raw_time}\x1f".encode() + dumps(stable, sort_keys=True)
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def make_builder(legacy_timezone: str | None = None) -> Callable[[Any], dict[str, Any]]:
    """A function from a parsed export line to a record; raises BadEvent for non-event JSON."""
    iso = IsoTime()
    to_utc = LegacyClock(legacy_timezone).to_utc_ms if legacy_timezone else None
    blake = hashlib.blake2b

    def build(event: Any) -> dict[str, Any]:
        if type(event) is not dict:
            raise BadEvent("a line is JSON but not an object")
        name = event.get("event")
        props = event.get("properties")
        if type(name) is not str or type(props) is not dict:
            raise BadEvent("an event lacks a string 'event' or an object 'properties'")
        raw_time = props.get("time")
        if type(raw_time) is int:
            time = iso(to_utc(raw_time) if to_utc else raw_time)
        elif type(raw_time) is float:
            time = iso(to_utc(int(raw_time)) if to_utc else int(raw_time))
        else:
            time = None
        insert_id = props.get("$insert_id")
        if insert_id is not None:
            if type(insert_id) is not str:
                insert_id = str(insert_id)
            eid = blake(f"{name}\x1f{raw_time}\x1f{insert_id}".encode(), digest_size=16).hexdigest()
        else:
            eid = event_id(name, raw_time, None, props)
        distinct_id = props.get("distinct_id")
        if distinct_id is not None and type(distinct_id) is not str:
            distinct_id = json.dumps(distinct_id) if isinstance(distinct_id, dict | list) else str(distinct_id)
        processed = props.get("mp_processing_time_ms")
        if processed is not None and type(processed) is not int:
            processed = _as_int(processed)
        return {
            "event_id": eid,
            "event": name,
            "time": time,
            "distinct_id": distinct_id,
            "insert_id": insert_id,
            "mp_processing_time_ms": processed,
            "properties": props,
        }

    return build


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def dumps(value: Any, sort_keys: bool = False) -> bytes:
    """JSON bytes of a value; integers beyond 64 bits (orjson refuses them) go through the stdlib."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
        return text.encode()
