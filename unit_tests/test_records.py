"""Record building: typed, lossless, stable ids, true UTC times."""

import datetime as dt
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration_tests.depth import examples
from source_mixpanel_export.lines import needs_exact
from source_mixpanel_export.records import (
    SCHEMA,
    IsoTime,
    LegacyClock,
    Tally,
    dumps,
    event_id,
    make_builder,
    record_bytes,
    records_of_lines,
)


def event(**props):
    base = {"time": 1700000000123, "distinct_id": "u1", "$insert_id": "i1", "mp_processing_time_ms": 1700000001000}
    base.update(props)
    return {"event": "Sign Up", "properties": base}


def test_given_event_when_built_then_fields_are_typed_and_properties_untouched():
    """Top-level fields are extracted; properties keep names and JSON types."""
    props = {"nested": {"a": [1, {"b": True}]}, "big": 2**63 - 1, "$os": "iOS", "n": None, "f": 1.5}
    record = make_builder()(event(**props))
    assert record["event"] == "Sign Up"
    assert record["time"] == "2023-11-14T22:13:20.123Z"
    assert (record["distinct_id"], record["insert_id"], record["mp_processing_time_ms"]) == ("u1", "i1", 1700000001000)
    assert record["properties"]["nested"] == {"a": [1, {"b": True}]} and record["properties"]["big"] == 2**63 - 1
    jsonschema.validate(record, SCHEMA)


def test_given_same_event_after_identity_merge_when_built_then_id_is_unchanged():
    """event_id ignores distinct_id, which identity merges rewrite."""
    build = make_builder()
    before = build(event(distinct_id="anon-1"))
    after = build(event(distinct_id="user-42", **{"$distinct_id_before_identity": "anon-1"}))
    assert before["event_id"] == after["event_id"]
    without_insert = [build(event(**{"$insert_id": None, "distinct_id": d, "x": 1})) for d in ("a", "b")]
    assert without_insert[0]["event_id"] == without_insert[1]["event_id"]
    assert build(event(**{"$insert_id": "i2"}))["event_id"] != before["event_id"]


def test_given_missing_optional_fields_when_built_then_left_out_not_errors():
    """No $insert_id, no processing time, no time: the fields are left out (as the CDK's serializer leaves
    out None), the record is still valid and its id never null."""
    record = make_builder()({"event": "E", "properties": {}})
    assert set(record) == {"event_id", "event", "properties"}
    assert len(record["event_id"]) == 32
    jsonschema.validate(record, SCHEMA)


@pytest.mark.parametrize("bad", [[], "x", {"event": 5, "properties": {}}, {"event": "E", "properties": []}])
def test_given_json_that_is_not_an_event_when_built_then_value_error(bad):
    """JSON that is not an event object is refused (the reader counts it as a bad line)."""
    with pytest.raises(ValueError):
        make_builder()(bad)


def test_iso_time_matches_datetime_for_many_instants():
    """The cached formatter agrees with datetime.isoformat, including before 1970."""
    iso = IsoTime()
    for ms in (0, 1, 999, 59_999, 60_000, 1700000000123, -1, -61_001, 4102444799999):
        expected = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=ms)
        assert iso(ms) == expected.isoformat(timespec="milliseconds") + "Z"


def test_given_times_as_ints_and_floats_when_built_then_time_matches_iso_time_and_datetime():
    """The builder's inlined formatting agrees with IsoTime and with datetime, day edges and floats included."""
    build, iso = make_builder(), IsoTime()
    for ms in (0, -1, 86_399_999, 86_400_000, 951_782_400_000, 1700000000123, 4102444799999, 1700000000999.9):
        record = build(event(time=ms))
        expected = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(ms))
        assert record["time"] == iso(int(ms)) == expected.isoformat(timespec="milliseconds") + "Z"


