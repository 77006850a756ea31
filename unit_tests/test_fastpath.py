"""The fast read path against the plain one: same records from the same bytes, same RECORD lines as the CDK.

The fast path (iter_line_batches, parse_line, make_builder's closure, MessageWriter) trades clarity for
speed; these tests hold it to a straightforward version written here (stdlib json, datetime, no caches).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import time
from typing import Any

import orjson
import pytest
from airbyte_cdk.entrypoint import AirbyteEntrypoint
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_mixpanel import generate_events
from integration_tests.depth import examples
from source_mixpanel_export.lines import iter_line_batches, parse_line
from source_mixpanel_export.records import BadEvent, Batch, Tally, make_builder, record_bytes, records_of_lines
from source_mixpanel_export.source import record_message
from source_mixpanel_export.stream import state_message
from source_mixpanel_export.writer import MessageWriter

NOW_NS = 1_700_000_000_123_456_789
IDENTITY = {"distinct_id", "$user_id", "$distinct_id_before_identity"}
BAD, BLANK = "bad line", "blank line"

AWKWARD_VALUES: list[Any] = [
    "line\u2028separator", "para\u2029graph", "next\u0085line", "carriage\rreturn", "multi\nline\n", "tab\tvalue",
    'quote " backslash \\ slash /', "emoji 🎉 👩\u200d💻", "日本語 Русский العربية", "", "\x00\x1f control",
    0.1 + 0.2, 5e-324, 1.7976931348623157e308, -0.0, 1e16, 1e-7, 123456789.125,
    2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**18, 12345678901234567890,
    True, False, None, {}, [], {"a": {"b": {"c": [1, {"d": None}]}}}, [1, "two", 3.5, None, [6, [7]]],
    [{"sku": "A-1", "qty": 2, "price": 9.99}], "digits in a string 123456789012345678901234567890",
]


def reference_record(event: Any) -> dict[str, Any]:
    """The record, computed the obvious way (raises BadEvent like the real builder)."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise BadEvent("not an event")
    name, props = event["event"], event.get("properties")
    if not isinstance(props, dict):
        raise BadEvent("not an event")
    raw = props.get("time")
    time_text = None
    if type(raw) in (int, float):
        moment = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(raw))
        time_text = moment.isoformat(timespec="milliseconds") + "Z"
    insert_id = props.get("$insert_id")
    person = b""
    if insert_id == "":
        insert_id = None
    if isinstance(insert_id, str):
        key = f"{name}\x1f{raw}\x1f{insert_id}".encode()
    elif insert_id is not None:  # JSON text, hashed as a domain of its own
        insert_id = json.dumps(insert_id, separators=(",", ":"), ensure_ascii=False)
        key, person = f"{name}\x1f{raw}\x1f{insert_id}".encode(), b"json $insert_id"
    else:
        stable = {k: v for k, v in props.items() if k not in IDENTITY}
        try:
            text = orjson.dumps(stable, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            text = json.dumps(stable, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        key = f"{name}\x1f{raw}\x1f".encode() + text
    def text(value: Any) -> Any:
        if isinstance(value, dict | list):
            return json.dumps(value)
        return value if value is None else str(value)

    distinct, user, device = (text(props.get(key)) for key in ("distinct_id", "$user_id", "$device_id"))
    processed = props.get("mp_processing_time_ms")
    if type(processed) is float:
        processed = int(processed) if processed.is_integer() else None
    elif type(processed) is str:
        processed = int(processed) if processed.strip().isdigit() else None
    elif processed is not None and type(processed) is not int:
        processed = None
    record = {
        "event_id": hashlib.blake2b(key, digest_size=16, person=person).hexdigest(),
        "event": name,
        "time": time_text,
        "distinct_id": distinct,
        "user_id": user,
        "device_id": device,
        "insert_id": insert_id,
        "mp_processing_time_ms": processed,
        "properties": props,
    }
    return {key: value for key, value in record.items() if value is not None}


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def reference_read(body: bytes) -> list[Any]:
    """Per line of `body.split(b"\\n")`: the record, BLANK or BAD (stdlib json, which keeps every integer)."""
    out: list[Any] = []
    lines = body.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for line in lines:
        try:
            out.append(reference_record(json.loads(line, parse_constant=_reject_constant)))
        except ValueError:
            out.append(BLANK if not line.strip() else BAD)
    return out


def fast_read(chunks: list[bytes]) -> list[Any]:
    """The same through the connector's fast path, as the stream's loop drives it."""
    build, loads = make_builder(), orjson.loads
    out: list[Any] = []
    for lines, exact in iter_line_batches(chunks):
        for position, line in enumerate(lines):
            try:
                out.append(build(parse_line(line, True) if position in exact else loads(line)))
            except ValueError:
                out.append(BLANK if not line.strip() else BAD)
    return out


def cut(body: bytes, points: list[int]) -> list[bytes]:
    """The body in pieces at the given offsets."""
    marks = sorted({min(p, len(body)) for p in points})
    return [body[a:b] for a, b in zip([0, *marks], [*marks, len(body)], strict=True)]


def same(fast: list[Any], reference: list[Any]) -> None:
    """Equal including types and key order: 1 and 1.0, 0.0 and -0.0, {"a","b"} and {"b","a"} all differ.
    Blank lines are skipped by both (the fast path may see a run of empty lines as one)."""
    fast = [item for item in fast if item != BLANK]
    reference = [item for item in reference if item != BLANK]
    assert len(fast) == len(reference)
    for mine, theirs in zip(fast, reference, strict=True):
        assert repr(mine) == repr(theirs)


def line_of(value: Any) -> bytes:
    """JSON text the way Mixpanel writes it (raw UTF-8), for values holding integers of any size."""
    return json.dumps(value, ensure_ascii=False).encode()


def awkward_events() -> list[dict[str, Any]]:
    """One event per awkward value, in properties and in the fields the builder reads."""
    base = {"time": 1700000000123, "distinct_id": "u1", "$insert_id": "i1", "mp_processing_time_ms": 1700000001000}
    events = [{"event": "E", "properties": {**base, "v": v, "nested": {"list": [v, {"v": v}]}}} for v in AWKWARD_VALUES]
    for field in ("time", "distinct_id", "$insert_id", "mp_processing_time_ms"):
        for value in (None, 5, 1.5, 1700000000999.9, "1700000000000", " 12 ", True, {"a": 2**70}, [1], -1, 0, ""):
            events.append({"event": "F", "properties": {**base, field: value}})
    events.append({"event": "No props", "properties": {}})
    events.append({"event": "No insert id", "properties": {"time": 1, "distinct_id": "x", "big": 2**65, "f": 0.1}})
    events.append({"event": "No insert id", "properties": {"time": 1, "$user_id": "y", "t": "\u2028"}})
    for ms in (0, -1, 59_999, 86_399_999, 86_400_000, -86_400_001, 951_782_400_000, 4_102_444_799_999):
        events.append({"event": "Times", "properties": {"time": ms, "$insert_id": str(ms)}})
    return events


# -- (b) the fast path builds exactly the records of the plain one ---------------------------------------------


def test_given_awkward_events_when_read_fast_then_records_equal_the_plain_reading():
    """Unicode separators, nested values, float edges, integers at and beyond 64 bits, odd field types."""
    body = b"".join(line_of(e) + b"\n" for e in awkward_events())
    body += b"\n  \r\nnot json\nterminated early\n[1, 2]\n\"text\"\n{\"event\": 5, \"properties\": {}}\nNaN\n"
    reference = reference_read(body)
    assert reference.count(BAD) == 6 and reference.count(BLANK) == 2
    for size in (len(body), 4096, 100, 7):
        same(fast_read([body[i : i + size] for i in range(0, len(body), size)]), reference)


@pytest.mark.parametrize("time_in_ms", [True, False])
def test_given_the_fakes_generated_lines_when_read_fast_then_records_equal_the_plain_reading(time_in_ms):
    """Every event fake_mixpanel generates (every awkward kind), in seconds and in milliseconds."""
    events = generate_events(3000, dt.date(2024, 3, 1), 40, seed=11)
    body = b"".join(e.export_line(time_in_ms) for e in events)
    reference = reference_read(body)
    assert BAD not in reference and len(reference) == 3000
    same(fast_read([body[i : i + 65536] for i in range(0, len(body), 65536)]), reference)


JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**19, -(10**19)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
EVENT = st.fixed_dictionaries(
    {"event": st.text(max_size=10), "properties": st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=6)}
).map(lambda e: {"event": e["event"], "properties": {"time": 1700000000000, **e["properties"]}})


@settings(max_examples=examples(150), deadline=None)
@given(
    events=st.lists(st.one_of(EVENT, JSON_VALUE), max_size=25),
    points=st.lists(st.integers(0, 5000), max_size=8),
)
def test_given_random_json_lines_when_read_fast_then_records_equal_the_plain_reading(events, points):
    """Any JSON lines (events or not), any chunking: same records, same bad lines."""
    body = b"".join(line_of(e) + b"\n" for e in events)
    same(fast_read(cut(body, points)), reference_read(body))


# -- (a) MessageWriter writes exactly the CDK's RECORD lines ------------------------------------------------------


@pytest.fixture
def frozen_clock(monkeypatch):
    """Both writers read time.time_ns for emitted_at: make it a constant."""
    monkeypatch.setattr(time, "time_ns", lambda: NOW_NS)


def cdk_line(data: dict[str, Any]) -> bytes:
    """What the CDK's own serializer writes for a record of the export stream."""
    return AirbyteEntrypoint.airbyte_message_to_string(record_message("export", data)).encode() + b"\n"


def written(records: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    writer = MessageWriter(out)
    for data in records:
        writer.records(Batch([data], stream="export"))
    writer.flush()
    return out.getvalue()


def test_given_awkward_records_when_written_then_bytes_equal_the_cdks(frozen_clock):
    """Every awkward value that fits in 64 bits: the very same bytes, record by record and in a batch."""
    build = make_builder()
    records = []
    for event in awkward_events():
        record = build(event)
        try:
            orjson.dumps(record)
        except TypeError:
            continue  # beyond 64 bits: see the next test
        records.append(record)
    assert len(records) > len(AWKWARD_VALUES)
    for record in records:
        assert written([record]) == cdk_line(record)
    assert written(records) == b"".join(cdk_line(r) for r in records)


def test_given_another_stream_when_written_then_bytes_equal_the_cdks(frozen_clock):
    """The batch's stream is the one its lines name, byte for byte as the CDK writes a record of it."""
    record = make_builder()({"event": "E", "properties": {"time": 1, "$insert_id": "i", "distinct_id": "d"}})
    out = io.BytesIO()
    writer = MessageWriter(out)
    writer.records(Batch([record], stream="profiles"))
    writer.flush()
    cdk = AirbyteEntrypoint.airbyte_message_to_string(record_message("profiles", record)).encode() + b"\n"
    assert out.getvalue() == cdk

@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 10**30, [2**100, {"x": -(10**40)}], "\ud800"])
def test_given_values_orjson_refuses_when_written_then_same_json_value_as_the_cdk(frozen_clock, value):
    """Integers beyond 64 bits (and lone surrogates): other bytes than the CDK's fallback, the same JSON value."""
    props = {"time": 1, "$insert_id": "i", "distinct_id": "d", "mp_processing_time_ms": 2, "v": value, "u": "\u2028"}
    record = make_builder()({"event": "E", "properties": props})
    mine, theirs = written([record]), cdk_line(record)
    assert mine.endswith(b"\n") and mine.count(b"\n") == 1
    assert repr(json.loads(mine)) == repr(json.loads(theirs))
    assert repr(json.loads(mine)["record"]["data"]) == repr(record)


