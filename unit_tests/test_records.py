"""Record building: typed, lossless, stable ids, true UTC times."""

import datetime as dt
import json

import jsonschema
import pytest

from source_mixpanel_export.records import SCHEMA, IsoTime, LegacyClock, dumps, make_builder


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
