"""Records: one exported event in, one typed, lossless Airbyte record out, and the RECORD bytes of it.

This is the only place that builds a record and the only place of this connector that writes RECORD
message bytes (`record_lines`, used by writer.py; a caller of `SourceMixpanelExport.read` gets
AirbyteMessages, which the CDK serializes to the same JSON value). A record leaves out fields whose
value is None, as the CDK's serializer does (serpyco-rs, omit_none), so both give the same records.

This runs once per event, so it avoids per-record date parsing libraries: times are formatted from
integer milliseconds with a per-day cache and lookup tables, and legacy offsets are cached per quarter hour.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time as _time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pendulum

from .lines import exact_loads, iter_line_batches

_INT64_MIN, _UINT64_END = -(2**63), 2**64  # the integers orjson writes
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
        "user_id": {
            "type": ["null", "string"],
            "description": "The event's $user_id (Simplified ID Merge: the identified user), if any.",
        },
        "device_id": {
            "type": ["null", "string"],
            "description": "The event's $device_id (Simplified ID Merge: the anonymous device), if any.",
        },
        "insert_id": {
            "type": ["null", "string"],
            "description": "The event's $insert_id, if any (not an empty one); its JSON text if it is no string.",
        },
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


Build = Callable[[Any], "dict[str, Any] | None"]


@dataclass
class Tally:
    """What reading a window's lines found: records made, lines that are no JSON event, the first of those."""

    count: int = 0
    bad: int = 0
    first_bad: int | None = None  # 1-based line number within the window
    lines: int = 0  # lines read, blank and bad ones included

    def then(self, later: Tally) -> Tally:
        """This tally followed by the tally of the lines after it."""
        first = self.first_bad
        if first is None and later.first_bad is not None:
            first = self.lines + later.first_bad
        return Tally(self.count + later.count, self.bad + later.bad, first, self.lines + later.lines)


Records = list[dict[str, Any]]


@dataclass
class Batch:
    """The records of a batch of lines, and, when every line gave one record, the lines and their
    parsed events (for `record_bytes`, which takes the properties' bytes from the line).

    `stream` is the name of the stream the records belong to: the source sets it before the batch
    is written (the writer refuses a batch without one)."""

    records: Records
    events: list[Any] | None = None
    lines: list[bytes] | None = None
    stream: str | None = None

    def stream_name(self) -> str:
        """The stream the records belong to; a batch that names none must not be written (a bug)."""
        if self.stream is None:
            raise ValueError("a batch of records names no stream (Batch.stream): the source sets it")
        return self.stream


def window_records(chunks: Iterable[bytes], build: Build, tally: Tally) -> Iterator[Batch]:
    """The records of a body's lines, in order, a list per batch of lines (so that the layers above
    pass a few thousand records per step, not one); blank lines are skipped, bad ones counted in
    `tally` (complete once the generator is exhausted)."""
    for lines, exact in iter_line_batches(chunks):
        batch = records_of_lines(lines, exact, build, tally)
        if batch.records:
            yield batch


def records_of_lines(lines: list[bytes], exact: Sequence[int], build: Build, tally: Tally) -> Batch:
    """The records of one batch of lines from iter_line_batches, counted in `tally`; `exact` holds the
    positions of the lines that take the exact parser.

    A batch of plain events goes through one list comprehension (per run of lines between two exact
    ones); one that holds anything else (a blank or bad line, an event before the start time) is gone
    through again line by line.
    """
    try:
        events = _parse(lines, exact)
        records = [build(event) for event in events]
    except ValueError:  # not JSON, or JSON that is not an event (blank lines too)
        pass
    else:
        if None not in records:  # a builder with a start time gives None for an earlier event
            tally.lines += len(lines)
            tally.count += len(records)
            return Batch(records, events, lines)  # type: ignore[arg-type]
    return Batch(_records_line_by_line(lines, frozenset(exact), build, tally))