def test_given_null_fields_when_written_then_left_out_as_the_cdk_does(frozen_clock):
    """A record has no top-level None fields (serpyco-rs leaves them out; so does the builder), so the
    bytes are the CDK's; nulls inside properties stay."""
    record = make_builder()({"event": "E", "properties": {"n": None, "l": [None]}})
    assert set(record) == {"event_id", "event", "properties"}
    assert written([record]) == cdk_line(record)
    assert b'"n":null' in written([record])


def test_given_records_between_states_when_written_then_order_and_counts_are_kept(frozen_clock):
    """A STATE comes after the records before it and counts them; records after it wait for the next one."""
    out = io.BytesIO()
    writer = MessageWriter(out)
    build = make_builder()
    props = {"distinct_id": "d", "mp_processing_time_ms": 5}
    first = [build({"event": "A", "properties": {"time": i, "$insert_id": str(i), **props}}) for i in range(3)]
    for record in first:
        writer.records(Batch([record], stream="export"))
    writer.message(state_message({"cursor": 1}))
    writer.records(Batch([first[0]], stream="export"))
    writer.flush()
    lines = out.getvalue().splitlines(keepends=True)
    assert lines[:3] == [cdk_line(r) for r in first] and lines[4] == cdk_line(first[0])
    state = json.loads(lines[3])
    assert state["type"] == "STATE" and state["state"]["sourceStats"] == {"recordCount": 3.0}


