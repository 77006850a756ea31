"""The connector's settings: parsed and checked once into a frozen object that holds every default.

Everything downstream takes a `Config`; nothing else reads the raw config dict. A config written for
Airbyte's official source-mixpanel is accepted unchanged: keys only it knows are ignored.
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pendulum

from .errors import config_error

REGION_HOSTS = {
    "US": "https://data.mixpanel.com",
    "EU": "https://data-eu.mixpanel.com",
    "IN": "https://data-in.mixpanel.com",
}
EXPORT_PATH = "/api/2.0/export"

# Defaults live here and only here; spec.py reads them from this table.
DEFAULTS: dict[str, Any] = {
    "region": "US",
    "project_timezone": "UTC",
    "legacy_local_time": False,
    "date_window_size": 30,
    "attribution_window": 5,
    "export_lookback_window": 0,
    "requests_per_hour": 60,
    "requests_per_second": 3,
    "max_concurrent_requests": 3,
    "request_timeout_seconds": 900,
    "max_retry_seconds": 1800,
    "retry_initial_backoff_seconds": 2.0,
    "skip_bad_lines": False,
    "window_target_events": 1_000_000,
    "default_start_days_ago": 365,
}

_DATE_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
)


@dataclass(frozen=True)
class ServiceAccount:
    """Recommended credentials: a Mixpanel service account, which also names the project."""

    username: str
    secret: str = field(repr=False)
    project_id: int

    def basic_auth(self) -> tuple[str, str]:
        """The (user, password) pair for HTTP Basic auth."""
        return (self.username, self.secret)


@dataclass(frozen=True)
class ProjectSecret:
    """Deprecated credentials (Mixpanel retires them on 2027-03-03): the project's API secret."""

    api_secret: str = field(repr=False)
    project_id: int | None = None

    def basic_auth(self) -> tuple[str, str]:
        """The secret is the user name and the password is empty."""
        return (self.api_secret, "")


Credentials = ServiceAccount | ProjectSecret


@dataclass(frozen=True)
class Config:
    """Every setting the connector acts on, validated and with defaults filled in."""

    credentials: Credentials
    region: str
    base_url: str
    start: dt.datetime  # UTC instant
    start_has_time: bool  # a start_date with a time of day: events before it are dropped
    end_day: dt.date | None  # inclusive, in the request timezone; None = today
    project_timezone: str
    legacy_local_time: bool
    date_window_size: int
    attribution_window: int
    export_lookback_window: int
    events: tuple[str, ...] = ()
    where: str | None = None
    requests_per_hour: int = DEFAULTS["requests_per_hour"]
    requests_per_second: int = DEFAULTS["requests_per_second"]
    max_concurrent_requests: int = DEFAULTS["max_concurrent_requests"]
    request_timeout_seconds: float = DEFAULTS["request_timeout_seconds"]
    max_retry_seconds: float = DEFAULTS["max_retry_seconds"]
    retry_initial_backoff_seconds: float = DEFAULTS["retry_initial_backoff_seconds"]
    skip_bad_lines: bool = DEFAULTS["skip_bad_lines"]
    window_target_events: int = DEFAULTS["window_target_events"]

    @property
    def export_url(self) -> str:
        """Where the Raw Event Export API answers for this project."""
        return self.base_url + EXPORT_PATH

    @property
    def request_timezone(self) -> str:
        """The timezone Mixpanel reads from_date/to_date in: the project's for legacy projects, else UTC."""
        return self.project_timezone if self.legacy_local_time else "UTC"

    @property
    def project_id(self) -> int | None:
        """The project_id query parameter (required with a service account)."""
        return self.credentials.project_id

    def start_day(self) -> dt.date:
        """The first event date to request, in the request timezone."""
        return pendulum.instance(self.start).in_timezone(self.request_timezone).date()

    def records_not_before(self, first_day: dt.date) -> str | None:
        """For a window from `first_day`: the record time (as records write it) before which events are
        dropped. Only a start_date with a time of day has one, and only its first day's window needs it."""
        if not (self.start_has_time and first_day <= self.start_day()):
            return None
        return self.start.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    @property
    def legacy_timezone(self) -> str | None:
        """The timezone a legacy project's event times are written in, else None (they are UTC)."""
        return self.project_timezone if self.legacy_local_time else None

    def today(self, now: dt.datetime | None = None) -> dt.date:
        """Today as Mixpanel sees it: the last date it accepts as to_date."""
        moment = pendulum.instance(now) if now else pendulum.now("UTC")
        return moment.in_timezone(self.request_timezone).date()

    def secret_forms(self) -> list[str]:
        """Every form a secret could take in a message: as is, URL-encoded, and inside a Basic header."""
        user, password = self.credentials.basic_auth()
        secret = password or user
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return [s for s in {secret, quote(secret, safe=""), token} if s]


