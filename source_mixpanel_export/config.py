"""The connector's settings: parsed and checked once into a frozen object that holds every default.

Everything downstream takes a `Config`; nothing else reads the raw config dict. A config written for
Airbyte's official source-mixpanel is accepted unchanged: keys only it knows are ignored.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

import pendulum

from . import clock
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
    "history_sweep_requests": 2,
    "default_start_days_ago": 365,
}

# Ranges live here and only here; spec.py copies them into the JSON schema. Each maximum is far above
# any useful value but low enough that planning, sleeping and timeouts cannot overflow or stall.
DAY_SECONDS = 86_400
BOUNDS: dict[str, tuple[int | float, int | float]] = {
    "date_window_size": (1, 366),  # days per request: a year at most
    "attribution_window": (0, 366),  # days: a year of late arrivals at most
    "export_lookback_window": (0, 7 * DAY_SECONDS),  # seconds: a week at most
    "requests_per_hour": (1, 100_000),
    "requests_per_second": (1, 100),
    "max_concurrent_requests": (1, 100),  # Mixpanel allows 100 concurrent export queries
    "request_timeout_seconds": (1, DAY_SECONDS),  # a day of silence at most
    "max_retry_seconds": (0, 7 * DAY_SECONDS),  # a week of retries per window at most
    "retry_initial_backoff_seconds": (0, 3600),  # an hour at most
    "window_target_events": (1, 100_000_000),  # events per request: 100M is ~50 GB of JSON
    "history_sweep_requests": (0, 60),  # per sync: an hour of Mixpanel's budget at most
}
# Mixpanel was launched in 2009: no project holds events before it, and an older date is a typo.
FIRST_DATE = dt.date(2009, 1, 1)
END_DATE_AHEAD = dt.timedelta(days=366)  # end_date may lie this far after today (syncs stop at today)
MAX_PROJECT_ID = 2**63 - 1
CREDENTIAL_KINDS = ("Service Account", "Project Secret")
_LOOPBACK_NAMES = ("localhost",)
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")

_DATE_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$",
    re.ASCII,
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
    history_sweep_requests: int = DEFAULTS["history_sweep_requests"]

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
        moment = pendulum.instance(now or clock.utc_now())
        return moment.in_timezone(self.request_timezone).date()

    def secret_forms(self) -> list[str]:
        """Every form the secret can take in a message, longest first so none is masked only in part.

        As is, URL-encoded (both ways, from UTF-8 and Latin-1), JSON-escaped, and the Basic token:
        requests and urllib3 encode `user:password` as Latin-1 on the wire, so that token is what a
        server echoes; the UTF-8 one is added for servers or proxies that re-encode.
        """
        user, password = self.credentials.basic_auth()
        secret = password or user
        pair = f"{user}:{password}"
        forms = {
            secret,
            quote(secret, safe=""),
            quote_plus(secret),
            quote(secret, safe="", encoding="latin-1"),
            quote_plus(secret, encoding="latin-1"),
            json.dumps(secret)[1:-1],
            base64.b64encode(pair.encode("latin-1")).decode(),
            base64.b64encode(pair.encode("utf-8")).decode(),
        }
        return sorted((f for f in forms if f), key=lambda f: (-len(f), f))


def parse_config(raw: Mapping[str, Any], now: dt.datetime | None = None) -> Config:
    """Validate a raw config dict; raise a config error that names the offending field.

    `now` (default: clock.utc_now) decides what "today" and "the future" are, so tests need no clock.
    """
    if not isinstance(raw, Mapping):
        raise config_error("The config must be a JSON object.")
    moment = pendulum.instance(now or clock.utc_now())
    region = _region(raw.get("region"))
    timezone = _timezone(raw.get("project_timezone"))
    legacy = _boolean(raw, "legacy_local_time")
    request_tz = timezone if legacy else "UTC"
    today = moment.in_timezone(request_tz).date()
    start, start_has_time = _start(raw.get("start_date"), today, request_tz)
    if start > moment:
        raise config_error(f"start_date ({_shown(raw.get('start_date'))}) is in the future; today is {today}.")
    end_day = _end_day(raw.get("end_date"), request_tz, today)
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
        date_window_size=_integer(raw, "date_window_size"),
        attribution_window=_integer(raw, "attribution_window"),
        export_lookback_window=_integer(raw, "export_lookback_window"),
        events=_events(raw.get("events")),
        where=_where(raw.get("where")),
        requests_per_hour=_integer(raw, "requests_per_hour"),
        requests_per_second=_integer(raw, "requests_per_second"),
        max_concurrent_requests=_integer(raw, "max_concurrent_requests"),
        request_timeout_seconds=_number(raw, "request_timeout_seconds"),
        max_retry_seconds=_number(raw, "max_retry_seconds"),
        retry_initial_backoff_seconds=_number(raw, "retry_initial_backoff_seconds"),
        skip_bad_lines=_boolean(raw, "skip_bad_lines"),
        window_target_events=_integer(raw, "window_target_events"),
        history_sweep_requests=_integer(raw, "history_sweep_requests"),
    )


def _credentials(raw: Mapping[str, Any]) -> Credentials:
    """The credentials option_title names, or (without one) the kind its keys show."""
    creds = raw.get("credentials")
    if not isinstance(creds, Mapping):
        raise config_error("credentials is required: a Service Account or a Project Secret.")
    kind = creds.get("option_title")
    if kind in (None, ""):
        kind = "Project Secret" if "api_secret" in creds else "Service Account"
    if kind not in CREDENTIAL_KINDS:
        raise config_error(
            f"credentials.option_title must be 'Service Account' or 'Project Secret', got {_shown(kind)}."
        )
    top_project = raw.get("project_id")  # older official configs kept it at the top level
    project = creds.get("project_id", top_project)
    if kind == "Project Secret":
        secret = _sendable(creds.get("api_secret"), "credentials.api_secret", "paste the project's API secret")
        return ProjectSecret(secret, _project_id(project) if project not in (None, "") else None)
    username = _sendable(creds.get("username"), "credentials.username", "give the service account's user name")
    secret = _sendable(creds.get("secret"), "credentials.secret", "give the service account's secret")
    if project in (None, ""):
        raise config_error(
            "credentials.project_id is required with a service account: find it in Mixpanel's "
            "Project Settings > Overview."
        )
    return ServiceAccount(username, secret, _project_id(project))


def _sendable(value: Any, key: str, hint: str) -> str:
    """A credential HTTP Basic auth can carry: a non-empty string of Latin-1 characters (requests and
    urllib3 encode Basic auth as Latin-1; anything else cannot be sent). The value is never echoed."""
    if value is None or value == "":
        raise config_error(f"{key} is empty: {hint}.")
    if not isinstance(value, str):
        raise config_error(f"{key} must be a string, got a {type(value).__name__}.")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise config_error(
            f"{key} holds characters HTTP Basic auth cannot send (only Latin-1 characters can be sent); "
            "check that it was pasted whole and unchanged."
        ) from None
    return value


def _project_id(value: Any) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.strip().isascii() and value.strip().isdigit())
    ):
        raise config_error(f"credentials.project_id must be a whole number, got {_shown(value)}.")
    if isinstance(value, str) and len(value.strip()) > 19:
        raise config_error(f"credentials.project_id is too large, got {_shown(value)}.")
    number = int(value)
    if not 0 < number <= MAX_PROJECT_ID:
        raise config_error(f"credentials.project_id must be a positive whole number, got {_shown(number)}.")
    return number


def _region(value: Any) -> str:
    if value in (None, ""):
        return DEFAULTS["region"]
    region = value.upper() if isinstance(value, str) else ""
    if region not in REGION_HOSTS:
        raise config_error(f"region must be one of US, EU, IN; got {_shown(value)}.")
    return region


def _base_url(value: Any, region: str) -> str:
    """`scheme://host[:port]`, https unless the host is this machine (the fake server, tests).

    The value is never echoed: it may hold a password (`https://user:pw@host`).
    """
    if value in (None, ""):
        return REGION_HOSTS[region]
    if not isinstance(value, str):
        raise config_error("api_base_url must be a string like https://host[:port].")
    text = value.strip()
    try:
        parts = urlsplit(text)
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", a port that is no number
        raise config_error(f"api_base_url is not a valid URL ({exc}); it must look like https://host[:port].") from None
    if parts.username is not None or parts.password is not None:
        raise config_error("api_base_url must not hold credentials (user:password@): set them in credentials.")
    if parts.scheme not in ("http", "https"):
        raise config_error(f"api_base_url must start with https:// (scheme {_shown(parts.scheme)} is not supported).")
    if not host or not _valid_host(host):
        raise config_error("api_base_url has no valid host name; it must look like https://host[:port].")
    if parts.path not in ("", "/") or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise config_error(
            "api_base_url must be scheme://host[:port] only, without a path, query or fragment "
            f"(the connector adds {EXPORT_PATH})."
        )
    if port == 0:
        raise config_error("api_base_url: port 0 is not a port to connect to.")
    if parts.scheme == "http" and not _loopback(host):
        raise config_error(
            "api_base_url must use https:// (plain http:// would send the credentials unencrypted); "
            "http:// is accepted only for this machine (localhost, 127.0.0.0/8, ::1)."
        )
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST_RE.match(host)) and len(host) <= 253


def _loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: where an unencrypted request never leaves this machine."""
    if host.lower().rstrip(".") in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _timezone(value: Any) -> str:
    if value in (None, ""):
        return DEFAULTS["project_timezone"]
    name = value if isinstance(value, str) else None
    try:
        if name is None or len(name) > 64:
            raise ValueError(name)
        pendulum.timezone(name)
    except Exception:
        raise config_error(
            f"project_timezone {_shown(value)} is not an IANA timezone name (e.g. UTC, US/Pacific, Europe/Berlin)."
        ) from None
    return name