@pytest.mark.parametrize(
    "zone,utc",
    [
        ("US/Pacific", dt.datetime(2024, 3, 10, 9, 59, tzinfo=dt.UTC)),  # 01:59 PST, before spring forward
        ("US/Pacific", dt.datetime(2024, 3, 10, 10, 0, tzinfo=dt.UTC)),  # 03:00 PDT, after
        ("US/Pacific", dt.datetime(2024, 11, 3, 7, 59, tzinfo=dt.UTC)),  # 00:59 PDT before fall back
        ("US/Pacific", dt.datetime(2024, 11, 3, 10, 0, tzinfo=dt.UTC)),  # 02:00 PST after
        ("Europe/Berlin", dt.datetime(2024, 3, 31, 1, 30, tzinfo=dt.UTC)),
        ("Europe/Berlin", dt.datetime(2024, 10, 27, 2, 0, tzinfo=dt.UTC)),  # 03:00 CET
        ("Asia/Kolkata", dt.datetime(2024, 6, 1, 20, 0, tzinfo=dt.UTC)),
    ],
)
def test_given_legacy_wall_time_when_converted_then_true_utc(zone, utc):
    """Local wall time written as if UTC converts back to the true instant, DST included."""
    from zoneinfo import ZoneInfo

    local = utc.astimezone(ZoneInfo(zone))
    wall_ms = int(local.replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert LegacyClock(zone).to_utc_ms(wall_ms) == int(utc.timestamp() * 1000)


def test_given_ambiguous_fall_back_hour_when_converted_then_first_occurrence():
    """01:30 on the night daylight saving ends is taken as the first 01:30 (daylight time)."""
    wall_ms = int(dt.datetime(2024, 11, 3, 1, 30, tzinfo=dt.UTC).timestamp() * 1000)
    assert LegacyClock("US/Pacific").to_utc_ms(wall_ms) == wall_ms + 7 * 3600 * 1000


def test_dumps_keeps_integers_beyond_64_bits():
    """Integers orjson refuses are written exactly by the fallback."""
    assert json.loads(dumps({"x": 12345678901234567890123})) == {"x": 12345678901234567890123}


@pytest.mark.parametrize("raw", [1e20, 2**70, -(2**70), 253402300800000, -62135596800001])
def test_given_time_beyond_years_1_to_9999_when_built_then_no_time_and_the_raw_value_kept(raw):
    """Such an event is still delivered, lossless: `time` is null and properties.time holds what Mixpanel sent."""
    event = {"event": "Far", "properties": {"time": raw, "$insert_id": "i"}}
    for legacy in (None, "America/New_York"):
        record = make_builder(legacy)(event)
        assert "time" not in record and record["properties"]["time"] == raw
    last = make_builder()({"event": "Edge", "properties": {"time": 253402300799999}})
    assert last["time"] == "9999-12-31T23:59:59.999Z"


def test_given_simplified_id_merge_ids_when_built_then_user_id_and_device_id_are_columns():
    """$user_id and $device_id become top-level string columns; properties keep them as sent, and the
    event_id is the one it was before these columns existed (it does not depend on them)."""
    build = make_builder()
    plain = build(event())
    record = build(event(**{"$user_id": "user-42", "$device_id": "dev-7"}))
    assert (record["user_id"], record["device_id"]) == ("user-42", "dev-7")
    assert record["properties"]["$user_id"] == "user-42" and record["properties"]["$device_id"] == "dev-7"
    assert record["event_id"] == plain["event_id"] and "user_id" not in plain and "device_id" not in plain
    jsonschema.validate(record, SCHEMA)
    odd = build(event(**{"$user_id": 12345678901234567890123, "$device_id": {"a": 1}}))
    assert (odd["user_id"], odd["device_id"]) == ("12345678901234567890123", '{"a": 1}')
    jsonschema.validate(odd, SCHEMA)
    assert "user_id" not in build(event(**{"$user_id": None}))
    for column in ("user_id", "device_id"):
        assert SCHEMA["properties"][column]["type"] == ["null", "string"]


def test_given_many_long_event_names_when_written_then_the_line_start_cache_stays_small():
    """The cache of `{"event":<name>,"properties":` prefixes keeps short names only, at most 10,001."""
    from source_mixpanel_export import records

    for index in range(12_000):
        records._line_start(f"{index:05d}" + "x" * (300 if index % 2 else 10))
    assert len(records._LINE_STARTS) <= 10_001
    assert all(len(name) <= 256 for name in records._LINE_STARTS)


@pytest.mark.parametrize(
    "name,props,expected",
    [
        ("Sign Up", {"time": 1700000000123, "distinct_id": "u1", "$insert_id": "i1"},
         "2a3844b3d3ebcde5c46309499eba3fe4"),
        ("Purchase", {"time": 1700000000123.5, "$insert_id": "a7f3-ü"}, "9ba67b8a09a540547480f8c7d87981b6"),
        ("Sign Up", {"time": 1700000000123, "distinct_id": "u1"}, "376631feaebda54bb0872328be032e9a"),
    ],
    ids=["string-insert-id", "float-time-unicode-id", "no-insert-id"],
)
def test_given_a_string_or_missing_insert_id_when_built_then_the_event_id_is_the_one_past_versions_gave(
    name, props, expected
):
    """event_id is the primary key users dedupe on across versions: these values were computed before any change."""
    assert make_builder()({"event": name, "properties": props})["event_id"] == expected


# -- a key given twice: the last value wins everywhere -------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object_pairs_hook that refuses a key given twice: bytes that pass hold each key once."""
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key twice in {keys}"
    return dict(pairs)


def written(line: bytes) -> tuple[dict[str, Any], bytes]:
    """The one record of a line and its bytes, through the batch path the stream uses."""
    exact = (0,) if needs_exact(line) else ()
    batch = records_of_lines([line], exact, make_builder(), Tally())
    ((record,), (body,)) = batch.records, record_bytes(batch)
    return record, body


def assert_consistent(record: dict[str, Any], body: bytes) -> None:
    """The bytes hold each key once, parse to the record, and the typed columns come from its properties."""
    assert json.loads(body, object_pairs_hook=_no_duplicates) == record
    props = record["properties"]
    assert record.get("insert_id") == props.get("$insert_id")
    assert record.get("distinct_id") == props.get("distinct_id")
    assert record.get("time") == (IsoTime()(props["time"]) if "time" in props else None)


@pytest.mark.parametrize(
    "line,event,properties",
    [
        (b'{"event":"E","properties":{"time":1,"$insert_id":"x"},"properties":{"time":2,"$insert_id":"y","a":1}}',
         "E", {"time": 2, "$insert_id": "y", "a": 1}),
        (b'{"event":"E","event":"F","properties":{"time":3,"distinct_id":"d"}}', "F", {"time": 3, "distinct_id": "d"}),
        (b'{"event":"E","properties":{"time":4,"a":1.10},"event":"E"}', "E", {"time": 4, "a": 1.1}),
        (b'{"event":"E","properties":{"time":5,"a":1,"$insert_id":"i1","a":2,"$insert_id":"i2","time":6}}',
         "E", {"time": 6, "a": 2, "$insert_id": "i2"}),
        (b'{"event":"E","properties":{"time":7,"n":{"x":1,"x":2},"l":[{"y":1,"y":[3,{"z":4,"z":5}]}]}}',
         "E", {"time": 7, "n": {"x": 2}, "l": [{"y": [3, {"z": 5}]}]}),
        (b'{"event":"E","properties":{"n":{"x":{"a":1,"b":2}},"n":{"y":1}}}', "E", {"n": {"y": 1}}),
        (b'{"event":"E","properties":{"distinct_id":"a","\\u0064istinct_id":"b"}}', "E", {"distinct_id": "b"}),
        (b'{"event":"E","properties":{"time" :8,"time"\t:9,"a" : 1}}', "E", {"time": 9, "a": 1}),
        (b'{"event":"E","properties":{"time":10,"big":123456789012345678901234,"big":2}}', "E", {"time": 10, "big": 2}),
    ],
    ids=["properties-twice", "event-twice", "event-again-after-properties", "flat", "nested", "nested-dropped",
         "escaped-key", "spaces-before-colons", "exact-parser"],
)
def test_given_a_key_twice_when_written_then_one_consistent_record_where_the_last_value_wins(line, event, properties):
    """A duplicate key, at the top or in the properties at any depth, gives bytes with the last value only."""
    record, body = written(line)
    assert (record["event"], record["properties"]) == (event, properties)
    assert_consistent(record, body)


def test_given_lines_without_a_key_twice_when_written_then_the_properties_bytes_are_sliced_from_the_line():
    """Flat or nested, a line with each key once keeps the fast path: its numbers keep their digits (1.10)."""
    for props in (b'{"time":1,"a":1.10}', b'{}', b'{"a":1.10,"n":{"x":[1,2,{"y":3,"z":"s"}],"w":{}}}'):
        record, body = written(b'{"event":"E","properties":' + props + b"}")
        assert props in body
        assert_consistent(record, body)


def render(value: Any) -> str:
    """JSON text of a value in which an object is a list of (key, value) pairs, so that keys may repeat."""
    if isinstance(value, list) and value and isinstance(value[0], tuple):
        return "{" + ",".join(f"{json.dumps(key)}:{render(item)}" for key, item in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item) for item in value) + "]"
    return json.dumps(value)