def parse_config(raw: Mapping[str, Any], now: dt.datetime | None = None) -> Config:
    """Validate a raw config dict; raise a config error that names the offending field."""
    if not isinstance(raw, Mapping):
        raise config_error("The config must be a JSON object.")
    region = _region(raw.get("region"))
    timezone = _timezone(raw.get("project_timezone"))
    legacy = _boolean(raw, "legacy_local_time")
    request_tz = timezone if legacy else "UTC"
    start, start_has_time = _start(raw.get("start_date"), now, request_tz)
    end_day = _end_day(raw.get("end_date"), request_tz)
    start_day = pendulum.instance(start).in_timezone(request_tz).date()
    if end_day is not None and end_day < start_day:
        raise config_error(f"end_date ({end_day}) is before start_date ({start_day}).")
    return Config(
        credentials=_credentials(raw),
        region=region,
        base_url=_base_url(raw.get("api_base_url"), region),
        start=start,
        start_has_time=start_has_time,
        end_day=end_day,
        project_timezone=timezone,
        legacy_local_time=legacy,
        date_window_size=_integer(raw, "date_window_size", minimum=1),
        attribution_window=_integer(raw, "attribution_window", minimum=0),
        export_lookback_window=_integer(raw, "export_lookback_window", minimum=0),
        events=_events(raw.get("events")),
        where=_where(raw.get("where")),
        requests_per_hour=_integer(raw, "requests_per_hour", minimum=1),
        requests_per_second=_integer(raw, "requests_per_second", minimum=1),
        max_concurrent_requests=_integer(raw, "max_concurrent_requests", minimum=1, maximum=100),
        request_timeout_seconds=_number(raw, "request_timeout_seconds", minimum=1),
        max_retry_seconds=_number(raw, "max_retry_seconds", minimum=0),
        retry_initial_backoff_seconds=_number(raw, "retry_initial_backoff_seconds", minimum=0),
        skip_bad_lines=_boolean(raw, "skip_bad_lines"),
        window_target_events=_integer(raw, "window_target_events", minimum=1, maximum=100_000_000),
    )


def _credentials(raw: Mapping[str, Any]) -> Credentials:
    creds = raw.get("credentials")
    if not isinstance(creds, Mapping):
        raise config_error("credentials is required: a Service Account or a Project Secret.")
    top_project = raw.get("project_id")  # older official configs kept it at the top level
    if "api_secret" in creds or creds.get("option_title") == "Project Secret":
        secret = creds.get("api_secret")
        if not isinstance(secret, str) or not secret:
            raise config_error("credentials.api_secret is empty: paste the project's API secret.")
        project = creds.get("project_id", top_project)
        return ProjectSecret(secret, _project_id(project) if project not in (None, "") else None)
    username, secret = creds.get("username"), creds.get("secret")
    if not isinstance(username, str) or not username:
        raise config_error("credentials.username is empty: give the service account's user name.")
    if not isinstance(secret, str) or not secret:
        raise config_error("credentials.secret is empty: give the service account's secret.")
    project = creds.get("project_id", top_project)
    if project in (None, ""):
        raise config_error(
            "credentials.project_id is required with a service account: find it in Mixpanel's "
            "Project Settings > Overview."
        )
    return ServiceAccount(username, secret, _project_id(project))