def _parse_moment(value: Any, key: str, latest: dt.date) -> tuple[dt.datetime, bool]:
    """A date or instant between FIRST_DATE and `latest` (checked on the text first, so no year can
    overflow a timezone conversion)."""
    text = value.strip() if isinstance(value, str) else ""
    if not _DATE_RE.match(text):
        raise config_error(f"{key} must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, got {_shown(value)}.")
    year = int(text[:4])
    if year < FIRST_DATE.year:
        raise config_error(
            f"{key} {_shown(value)} is before {FIRST_DATE}: Mixpanel holds no events that old. "
            "Give a date from the project's first events on."
        )
    if year > latest.year:
        raise config_error(f"{key} {_shown(value)} lies too far in the future (at most {latest}).")
    try:
        parsed = pendulum.parse(text, tz="UTC")
        moment = parsed.in_timezone("UTC")  # type: ignore[union-attr]
    except Exception:
        raise config_error(f"{key} is not a valid date: {_shown(value)}.") from None
    if moment.date() < FIRST_DATE:
        raise config_error(f"{key} {_shown(value)} is before {FIRST_DATE}: Mixpanel holds no events that old.")
    return moment, len(text) > 10


def _start(value: Any, today: dt.date, timezone: str) -> tuple[dt.datetime, bool]:
    """The start instant; a start without a time of day is midnight of that date in the request timezone.

    A legacy project's dates are its own days, so `2024-03-08` must not become 2024-03-07 in US/Pacific.
    """
    if value in (None, ""):
        return _midnight(today - dt.timedelta(days=DEFAULTS["default_start_days_ago"]), timezone), False
    moment, has_time = _parse_moment(value, "start_date", today + dt.timedelta(days=1))
    if has_time and (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
        return moment, True
    if moment.date() > today:
        raise config_error(f"start_date ({moment.date()}) is in the future; today is {today}.")
    return _midnight(moment.date(), timezone), False


def _midnight(day: dt.date, timezone: str) -> dt.datetime:
    """The UTC instant a day begins in a timezone."""
    return pendulum.datetime(day.year, day.month, day.day, tz=timezone).in_timezone("UTC")


def _end_day(value: Any, timezone: str, today: dt.date) -> dt.date | None:
    """The last day to read; at most END_DATE_AHEAD after today (syncs stop at today anyway)."""
    if value in (None, ""):
        return None
    latest = today + END_DATE_AHEAD
    moment, has_time = _parse_moment(value, "end_date", latest)
    day = pendulum.instance(moment).in_timezone(timezone).date() if has_time else moment.date()
    if day > latest:
        raise config_error(f"end_date ({day}) lies too far in the future (at most {latest}).")
    return day


def _integer(raw: Mapping[str, Any], key: str) -> int:
    """A whole number within BOUNDS[key] (a JSON number, or a string of digits as older configs have)."""
    minimum, maximum = BOUNDS[key]
    value = raw.get(key)
    if value is None:
        return int(DEFAULTS[key])
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise config_error(f"{key} must be a whole number between {minimum} and {maximum}, got {_shown(value)}.")
    if not minimum <= value <= maximum:
        raise config_error(f"{key} must be between {minimum} and {maximum}, got {_shown(value)}.")
    return value


def _number(raw: Mapping[str, Any], key: str) -> float:
    """A finite number within BOUNDS[key]: NaN or infinity would disable a timeout or a retry limit."""
    minimum, maximum = BOUNDS[key]
    value = raw.get(key)
    if value is None:
        return float(DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise config_error(f"{key} must be a number between {minimum} and {maximum}, got {_shown(value)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise config_error(f"{key} must be a finite number between {minimum} and {maximum}, got {value}.")
    if not minimum <= value <= maximum:
        raise config_error(f"{key} must be between {minimum} and {maximum}, got {_shown(value)}.")
    return float(value)


def _boolean(raw: Mapping[str, Any], key: str) -> bool:
    value = raw.get(key)
    if value is None:
        return bool(DEFAULTS[key])
    if not isinstance(value, bool):
        raise config_error(f"{key} must be true or false, got {_shown(value)}.")
    return value


def _events(value: Any) -> tuple[str, ...]:
    """Event names. One name may be given as a plain string; a string with commas is refused, since
    Mixpanel would read it as a single (most likely nonexistent) name and the sync would be empty."""
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        if "," in value:
            raise config_error(
                f"events must be a list of event names, got the text {_shown(value)}: write it as a list, "
                'e.g. ["Page View", "Sign Up"].'
            )
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


def _shown(value: Any, limit: int = 60) -> str:
    """A value for an error message, cut short (a config can hold a 4,000-digit number, which even
    repr() refuses to print)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return "a number of more than 60 digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