_SCALARS = st.one_of(st.integers(-5, 5), st.sampled_from(["s", "a,b", 'q":', "", 1.5, True, None]))
_KEYS = st.sampled_from(["a", "b", "time", "$insert_id", "distinct_id"])
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(_KEYS, inner), min_size=1, max_size=4),
    max_leaves=8,
)


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=6), st.sampled_from(["", ',"event":"E"', ',"properties":{}']))
def test_given_random_lines_with_repeated_keys_when_written_then_bytes_match_the_record(pairs, tail):
    """Whatever keys repeat where, the record's bytes hold each key once and parse to the record."""
    line = ('{"event":"E","properties":' + (render(pairs) if pairs else "{}") + tail + "}").encode()
    record, body = written(line)
    assert record["properties"] == json.loads(line)["properties"]
    assert json.loads(body, object_pairs_hook=_no_duplicates) == record


# -- $insert_id that is no string, or empty -------------------------------------------------------------------


@pytest.mark.parametrize(
    "insert_id,column",
    [(12345, "12345"), ("12345", "12345"), (True, "true"), ({"a": 1}, '{"a":1}'), ("", None), ([1, "x"], '[1,"x"]'),
     (2**70, "1180591620717411303424"), (1.5, "1.5")],
)
def test_given_an_insert_id_of_any_json_type_when_built_then_the_column_holds_its_json_text(insert_id, column):
    """A non-string $insert_id shows as compact JSON, never a Python repr; an empty one is no insert_id."""
    record = make_builder()(event(**{"$insert_id": insert_id}))
    assert record.get("insert_id") == column
    assert record["properties"]["$insert_id"] == insert_id
    jsonschema.validate(record, SCHEMA)