# -- (c) record_bytes: properties sliced from the line are the same JSON value -----------------------------------


@pytest.mark.parametrize(
    "line",
    [
        b'{"event":"E","properties":{"time":1,"$insert_id":"a","n":1.10,"big":123456789012345678901234}}',
        b'{"event": "E", "properties": {"time": 1, "x": "\\u00e9\\ud83d\\ude00", "y": [1e16, -0.0]}}\r',
        b'{"event":"has \\"properties\\": inside","properties":{"time":2,"k":"\\"properties\\":"}}',
        b'{"event":"properties","properties":{"time":3}}',
        b'{"properties":{"time":4},"event":"properties first"}',
        b'{"event":"E","properties":{"time":5},"extra":{"a":1}}',
        b'{"event":"E","properties":{"time":6,"$insert_id":"s","lone":"\\ud800"}}',
        b'  {"event":"E","properties":{"time":7}}',
        b'{"event":"x","properties" :{"properties":{"a":1},"b":2}}',
        b'{"event":"x","\\u0070roperties":{"q":{"properties":{"z":1}}}}',
        b'{"event" : "x" , "properties" : {"q":{"properties":{"z":1}}} }',
        b'{"event":"\\u0045","properties":{"time":8}}',
    ],
    ids=["plain", "spaces-escapes-cr", "key-text-in-strings", "name-properties", "properties-first", "extra-key",
         "lone-surrogate", "leading-space", "space-before-colon", "escaped-key", "spaced", "escaped-name"],
)
def test_given_any_event_line_when_its_record_bytes_are_made_then_they_hold_the_records_value(line):
    """Sliced or serialized, the bytes parse back (exactly, big integers included) to the record."""
    exact = b"123456789012345678901234" in line or b"ud800" in line  # orjson refuses both
    batch = records_of_lines([line], (0,) if exact else (), make_builder(), Tally())
    (body,) = record_bytes(batch)
    assert json.loads(body) == batch.records[0]
    assert json.loads(body)["properties"] == json.loads(line)["properties"]