def _parse(lines: list[bytes], exact: Sequence[int]) -> list[Any]:
    """Every line parsed: orjson, but the stdlib's exact parser at the positions in `exact`."""
    loads = orjson.loads
    if not exact:
        return [loads(line) for line in lines]
    events: list[Any] = []
    start = 0
    for position in exact:
        events += [loads(line) for line in lines[start:position]]
        events.append(exact_loads(lines[position]))
        start = position + 1
    events += [loads(line) for line in lines[start:]]
    return events


def _records_line_by_line(lines: list[bytes], exact: frozenset[int], build: Build, tally: Tally) -> Records:
    records: Records = []
    position, first_bad = tally.lines, tally.first_bad
    for index, line in enumerate(lines):
        position += 1
        try:
            record = build(exact_loads(line) if index in exact else orjson.loads(line))
        except ValueError:
            if line.strip():
                tally.bad += 1
                first_bad = first_bad or position
            continue
        if record is not None:
            records.append(record)
    tally.lines, tally.first_bad = position, first_bad
    tally.count += len(records)
    return records


# Table lookups for the time of day: the date is cached per day, the rest is indexing, no formatting.
_EPOCH = dt.datetime(1970, 1, 1)
_CLOCK = tuple(f"{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))
_SECONDS = tuple(f"{second:02d}." for second in range(60))
_MILLIS = tuple(f"{milli:03d}Z" for milli in range(1000))


class IsoTime:
    """Formats UTC epoch milliseconds as ISO-8601 (pure, ~0.4 µs): a per-day date cache and lookups."""

    def __init__(self) -> None:
        self.dates: dict[int, str] = {}

    def __call__(self, epoch_ms: int) -> str:
        minute, rest = divmod(epoch_ms, 60_000)
        day, minute_of_day = divmod(minute, 1440)
        seconds, millis = divmod(rest, 1000)
        return (self.dates.get(day) or self.date(day)) + _CLOCK[minute_of_day] + _SECONDS[seconds] + _MILLIS[millis]

    def date(self, day: int) -> str:
        """`YYYY-MM-DDT` of a day since 1970-01-01, cached."""
        if len(self.dates) > 100_000:
            self.dates.clear()
        moment = _EPOCH + dt.timedelta(days=day)
        date = self.dates[day] = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"  # %Y does not pad
        return date


class LegacyClock:
    """Turns a legacy project's local wall time (written as if UTC) back into true UTC.

    The offset is the one in force at that local time. In the hour that repeats when daylight saving
    ends, the wall time is ambiguous and the first occurrence (still daylight time, fold=0) is taken,
    so an event of the second pass through that hour comes out one hour early; a wall time inside the
    skipped spring hour cannot come from a real event and gets the offset before the change. Offsets
    are cached per quarter hour of wall time: every zone changes on such a boundary.
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


# The blake2b personalization of the ids of events whose $insert_id is not a string: a hash function
# of its own, so that no string $insert_id (hashed without one) can give the same event_id.
_JSON_INSERT_ID = b"json $insert_id"


def event_id(name: str, raw_time: Any, insert_id: Any, properties: dict[str, Any]) -> str:
    """An id that survives a re-export: Mixpanel's dedupe key less `distinct_id`, which merges change.

    A string $insert_id is hashed as it always was (users dedupe on this id across versions); an
    empty one counts as missing (two events with "" are not one event); any other JSON value is
    hashed as its JSON text in a domain of its own (`12345` and `"12345"` are different ids).
    """
    if type(insert_id) is str and insert_id:
        key = f"{name}\x1f{raw_time}\x1f{insert_id}".encode()
    elif insert_id is None or insert_id == "":
        stable = {k: v for k, v in properties.items() if k not in IDENTITY_PROPERTIES}
        key = f"{name}\x1f{raw_time}\x1f".encode() + dumps(stable, sort_keys=True)
    else:
        return _json_insert_id(name, raw_time, insert_id)[1]
    return hashlib.blake2b(key, digest_size=16).hexdigest()


def _json_insert_id(name: str, raw_time: Any, insert_id: Any) -> tuple[str, str]:
    """The `insert_id` column and the event_id of an event whose $insert_id is JSON but no string: its
    compact JSON text (`12345`, `true`, `{"a":1}`; Python's text would be `True`, `{'a': 1}`), and that
    text hashed with the personalization _JSON_INSERT_ID."""
    text = dumps(insert_id)
    key = f"{name}\x1f{raw_time}\x1f".encode() + text
    return text.decode(), hashlib.blake2b(key, digest_size=16, person=_JSON_INSERT_ID).hexdigest()


def make_builder(legacy_timezone: str | None = None, not_before: str | None = None) -> Build:
    """A function from a parsed export line to a record; raises BadEvent for non-event JSON.

    With `not_before` (an ISO time as records write it), earlier events give None instead: the first
    window of a start_date with a time of day starts at midnight, before that time.
    """
    build = _builder(legacy_timezone)
    if not_before is None:
        return build

    def build_after_start(event: Any) -> dict[str, Any] | None:
        record = build(event)
        time_ = record.get("time")  # type: ignore[union-attr]
        return record if time_ is None or time_ >= not_before else None

    return build_after_start


def _builder(legacy_timezone: str | None) -> Build:
    iso = IsoTime()
    cached_date, date = iso.dates.get, iso.date
    clock, second_of, milli_of = _CLOCK, _SECONDS, _MILLIS
    to_utc = LegacyClock(legacy_timezone).to_utc_ms if legacy_timezone else None
    new_hash = hashlib.blake2b(digest_size=16).copy  # copying a set-up hash beats constructing one

    def build(event: Any) -> dict[str, Any]:
        if type(event) is not dict:
            raise BadEvent("a line is JSON but not an object")
        name = event.get("event")
        props = event.get("properties")
        if type(name) is not str or type(props) is not dict:
            raise BadEvent("an event lacks a string 'event' or an object 'properties'")
        get = props.get
        raw_time: Any = get("time")
        kind = type(raw_time)
        if kind is int or kind is float:  # IsoTime.__call__, inlined: it runs for every record
            try:
                epoch_ms = raw_time if kind is int else int(raw_time)
                if to_utc:
                    epoch_ms = to_utc(epoch_ms)
                minute, rest = divmod(epoch_ms, 60_000)
                day, minute_of_day = divmod(minute, 1440)
                seconds, millis = divmod(rest, 1000)
                time = (cached_date(day) or date(day)) + clock[minute_of_day] + second_of[seconds] + milli_of[millis]
            except (OverflowError, ValueError):  # beyond years 1-9999 (or inf/NaN): no time, the raw value stays
                time = None
        else:
            time = None
        insert_id = get("$insert_id")
        if type(insert_id) is str and insert_id:  # as event_id(), inlined: it runs for every record
            digest = new_hash()
            digest.update(f"{name}\x1f{raw_time}\x1f{insert_id}".encode())
            eid = digest.hexdigest()
        elif insert_id is None or insert_id == "":
            insert_id = None
            eid = event_id(name, raw_time, None, props)
        else:
            insert_id, eid = _json_insert_id(name, raw_time, insert_id)
        distinct_id = get("distinct_id")
        if distinct_id is not None and type(distinct_id) is not str:
            distinct_id = _as_text(distinct_id)
        user_id = get("$user_id")
        if user_id is not None and type(user_id) is not str:
            user_id = _as_text(user_id)
        device_id = get("$device_id")
        if device_id is not None and type(device_id) is not str:
            device_id = _as_text(device_id)
        processed = get("mp_processing_time_ms")
        if processed is not None and type(processed) is not int:
            processed = _as_int(processed)
        record: dict[str, Any] = {"event_id": eid, "event": name}
        if time is not None:
            record["time"] = time
        if distinct_id is not None:
            record["distinct_id"] = distinct_id
        if user_id is not None:
            record["user_id"] = user_id
        if device_id is not None:
            record["device_id"] = device_id
        if insert_id is not None:
            record["insert_id"] = insert_id
        if processed is not None:
            record["mp_processing_time_ms"] = processed
        record["properties"] = props
        return record

    return build


def _as_text(value: Any) -> str:
    """An id column's text for a value that is not a string: JSON for objects and lists (as warehouses
    would show them), Python's text for numbers and booleans (`12`, `True`), as distinct_id always was."""
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


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


# -- RECORD bytes ------------------------------------------------------------------------------------


def record_json(data: dict[str, Any]) -> bytes:
    """A record's data as compact JSON; integers orjson refuses are written as their exact digits."""
    try:
        return orjson.dumps(data)
    except TypeError:  # integers beyond 64 bits (orjson refuses them): the same JSON value, other bytes
        return lossless_json(data)


def record_prefix(stream: str) -> bytes:
    """What a RECORD line of `stream` holds before its data: build it once per stream, for `record_lines`.

    Example: `record_prefix("export")` is `{"type":"RECORD","record":{"stream":"export","data":`, the
    CDK's bytes (the name is written as JSON, so any name gives a valid line)."""
    return b'{"type":"RECORD","record":{"stream":' + orjson.dumps(stream) + b',"data":'


def record_lines(prefix: bytes, bodies: list[bytes], emitted_at_ms: int) -> bytes:
    """RECORD lines around record data already in JSON, all of one stream (its `record_prefix`) and
    with the same `emitted_at`.

    One join, no concatenation after it: each copy of a megabyte of output cost ~0.4 µs a record
    (fresh pages for every large buffer), more than the join itself.
    """
    if not bodies:
        return b""
    end = b',"emitted_at":%d}}\n' % emitted_at_ms
    if len(bodies) == 1:
        return prefix + bodies[0] + end
    return (end + prefix).join([prefix + bodies[0], *bodies[1:-1], bodies[-1] + end])


def now_ms() -> int:
    """The time to write as a record's `emitted_at`."""
    return _time.time_ns() // 1_000_000


def lossless_json(data: Any) -> bytes:
    """Compact JSON of a value holding integers orjson refuses: they are written as their exact digits."""
    try:
        return orjson.dumps(_exact_ints(data))
    except TypeError:  # e.g. a lone surrogate in a string (only the stdlib parser lets one through)
        return json.dumps(data, separators=(",", ":")).encode()


def _exact_ints(value: Any) -> Any:
    """`value` with every integer beyond 64 bits replaced by an orjson.Fragment of its digits.

    Only the containers on the way to such an integer are copied; the input is left as it is.
    """
    changed: Any = None
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        kind = type(item)
        if kind is int:
            if _INT64_MIN <= item < _UINT64_END:
                continue
            new = orjson.Fragment(b"%d" % item)
        elif kind is dict or kind is list:
            new = _exact_ints(item)
            if new is item:
                continue
        else:
            continue
        if changed is None:
            changed = dict(value) if type(value) is dict else list(value)
        changed[key] = new
    return value if changed is None else changed


_PROPERTIES_KEY = b',"properties":'
# `{"event":<name>,"properties":` as orjson writes it, per event name (names repeat: a project has a few
# hundred); None for a name orjson cannot write (a lone surrogate).
_LINE_STARTS: dict[str, bytes | None] = {}


def record_bytes(batch: Batch) -> list[bytes]:
    """The data JSON of each record of a batch: the one producer of record bytes (records.record_lines
    wraps them in RECORD messages).

    A record whose line is a compact plain event, `{"event":<name>,"properties":{...}}` as Mixpanel
    writes it (its name as orjson writes it, two keys), gets the properties' bytes as Mixpanel sent
    them, sliced from the line: serializing them again would cost most of a record's time (5.1 against
    2.0 µs here), and the slice is the same JSON value (numbers even keep their digits). A line in
    any other form (spaces, escaped keys, other key order) is serialized whole.

    A key given twice in a line (at the top or inside the properties, at any depth) keeps its last
    value everywhere, as both parsers do: such a line is never sliced (a reader that keeps the first
    copy would see other properties than the typed columns came from) but serialized from its parsed
    value, which holds each key once (see `_one_value_per_key`).
    """
    if batch.events is None or batch.lines is None:
        return [record_json(record) for record in batch.records]
    out = []
    for record, event, line in zip(batch.records, batch.events, batch.lines, strict=True):
        body = _sliced(record, event, line) if len(event) == 2 else None
        out.append(body if body is not None else record_json(record))
    return out


def _sliced(record: dict[str, Any], event: dict[str, Any], line: bytes) -> bytes | None:
    """The record's bytes with the properties sliced from a compact plain event line, else None.

    The slice goes into orjson's output as an orjson.Fragment (written as it is), in the place of the
    record's properties for the time of the call: one serialization, no concatenation after it.
    """
    name = event["event"]
    start = _LINE_STARTS.get(name) if name in _LINE_STARTS else _line_start(name)
    if start is None:
        return None
    cut = len(start)
    end = line.rfind(b"}")
    if not (cut < end and line.startswith(start)):
        return None
    properties = record["properties"]
    if not _one_value_per_key(line, properties):
        return None
    record["properties"] = orjson.Fragment(line[cut:end])
    try:
        return orjson.dumps(record)
    except TypeError:  # an integer beyond 64 bits in a field: see record_json
        return None
    finally:
        record["properties"] = properties  # back, in its place (last), as it was


def _one_value_per_key(line: bytes, properties: dict[str, Any]) -> bool:
    """Whether `line`, a JSON text starting `{"event":<name>,"properties":` that parsed to an event of
    two keys with these properties, gives no key twice in any object (else slicing it would keep the
    copies that parsing dropped). False only costs a serialization.

    Sound by counting commas. Outside strings, JSON has a comma only between two members of an object
    or two elements of an array, so the line has at least sum(max(n - 1, 0)) commas over its objects
    and arrays, n counted in the raw text. Parsing keeps every array whole and each object with its
    distinct keys only, so that sum over the parsed value is 1 (the line's `event` and `properties`)
    plus `_separators(properties)`, and it grows by at least 1 for every extra key: a duplicate at the
    top, in the properties or deeper (an object dropped as a duplicate adds its own commas too). So a
    line with no more commas than that has no duplicate. Commas inside strings only make a line fail
    the test. Whitespace, which may sit before a colon, does not matter here, unlike in a count of `":`.

    The first test needs no walk over the properties: the line has at least max(len(properties), 1)
    commas whatever the values, so that many prove it (63% of the fake's lines at 0.35 µs; a walk
    costs ~1.3 µs more, a serialization ~5 µs).
    """
    commas = line.count(b",")
    return commas <= max(len(properties), 1) or commas <= 1 + _separators(properties)


def _separators(value: dict[str, Any] | list[Any]) -> int:
    """How many commas separate members and elements in the compact JSON of a parsed value (none in
    strings). A loop with a stack, not recursion: orjson parses nestings deeper than Python recurses."""
    count = 0
    stack: list[Any] = [value]
    while stack:
        container = stack.pop()
        if container:
            count += len(container) - 1
            for item in container.values() if type(container) is dict else container:
                kind = type(item)
                if kind is dict or kind is list:
                    stack.append(item)
    return count


def _line_start(name: str) -> bytes | None:
    """`{"event":<name>,"properties":` for `name` (cached in _LINE_STARTS), None if orjson refuses it.

    The cache holds at most 10,000 names of at most 256 characters (~3 MB): a hostile body of
    distinct megabyte-long names would otherwise fill memory with them."""
    if len(_LINE_STARTS) > 10_000:  # a project with that many names: keep the cache bounded
        _LINE_STARTS.clear()
    try:
        start: bytes | None = b'{"event":' + orjson.dumps(name) + _PROPERTIES_KEY
    except TypeError:  # a lone surrogate (the exact parser lets one through)
        start = None
    if len(name) <= 256:
        _LINE_STARTS[name] = start
    return start