def test_given_events_differing_only_in_the_insert_ids_type_when_built_then_their_event_ids_differ():
    """12345, "12345", true, "true", {"a":1}, '{"a":1}' and "" are seven different ids."""
    build = make_builder()
    ids = [12345, "12345", True, "true", {"a": 1}, '{"a":1}', ""]
    event_ids = {build(event(**{"$insert_id": value}))["event_id"] for value in ids}
    assert len(event_ids) == len(ids)


def test_given_two_events_with_an_empty_insert_id_when_built_then_their_ids_come_from_their_properties():
    """"" counts as missing: two events with it are two events, and identity merges leave their ids alone."""
    build = make_builder()
    first, second = (build(event(**{"$insert_id": "", "x": x})) for x in (1, 2))
    assert first["event_id"] != second["event_id"] and "insert_id" not in first
    merged = build(event(**{"$insert_id": "", "x": 1, "distinct_id": "user-42"}))
    assert merged["event_id"] == first["event_id"]
    assert first["event_id"] == event_id("Sign Up", 1700000000123, "", first["properties"])


def test_given_a_non_string_insert_id_when_its_event_id_is_made_then_both_ways_agree():
    """The builder's inlined id and event_id() give the same id for every kind of $insert_id."""
    build = make_builder()
    for value in ("i1", 12345, True, {"a": 1}, "", None):
        record = build(event(**{"$insert_id": value}))
        assert record["event_id"] == event_id("Sign Up", 1700000000123, value, record["properties"])