def test_given_the_fakes_lines_when_record_bytes_are_made_then_each_parses_to_its_record():
    events = generate_events(2000, dt.date(2024, 3, 1), 10, seed=3)
    body = b"".join(e.export_line(True) for e in events)
    for lines, exact in iter_line_batches([body]):
        batch = records_of_lines(lines, exact, make_builder(), Tally())
        assert [json.loads(b) for b in record_bytes(batch)] == [json.loads(orjson_or_json(r)) for r in batch.records]


def orjson_or_json(record):
    from source_mixpanel_export.records import record_json

    return record_json(record)


@pytest.mark.parametrize(
    "line",
    [
        b'{"event":"x","properties":{"a":NaN,"b":123456789012345678901234}}',
        b'{"event":"x","properties":{"a":Infinity,"b":123456789012345678901234}}',
        b'{"event":"x","properties":{"a":1e400,"b":123456789012345678901234}}',
        b'{"event":"x","properties":{"$insert_id":"i","s":"\xed\xa0\x80","b":123456789012345678901234}}',
        b'{"event":"x","properties":{"b":123456789012345678901234,"d":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ],
    ids=["nan", "infinity", "beyond-double", "invalid-utf8", "deep"],
)
def test_given_a_line_orjson_refuses_when_it_takes_the_exact_parser_then_it_is_a_bad_line_too(line):
    """The stdlib parser (for integers beyond 64 bits) is as strict as orjson: such a line is a bad line."""
    ((lines, exact),) = list(iter_line_batches([line + b"\n"]))
    tally = Tally()
    assert exact and records_of_lines(lines, exact, make_builder(), tally).records == [] and tally.bad == 1
