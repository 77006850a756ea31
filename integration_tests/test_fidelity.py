"""Record fidelity through the real CLI: export lines that give a key twice, and $insert_id values that are
no string or empty, served by a tiny server on 127.0.0.1 whose body the test writes byte for byte."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from integration_tests.conftest import TODAY
from integration_tests.harness import run_cli
from integration_tests.test_hostile_server import headers, hostile_config
from source_mixpanel_export.records import event_id

DAY_MS = int(dt.datetime.combine(TODAY - dt.timedelta(days=1), dt.time(12), dt.UTC).timestamp() * 1000)
TIME = (dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=DAY_MS)).isoformat(timespec="milliseconds") + "Z"
RAW_IDS = (b"12345", b'"12345"', b"true", b'{"a":1}', b'""', b'""')  # the last two differ in "v" only
LINES = [
    b'{"event":"Twice","properties":{"time":0,"$insert_id":"x","a":1},"properties":{"time":%(t)d,"$insert_id":"y"}}',
    b'{"event":"Flat","properties":{"time":0,"$insert_id":"f1","a":1,"$insert_id":"f2","a":2,"time":%(t)d}}',
    b'{"event":"Nested","properties":{"time":%(t)d,"o":{"x":1,"x":2},"o":{"x":3},"l":[{"y":1,"y":2}]}}',
    b'{"event":"Named","properties":{"time":%(t)d,"$insert_id":"n"},"event":"Named"}',
    *(b'{"event":"Id","properties":{"time":%(t)d,"$insert_id":' + raw + b',"v":%d}}' % v
      for v, raw in enumerate(RAW_IDS)),
]
BODY = b"".join(line % {b"t": DAY_MS} + b"\n" for line in LINES)


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object_pairs_hook that refuses a key given twice."""
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"a key twice in {keys}"
    return dict(pairs)


def expected(name: str, properties: dict[str, Any], insert_id: str | None) -> dict[str, Any]:
    """The record of an event whose last values are `properties` (event_id as unit_tests/test_records pins it)."""
    record = {"event_id": event_id(name, DAY_MS, properties.get("$insert_id"), properties), "event": name, "time": TIME}
    return {**record, **({"insert_id": insert_id} if insert_id is not None else {}), "properties": properties}


def serve_body(handler: Any) -> None:
    """Every export request gets BODY."""
    headers(handler, length=len(BODY))
    handler.wfile.write(BODY)


def test_given_lines_with_keys_twice_and_odd_insert_ids_when_read_then_the_exact_records_are_emitted(
    tmp_path, hostile  # noqa: F811 (the fixture imported above)
):
    """Last values win in every column and property, and each non-string or empty $insert_id gets its own id."""
    run = run_cli(tmp_path, "read", hostile_config(hostile(serve_body)))
    assert run.returncode == 0, run.stderr[-2000:]
    for line in run.stdout.split("\n"):  # the harness's parser keeps the last copy of a key: look first
        if line.startswith('{"type":"RECORD"'):
            json.loads(line, object_pairs_hook=_once)
    texts = ["12345", "12345", "true", '{"a":1}', None, None]
    assert run.records == [
        expected("Twice", {"time": DAY_MS, "$insert_id": "y"}, "y"),
        expected("Flat", {"time": DAY_MS, "$insert_id": "f2", "a": 2}, "f2"),
        expected("Nested", {"time": DAY_MS, "o": {"x": 3}, "l": [{"y": 2}]}, None),
        expected("Named", {"time": DAY_MS, "$insert_id": "n"}, "n"),
        *(expected("Id", {"time": DAY_MS, "$insert_id": value, "v": v}, text)
          for v, (value, text) in enumerate(zip([12345, "12345", True, {"a": 1}, "", ""], texts, strict=True))),
    ]
    assert len({record["event_id"] for record in run.records}) == len(LINES)
