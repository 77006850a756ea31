"""People profiles: one Engage page in, its profiles as typed, lossless Airbyte records out.

A page is one JSON object, `{"page", "page_size", "session_id", "status", "total", "results"}`. It is parsed
as the export's lines are (lines.exact_loads when it may hold integers orjson would turn into floats), so
`properties` keeps every value with its JSON type and digits. A profile's `$distinct_id` may be a number:
the record holds its text, which is also how the export's events name the user.

`$last_seen` (and `$created`) are strings without a zone, like "2008-12-12T11:20:47". They are read as UTC:
Mixpanel sets `$last_seen` itself, from its servers' clocks, when an update arrives (the project timezone
only changes how its UI shows times), and the `where` expressions the ranges are read by compare them the
same way, so a profile falls in the range its column says.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson

from .lines import exact_loads, needs_exact

PRIMARY_KEY = [["distinct_id"]]
CURSOR_FIELD = ["last_seen"]
LAST_SEEN = "$last_seen"

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "additionalProperties": True,
    "required": ["distinct_id", "properties"],
    "properties": {
        "distinct_id": {
            "type": "string",
            "description": "The profile's $distinct_id; a numeric one as its digits.",
        },
        "last_seen": {
            "type": ["null", "string"],
            "format": "date-time",
            "airbyte_type": "timestamp_with_timezone",
            "description": "The profile's $last_seen ('Updated at'), read as UTC; null when it has none. "
            "Edits in Mixpanel's UI and updates sent with $ignore_time leave it unchanged.",
        },
        "properties": {
            "type": "object",
            "additionalProperties": True,
            "description": "All of the profile's $properties, with their original names and JSON types.",
        },
    },
}


class BadPage(ValueError):
    """An answer with status 200 that is no complete Engage page (cut off, not JSON, wrong shape):
    asking for the same page again may give the whole one. `is_json`: it parsed, but is no page."""

    def __init__(self, reason: str, is_json: bool = True) -> None:
        super().__init__(reason)
        self.is_json = is_json


@dataclass(frozen=True)
class Page:
    """One Engage answer: its profiles as records, and what says whether another page follows."""

    records: list[dict[str, Any]]
    page_size: int
    total: int | None
    session_id: str | None

    def full(self) -> bool:
        """Whether a next page may hold more: Mixpanel's own loop asks again while a page is full."""
        return len(self.records) >= self.page_size > 0


def parse_page(body: bytes) -> Page:
    """The page in `body`, its results made records (`profile_record`), or BadPage saying what is wrong."""
    try:
        data = exact_loads(body) if needs_exact(body) else orjson.loads(body)
    except orjson.JSONDecodeError:  # a lone surrogate (\ud800) is JSON orjson refuses: the stdlib reads it
        try:
            data = exact_loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadPage(f"the page is not complete JSON ({type(exc).__name__})", is_json=False) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadPage(f"the page is not complete JSON ({type(exc).__name__})", is_json=False) from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise BadPage("the answer holds no list of results")
    page_size, total, session = data.get("page_size"), data.get("total"), data.get("session_id")
    if type(page_size) is not int or page_size <= 0:
        raise BadPage(f"the answer's page_size is {str(page_size)[:40]!r}, not a positive whole number")
    return Page(
        records=[profile_record(entry) for entry in data["results"]],
        page_size=page_size,
        total=total if _count(total) else None,
        session_id=session if isinstance(session, str) and session else None,
    )


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def profile_record(entry: Any) -> dict[str, Any]:
    """A profiles record from one of a page's results; BadPage when the entry is no profile.

    Example: `{"$distinct_id": 4, "$properties": {"$last_seen": "2024-05-01T10:00:00", "n": 1}}` gives
    `{"distinct_id": "4", "last_seen": "2024-05-01T10:00:00Z", "properties": {...the same object...}}`.
    """
    if type(entry) is not dict:
        raise BadPage("a result is not a JSON object")
    distinct_id = entry.get("$distinct_id")
    properties = entry.get("$properties", {})
    if distinct_id is None or isinstance(distinct_id, dict | list) or distinct_id == "":
        raise BadPage("a result has no $distinct_id")
    if type(properties) is not dict:
        raise BadPage("a result's $properties is not an object")
    record: dict[str, Any] = {"distinct_id": distinct_id if type(distinct_id) is str else _id_text(distinct_id)}
    seen = last_seen_seconds(properties.get(LAST_SEEN))
    if seen is not None:
        record["last_seen"] = mixpanel_time(seen) + "Z"
    record["properties"] = properties
    return record


def _id_text(value: Any) -> str:
    """A numeric or boolean distinct_id as its JSON text: 4 → "4", 2**64 + 7 → its digits, true → "true"."""
    return orjson.dumps(value).decode() if type(value) is not int else str(value)


def last_seen_seconds(value: Any) -> int | None:
    """A `$last_seen` as UTC epoch seconds, or None when it is absent or no date Mixpanel writes.

    A value with a zone is converted to UTC; a fraction of a second is dropped (the ranges count seconds).
    """
    if type(value) is not str or not 8 <= len(value) <= 40:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        utc = moment.astimezone(dt.UTC)  # a zone past year 1 or 9999 in UTC: no time
    except (ValueError, OverflowError):
        return None
    return calendar.timegm(utc.utctimetuple())  # whole seconds, down (int() would round 1969 times up)


def mixpanel_time(epoch_seconds: int) -> str:
    """Epoch seconds as profiles write times: "2008-12-12T11:20:47" (UTC, no zone)."""
    return dt.datetime.fromtimestamp(epoch_seconds, dt.UTC).isoformat()[:19]  # strftime leaves years < 1000 unpadded