def _project_id(value: Any) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())
    ):
        raise config_error(f"credentials.project_id must be a whole number, got {value!r}.")
    number = int(value)
    if number <= 0:
        raise config_error(f"credentials.project_id must be positive, got {number}.")
    return number


def _region(value: Any) -> str:
    if value in (None, ""):
        return DEFAULTS["region"]
    region = str(value).upper()
    if region not in REGION_HOSTS:
        raise config_error(f"region must be one of US, EU, IN; got {value!r}.")
    return region


def _base_url(value: Any, region: str) -> str:
    if value in (None, ""):
        return REGION_HOSTS[region]
    parts = urlsplit(str(value).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config_error(f"api_base_url must look like https://host[:port], got {value!r}.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise config_error("api_base_url must not hold credentials, a query or a fragment.")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _timezone(value: Any) -> str:
    name = DEFAULTS["project_timezone"] if value in (None, "") else str(value)
    try:
        pendulum.timezone(name)
    except Exception:
        raise config_error(
            f"project_timezone {name!r} is not an IANA timezone name (e.g. UTC, US/Pacific, Europe/Berlin)."
        ) from None
    return name


def _parse_moment(value: Any, key: str) -> tuple[dt.datetime, bool]:
    text = str(value).strip()
    if not _DATE_RE.match(text):
        raise config_error(f"{key} must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, got {value!r}.")
    try:
        parsed = pendulum.parse(text, tz="UTC")
    except Exception:
        raise config_error(f"{key} is not a valid date: {value!r}.") from None
    return parsed.in_timezone("UTC"), len(text) > 10  # type: ignore[union-attr]


def _start(value: Any, now: dt.datetime | None, timezone: str) -> tuple[dt.datetime, bool]:
    """The start instant; a start without a time of day is midnight of that date in the request timezone.

    A legacy project's dates are its own days, so `2024-03-08` must not become 2024-03-07 in US/Pacific.
    """
    if value in (None, ""):
        today = (pendulum.instance(now) if now else pendulum.now("UTC")).in_timezone(timezone).date()
        return _midnight(today - dt.timedelta(days=DEFAULTS["default_start_days_ago"]), timezone), False
    moment, has_time = _parse_moment(value, "start_date")
    if has_time and (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        return moment, True
    return _midnight(moment.date(), timezone), False


def _midnight(day: dt.date, timezone: str) -> dt.datetime:
    """The UTC instant a day begins in a timezone."""
    return pendulum.datetime(day.year, day.month, day.day, tz=timezone).in_timezone("UTC")


def _end_day(value: Any, timezone: str) -> dt.date | None:
    if value in (None, ""):
        return None
    moment, has_time = _parse_moment(value, "end_date")
    if not has_time:
        return moment.date()
    return pendulum.instance(moment).in_timezone(timezone).date()


def _integer(raw: Mapping[str, Any], key: str, minimum: int, maximum: int | None = None) -> int:
    value = raw.get(key)
    if value is None:
        return int(DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise config_error(f"{key} must be a whole number, got {value!r}.")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise config_error(f"{key} must be {bound}, got {value}.")
    return value


def _number(raw: Mapping[str, Any], key: str, minimum: float) -> float:
    value = raw.get(key)
    if value is None:
        return float(DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(f"{key} must be a number, got {value!r}.")
    if value < minimum:
        raise config_error(f"{key} must be at least {minimum}, got {value}.")
    return float(value)


def _boolean(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if value is None:
        return bool(DEFAULTS[key])
    if not isinstance(value, bool):
        raise config_error(f"{key} must be true or false, got {value!r}.")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise config_error("events must be a list of event names (non-empty strings).")
    return tuple(value)


def _where(value: Any) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise config_error("where must be a Mixpanel segmentation expression (a string).")
    return value.strip() or None
