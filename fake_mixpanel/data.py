"""Fake Mixpanel events and a deterministic generator of deliberately awkward ones, so tests hit real edge cases."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import orjson

EVENT_NAMES: tuple[str, ...] = ("Sign Up", "Purchase", "Page View", "Add To Cart", "Search", "Logout", "Login")
_NAME_WEIGHTS = (3, 4, 40, 12, 15, 5, 6)
_MS_PER_DAY = 86_400_000

# One awkward (name, value) pair per index, assigned round-robin so any set of len(AWKWARD_VALUES) events or
# more contains every kind at least once.
AWKWARD_VALUES: tuple[tuple[str, Any], ...] = (
    ("note", "line\u2028separator"),
    ("note", "para\u2029graph"),
    ("note", "next\u0085line"),
    ("note", "carriage\rreturn"),
    ("note", "multi\nline\ntext\n"),
    ("note", "tab\tseparated\tvalue"),
    ("note", "emoji 🎉 🚀 👩\u200d💻 🇯🇵"),
    ("note", "日本語のテキスト / Русский текст / العربية / हिन्दी / 한국어 / עברית"),
    ("note", 'quote " backslash \\ slash / brace {'),
    ("note", "terminated early"),
    ("note", '{"event": "Not An Event", "properties": {}}'),
    ("big_int", 2**63 - 1),
    ("big_int", 12345678901234567890),
    ("big_int", -(2**63)),
    ("huge_int", 2**64),
    ("huge_int", 123456789012345678901234567890),
    ("ratio", 0.1 + 0.2),
    ("ratio", 5e-324),
    ("ratio", 1.7976931348623157e308),
    ("ratio", -0.0),
    ("flag", True),
    ("flag", False),
    ("nothing", None),
    ("empty string", ""),
    ("empty object", {}),
    ("empty list", []),
    ("deep", {"level 1": {"level.2": {"$level3": "bottom", "n": 3, "ok": True}}, "sibling": [1, 2]}),
    ("cart", [{"sku": "A-1", "qty": 2, "price": 9.99}, {"sku": "Б-2", "qty": 1, "price": 0.5, "tags": []}]),
    ("mixed list", [1, "two", 3.5, None, True, {"five": 5}, [6, [7]]]),
    ("$custom.dotted.name", "dots in the key"),
    ("prop with spaces", "spaces in the key"),
    ("$$double dollar", "dollars in the key"),
    ("long text", "lorem ipsum dolor sit amet " * 15),
)

# The integers above that orjson cannot hold (beyond [-2**63, 2**64-1]), and what stands in for one where
# generate_events is asked for a set share of them: an integer that fits, as many events carry.
HUGE_INTS: tuple[int, ...] = tuple(v for k, v in AWKWARD_VALUES if k == "huge_int")
_HUGE_STAND_IN = 2**63 - 1

_CITIES = ("San Francisco", "東京", "Москва", "São Paulo", "मुंबई", "القاهرة", "Zürich", "서울", "", "Kraków")
_COUNTRIES = ("US", "JP", "RU", "BR", "IN", "EG", "CH", "KR", "PL", "DE")
_LIBS = ("web", "android", "iphone", "python", "node")
_OSES = ("Windows", "Mac OS X", "Android", "iOS", "Linux", "Chrome OS")
_BROWSERS = ("Chrome", "Safari", "Firefox", "Edge", "Mobile Safari", "Samsung Internet")
_PLANS = ("free", "pro", "enterprise")
_PAGES = ("/", "/pricing", "/docs/getting-started", "/blog/2024/launch", "/cart", "/account/settings", "/search")
_SEARCH_TERMS = ("shoes", "café au lait", "Ω-3 fish oil", "C++ book", "100% cotton", "ラーメン", '"quoted"', "")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    """Cache zones: they are looked up once per event while rendering."""
    return ZoneInfo(name)


def local_time_ms(time_ms: int, legacy_tz: str | None) -> int:
    """Shift a true UTC instant to the wall clock of legacy_tz written as if it were UTC, as old projects store it."""
    if legacy_tz is None:
        return time_ms
    instant = dt.datetime.fromtimestamp(time_ms // 1000, _zone(legacy_tz))
    offset = instant.utcoffset() or dt.timedelta(0)
    return time_ms + int(offset.total_seconds()) * 1000


@dataclass(frozen=True, slots=True)
class FakeEvent:
    """One stored Mixpanel event; kept apart from its exported form so each export mode can render it."""

    name: str
    time_ms: int
    properties: dict[str, Any] = field(default_factory=dict)
    processing_ms: int | None = None

    @property
    def insert_id(self) -> str | None:
        """Expose the dedup key tests look events up by."""
        return self.properties.get("$insert_id")

    def export_time_ms(self, legacy_tz: str | None = None) -> int:
        """Give the `time` the export reports, in ms, before the seconds/ms choice."""
        return local_time_ms(self.time_ms, legacy_tz)

    def export_properties(self, time_in_ms: bool = False, legacy_tz: str | None = None) -> dict[str, Any]:
        """Build the `properties` object as the export shows it, so tests can compare against parsed lines."""
        shown_ms = self.export_time_ms(legacy_tz)
        out: dict[str, Any] = {"time": shown_ms if time_in_ms else shown_ms // 1000}
        for key in ("distinct_id", "$insert_id"):
            if key in self.properties:
                out[key] = self.properties[key]
        if self.processing_ms is not None:
            out["mp_processing_time_ms"] = self.processing_ms
            out["$mp_api_timestamp_ms"] = self.processing_ms
        out.update(self.properties)
        return out

    def export_dict(self, time_in_ms: bool = False, legacy_tz: str | None = None) -> dict[str, Any]:
        """Build the whole exported line as a dict."""
        return {"event": self.name, "properties": self.export_properties(time_in_ms, legacy_tz)}

    def export_line(self, time_in_ms: bool = False, legacy_tz: str | None = None) -> bytes:
        """Render one JSON Lines line (with its b"\\n") with raw U+2028 etc., as Mixpanel sends it."""
        payload = self.export_dict(time_in_ms, legacy_tz)
        try:
            return orjson.dumps(payload) + b"\n"
        except orjson.JSONEncodeError:
            # orjson refuses integers beyond 64 bits; the stdlib keeps them exact.
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode("utf-8") + b"\n"


def holds_huge_int(event: FakeEvent) -> bool:
    """Whether an event from generate_events holds an integer beyond 64 bits, which orjson cannot parse
    exactly. Only its top-level properties are looked at: the generator puts such integers nowhere else."""
    return any(type(value) is int and not -(2**63) <= value < 2**64 for value in event.properties.values())


def _day_start_ms(day: dt.date) -> int:
    """Turn a UTC calendar day into its first epoch millisecond."""
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1000


def _distinct_id(rng: random.Random, users: int) -> str:
    """Pick a user id in one of the shapes Mixpanel projects really hold."""
    user = rng.randrange(users)
    shape = user % 4
    if shape == 0:
        return f"user-{user:06d}"
    if shape == 1:
        return f"$device:{user:08x}-7d1c-4f3e-9a0b-{user * 7919:012x}"
    if shape == 2:
        return f"person.{user}@example.com"
    return str(100_000_000 + user)


def _merge_ids(distinct_id: str, index: int) -> dict[str, str]:
    """$device_id and $user_id as Simplified ID Merge sets them: an anonymous event has only the device,
    an identified one the user and, on every other event, the device it came from. Drawn from no
    random generator, so that the rest of an event set does not change with them."""
    if distinct_id.startswith("$device:"):
        return {"$device_id": distinct_id.removeprefix("$device:")}
    ids = {"$user_id": distinct_id}
    if index % 2:
        ids["$device_id"] = f"{index * 2654435761 % 2**32:08x}-device"
    return ids


def _name_properties(rng: random.Random, name: str) -> dict[str, Any]:
    """Add the properties that belong to one kind of event."""
    if name == "Purchase":
        items = [
            {"sku": f"SKU-{rng.randrange(1000):04d}", "qty": rng.randint(1, 3), "price": round(rng.uniform(1, 200), 2)}
            for _ in range(rng.randint(1, 3))
        ]
        return {"amount": round(sum(i["price"] * i["qty"] for i in items), 2), "currency": "USD", "items": items}
    if name == "Add To Cart":
        return {"product": {"id": rng.randrange(10_000), "name": rng.choice(("Sneaker", "Tee", "Mug")), "price": 19.5}}
    if name == "Search":
        return {"search term": rng.choice(_SEARCH_TERMS), "results": rng.randrange(0, 500)}
    if name == "Page View":
        return {"page title": rng.choice(("Home", "Pricing", "Docs", "Blog"))}
    if name == "Sign Up":
        return {"signup method": rng.choice(("email", "google", "github")), "referral code": None}
    if name == "Logout":
        return {"session length s": rng.randrange(5, 7200)}
    return {"method": rng.choice(("password", "sso", "magic link"))}


def generate_events(
    count: int,
    start: dt.date,
    days: int,
    seed: int = 1,
    late_fraction: float = 0.0,
    *,
    missing_insert_id_fraction: float = 0.03,
    missing_processing_fraction: float = 0.01,
    users: int | None = None,
    huge_int_fraction: float | None = None,
) -> list[FakeEvent]:
    """Make a reproducible event set over the UTC days [start, start+days), sorted by true time.

    The content depends only on (count, start, days, seed); late_fraction only changes which events get a
    processing time hours to days after their event time, so the same seed with and without late arrivals
    yields the same events.

    `huge_int_fraction`: None (the default) leaves the awkward values as drawn, so about 12% of events
    hold an integer beyond 64 bits (`huge_int`), far more than real projects send. A number sets that
    share instead: every `huge_int` drawn becomes 2**63 - 1 (an integer that fits, same key), and each
    event holds one of HUGE_INTS with this probability, from a draw of its own; everything else is the
    same event set as without it.
    """
    if huge_int_fraction is not None and not 0.0 <= huge_int_fraction <= 1.0:
        raise ValueError("huge_int_fraction must be within [0, 1]")
    if count < 0 or days <= 0:
        raise ValueError("count must be >= 0 and days > 0")
    rng = random.Random(seed)
    timing = random.Random(f"{seed}/timing")
    huge = random.Random(f"{seed}/huge")  # drawn from only when huge_int_fraction is set
    users = users or max(1, count // 5)
    first_ms = _day_start_ms(start)
    span_ms = days * _MS_PER_DAY
    events: list[FakeEvent] = []
    for index in range(count):
        name = rng.choices(EVENT_NAMES, _NAME_WEIGHTS)[0]
        time_ms = first_ms + rng.randrange(span_ms)
        props: dict[str, Any] = {"distinct_id": _distinct_id(rng, users)}
        props.update(_merge_ids(props["distinct_id"], index))
        insert_id = f"{rng.getrandbits(128):032x}"
        if rng.random() >= missing_insert_id_fraction:
            props["$insert_id"] = insert_id
        city = rng.randrange(len(_CITIES))
        props.update(
            {
                "$import": rng.random() < 0.2,
                "mp_lib": rng.choice(_LIBS),
                "$os": rng.choice(_OSES),
                "$browser": rng.choice(_BROWSERS),
                "$city": _CITIES[city],
                "mp_country_code": _COUNTRIES[city],
                "$current_url": f"https://shop.example.com{rng.choice(_PAGES)}?utm_source=news&id={index}",
                "$screen_width": rng.choice((390, 1280, 1440, 1920)),
                "plan": rng.choice(_PLANS),
            }
        )
        props.update(_name_properties(rng, name))
        for _ in range(rng.choice((0, 1, 1, 2))):
            key, value = rng.choice(AWKWARD_VALUES)
            props[key] = value
        key, value = AWKWARD_VALUES[index % len(AWKWARD_VALUES)]
        props[key] = value
        if huge_int_fraction is not None:
            if "huge_int" in props:
                props["huge_int"] = _HUGE_STAND_IN
            if huge.random() < huge_int_fraction:
                props["huge_int"] = HUGE_INTS[index % len(HUGE_INTS)]
        # Fixed number of timing draws per event, so late_fraction does not disturb anything else.
        missing, late, normal_delay, late_delay = timing.random(), timing.random(), timing.random(), timing.random()
        processing_ms: int | None
        if missing < missing_processing_fraction:
            processing_ms = None
        elif late < late_fraction:
            processing_ms = time_ms + 2 * 3_600_000 + int(late_delay * 4 * _MS_PER_DAY)
        else:
            processing_ms = time_ms + 1_000 + int(normal_delay * 600_000)
        events.append(FakeEvent(name=name, time_ms=time_ms, properties=props, processing_ms=processing_ms))
    events.sort(key=lambda e: e.time_ms)
    return events
