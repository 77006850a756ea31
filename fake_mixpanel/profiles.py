"""Fake Mixpanel people profiles and a deterministic generator of awkward ones, for the Engage API of the fake."""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from .data import AWKWARD_VALUES
from .where import UNDEFINED

DistinctId = str | int
_MS_PER_DAY = 86_400_000
LONG_DISTINCT_ID_CHARS = 5_000

# Profile values a client must keep exact: integers past 2**53 (and past 64 bits) and separators JSON allows raw.
BIG_INTS: tuple[int, ...] = (2**53 + 1, 2**63 - 1, -(2**63), 12345678901234567890, 2**64 + 7, 10**30 + 1)
NUMERIC_DISTINCT_IDS: tuple[int, ...] = (4, 2**53 + 1)  # 4 as in Mixpanel's own example; one past float precision
_CITIES = ("San Francisco", "東京", "Москва", "São Paulo", "मुंबई", "Zürich", "서울", "", "Kraków")
_COUNTRIES = ("US", "JP", "RU", "BR", "IN", "CH", "KR", "", "PL")
_ZONES = ("America/Los_Angeles", "Asia/Tokyo", "Europe/Moscow", "America/Sao_Paulo", "Asia/Kolkata", "Europe/Zurich")
_PLANS = ("free", "pro", "enterprise")
_TAGS = ("beta", "vip", "churn-risk", "ünïcödé", "emoji 🎉", "line\u2028separator")


def mixpanel_time(ms: int) -> str:
    """Write an epoch-ms instant the way profiles hold `$created` and `$last_seen`: UTC, no zone, seconds."""
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def dumps_exact(value: Any) -> bytes:
    """JSON with integers of any size kept exact and U+2028 and friends raw, as Mixpanel sends them."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # orjson refuses integers beyond 64 bits; the stdlib keeps them exact
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class FakeProfile:
    """One stored profile; never mutated (an update stores a new one), so a session's snapshot stays as it was."""

    distinct_id: DistinctId
    properties: dict[str, Any] = field(default_factory=dict)
    cohorts: frozenset[int] = frozenset()

    def get(self, name: str) -> Any:
        """Resolve properties["name"] for a where predicate; a missing property is undefined."""
        return self.properties.get(name, UNDEFINED)

    def result(self, output_properties: frozenset[str] | None = None) -> dict[str, Any]:
        """The profile as one item of an Engage answer's `results`, with only the asked-for properties."""
        properties = self.properties
        if output_properties is not None:
            properties = {k: v for k, v in properties.items() if k in output_properties}
        return {"$distinct_id": self.distinct_id, "$properties": properties}

    @cached_property
    def rendered(self) -> bytes:
        """The whole result item as JSON, made once: a profile is served on many pages of many sessions."""
        return dumps_exact(self.result())

    def render(self, output_properties: frozenset[str] | None = None) -> bytes:
        """The result item as JSON, with only the asked-for properties."""
        return self.rendered if output_properties is None else dumps_exact(self.result(output_properties))


def _distinct_id(index: int) -> DistinctId:
    """A distinct_id in one of the shapes projects hold; a few numeric, one 5,000 characters long. Unique."""
    if index < len(NUMERIC_DISTINCT_IDS):
        return NUMERIC_DISTINCT_IDS[index]
    if index == len(NUMERIC_DISTINCT_IDS):
        return ("long-" + "0123456789abcdef" * (LONG_DISTINCT_ID_CHARS // 16 + 1))[:LONG_DISTINCT_ID_CHARS]
    if index % 97 == 0:
        return 1_000_000_000 + index
    shape = index % 4
    if shape == 0:
        return f"user-{index:06d}"
    if shape == 1:
        return f"$device:{index:08x}-7d1c-4f3e-9a0b-{index * 7919:012x}"
    if shape == 2:
        return f"person.{index}@example.com"
    return f"ユーザー-{index}"


def generate_profiles(
    count: int,
    seed: int = 1,
    *,
    now_ms: int,
    days: int = 730,
    missing_last_seen_fraction: float = 0.1,
    cohort_ids: tuple[int, ...] = (1, 2, 3),
) -> list[FakeProfile]:
    """Make `count` reproducible profiles (the same for the same arguments) seen over the `days` up to `now_ms`.

    `$created` and `$last_seen` are Mixpanel-style strings with created <= last_seen <= now; about
    `missing_last_seen_fraction` of the profiles have no `$last_seen`. The first profiles have the numeric
    distinct_ids NUMERIC_DISTINCT_IDS, then the 5,000-character one; every awkward value of data.AWKWARD_VALUES
    and BIG_INTS appears once `count` is large enough. Each profile belongs to some of `cohort_ids`.
    """
    if count < 0 or days <= 0:
        raise ValueError("count must be >= 0 and days > 0")
    rng = random.Random(f"{seed}/profiles")
    span_ms = days * _MS_PER_DAY
    profiles: list[FakeProfile] = []
    for index in range(count):
        created_ms = now_ms - rng.randrange(span_ms)
        last_seen_ms = created_ms + rng.randrange(now_ms - created_ms + 1)
        city = rng.randrange(len(_CITIES))
        props: dict[str, Any] = {
            "$created": mixpanel_time(created_ms),
            "$last_seen": mixpanel_time(last_seen_ms),
            "$email": f"person.{index}@example.com",
            "$name": rng.choice(("Ada Lovelace", "Иван Петров", "山田 太郎", "José Núñez", 'O\'Brien "Bob"')),
            "$city": _CITIES[city],
            "$country_code": _COUNTRIES[city],
            "$timezone": rng.choice(_ZONES),
            "plan": rng.choice(_PLANS),
            "lifetime value": round(rng.uniform(0, 5000), 2),
            "orders": rng.randrange(0, 200),
            "account id": BIG_INTS[index % len(BIG_INTS)],
            "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
            "address": {"street": f"{rng.randrange(1, 999)} Main St", "geo": {"lat": 47.37, "lon": 8.54}},
            "devices": [{"os": rng.choice(("iOS", "Android")), "push": rng.random() < 0.5, "tokens": []}],
        }
        if rng.random() < missing_last_seen_fraction:
            del props["$last_seen"]
        key, value = AWKWARD_VALUES[index % len(AWKWARD_VALUES)]
        props[key] = value
        cohorts = frozenset(c for c in cohort_ids if rng.random() < 0.3)
        profiles.append(FakeProfile(_distinct_id(index), props, cohorts))
    return profiles
