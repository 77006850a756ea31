"""The connector's settings, each declared once: on the field of the frozen object it is parsed into.

Everything downstream takes a `Config`; nothing else reads the raw config dict. A config written for
Airbyte's official source-mixpanel is accepted unchanged: keys only it knows are ignored.

A declaration (`setting(...)` on a dataclass field) holds a key's default, bounds, title and description,
and the field's annotation its type. parse_config, the spec's JSON schema and the guide's configuration
table (both in spec.py) are made from the declarations. Pydantic's `Field(...)` would hold the same, but
its schema is not the spec's shape without rework (a title on every field, optional fields as
`anyOf: [..., null]`, the credentials' oneOf as `$ref`s with a discriminator), its lax validation accepts
what this parser refuses ("yes" as true, 30.0 as 30), and its errors would need translating anyway.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
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
DAY_SECONDS = 86_400
# Mixpanel was launched in 2009: no project holds events before it, and an older date is a typo.
FIRST_DATE = dt.date(2009, 1, 1)
END_DATE_AHEAD = dt.timedelta(days=366)  # end_date may lie this far after today (syncs stop at today)
DEFAULT_START_DAYS = 365  # without start_date a sync starts this many days ago, like the official connector's
PROJECT_ID_BOUNDS = (1, 2**63 - 1)  # Mixpanel's ids are 64-bit
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"
_DATE_RE = re.compile(DATE_PATTERN, re.ASCII)
_LOOPBACK_NAMES = ("localhost",)
_HOST_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$")


@dataclass(frozen=True)
class Setting:
    """One config key as the spec's form, the guide and the parser know it; its type is its field's.

    A key with neither a default nor `shown` is required. The default is not the dataclass field's own, so a
    key parse_config does not fill in fails every parse at once instead of keeping its default unseen.
    """

    title: str
    description: str
    default: Any = MISSING
    bounds: tuple[int | float, int | float] | None = None  # (minimum, maximum), both allowed
    key: str | None = None  # the config key, when the field is named otherwise
    shown: str | None = None  # a default that is no fixed value, in words ("today")
    options: Mapping[str, type] = field(default_factory=dict)  # an object's shapes, by option_title (oneOf)
    schema: Mapping[str, Any] = field(default_factory=dict)  # more JSON-schema keywords: enum, pattern, ...


def setting(title: str, default: Any = MISSING, **declared: Any) -> Any:
    """A dataclass field that declares a config key (the keywords are Setting's fields); a secret, one whose
    schema says `airbyte_secret`, is kept out of the repr too."""
    declaration = Setting(title, default=default, **declared)
    return field(repr=not declaration.schema.get("airbyte_secret"), metadata={"setting": declaration})


def declared(cls: type) -> list[tuple[str, Field[Any], Setting]]:
    """The keys a dataclass declares, in order: (config key, field, declaration)."""
    found = [(f, f.metadata["setting"]) for f in fields(cls) if "setting" in f.metadata]
    return [(s.key or f.name, f, s) for f, s in found]


@dataclass(frozen=True)
class ServiceAccount:
    """Recommended credentials: a Mixpanel service account, which also names the project."""

    username: str = setting(
        "Username", description="Service account user name (Organization Settings > Service Accounts)."
    )
    secret: str = setting("Secret", description="The service account's secret.", schema={"airbyte_secret": True})
    project_id: int = setting(
        "Project ID", bounds=PROJECT_ID_BOUNDS, description="Your project's id (Project Settings > Overview)."
    )

    def basic_auth(self) -> tuple[str, str]:
        """The (user, password) pair for HTTP Basic auth."""
        return (self.username, self.secret)


@dataclass(frozen=True)
class ProjectSecret:
    """Deprecated credentials (Mixpanel retires them on 2027-03-03): the project's API secret."""

    api_secret: str = setting(
        "Project Secret", description="The project's API secret (Project Settings > Overview).",
        schema={"airbyte_secret": True},
    )
    project_id: int | None = None  # not in the form: configs of the official connector may hold it

    def basic_auth(self) -> tuple[str, str]:
        """The secret is the user name and the password is empty."""
        return (self.api_secret, "")


Credentials = ServiceAccount | ProjectSecret
CREDENTIAL_OPTIONS: dict[str, type] = {"Service Account": ServiceAccount, "Project Secret": ProjectSecret}


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting the connector acts on, validated and with defaults filled in.

    The fields declared with `setting` are the config keys, in the order of the spec's form. Each maximum
    is far above any useful value but low enough that planning, sleeping and timeouts cannot overflow or stall.
    """

    credentials: Credentials = setting(
        "Authentication", options=CREDENTIAL_OPTIONS, schema={"type": "object"},
        description="A service account (recommended) or the project's API secret (deprecated by Mixpanel, "
        "retired on 2027-03-03).",
    )
    region: str = setting(
        "Data residency", "US", schema={"enum": list(REGION_HOSTS)},
        description="Where the project's data lives (Project Settings > Overview > Data Residency): `US` "
        "(data.mixpanel.com), `EU` (data-eu.mixpanel.com) or `IN` (data-in.mixpanel.com), in any case "
        "(`eu` is `EU`).",
    )
    start: dt.datetime = setting(  # a UTC instant
        "Start date", key="start_date", shown=f"{DEFAULT_START_DAYS} days ago",
        schema={"type": "string", "pattern": DATE_PATTERN, "examples": ["2024-01-01", "2024-01-01T00:00:00Z"]},
        description="The first day of events to replicate, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`, from "
        f"{FIRST_DATE} (Mixpanel's launch) to today. With a time of day, events of that first day before "
        "it are left out.",
    )
    start_has_time: bool  # a start_date with a time of day: events before it are dropped
    end_day: dt.date | None = setting(  # inclusive, in the request timezone
        "End date", None, key="end_date", shown="today",
        schema={"type": "string", "pattern": DATE_PATTERN, "examples": ["2024-12-31"]},
        description=f"The last day of events to replicate (inclusive), from {FIRST_DATE} to a year after "
        "today. Leave it empty for a connection that keeps up with new data.",
    )
    project_timezone: str = setting(
        "Project timezone", "UTC", schema={"examples": ["UTC", "US/Pacific", "Europe/Berlin"]},
        description="The 'Timezone' shown in Mixpanel's Project Settings > Overview, as an IANA name (e.g. "
        "US/Pacific, Europe/Berlin). Used only when 'Project created before 2023' (`legacy_local_time`) is "
        "on. If that timezone was ever changed, events ingested before the change keep the old offset.",
    )
    legacy_local_time: bool = setting(
        "Project created before 2023 (times stored in project timezone)", False,
        description="Look at 'Date Created' in Mixpanel's Project Settings > Overview. Created before "
        "1 January 2023: turn this on and set Project timezone - Mixpanel reads export dates in that "
        "timezone and stores event times as its local time, which the connector converts to true UTC. "
        "Created since: leave off (dates and times are UTC). `check` tells you if this looks wrong.",
    )
    date_window_size: int = setting(
        "Days per request", 30, bounds=(1, 366),  # a year at most
        description="How many days of events one export request asks for. A window Mixpanel cannot answer "
        "in time is split automatically (down to one hour).",
    )
    attribution_window: int = setting(
        "Attribution window (days)", 5, bounds=(0, 366),  # a year of late arrivals at most
        description="Events Mixpanel processes up to this many days after they happened are picked up by the "
        "next incremental sync, which re-reads those days keeping only events processed since the previous "
        "sync. Mixpanel's `/track` accepts events up to 5 days old; raise it if you `/import` older events.",
    )
    export_lookback_window: int = setting(
        "Lookback (seconds)", 0, bounds=(0, 7 * DAY_SECONDS),  # a week at most
        description="Extra safety margin subtracted from the incremental watermark, for events Mixpanel "
        "makes visible late. 0 is right for most projects.",
    )
    events: tuple[str, ...] = setting(
        "Events", (), shown="all events", schema={"items": {"type": "string"}},
        description="Only export these event names.",
    )
    where: str | None = setting(
        "Filter expression", None, shown="no filter", schema={"examples": ['properties["$os"] == "iOS"']},
        description="A Mixpanel [segmentation expression](https://developer.mixpanel.com/reference/"
        'segmentation-expressions) events must match, e.g. `properties["$os"] == "iOS"`.',
    )
    base_url: str = setting(  # scheme://host[:port]
        "API base URL (advanced)", key="api_base_url", shown="the region's host",
        description="Overrides `scheme://host[:port]` of every request (a corporate proxy, a test server); "
        "no path. https:// is required except for this machine (localhost, 127.0.0.0/8, ::1).",
    )
    requests_per_hour: int = setting(
        "Export queries per hour", 60, bounds=(1, 100_000),
        description="Export queries this connection sends per hour. Mixpanel allows 60 per project; raise "
        "it only if your plan allows more.",
    )
    requests_per_second: int = setting(
        "Export queries per second", 3, bounds=(1, 100),
        description="Export queries per second. Mixpanel allows 3 per project.",
    )
    max_concurrent_requests: int = setting(
        "Concurrent requests", 3, bounds=(1, 100),  # Mixpanel allows 100 concurrent export queries
        description="Windows downloaded at once, ahead of the one being emitted. Each is held on local disk "
        "until emitted.",
    )
    request_timeout_seconds: float = setting(
        "Read timeout (seconds)", 900, bounds=(1, DAY_SECONDS),  # a day of silence at most
        description="How long a response may stay silent before the attempt is retried.",
    )
    max_retry_seconds: float = setting(
        "Retry budget per window (seconds)", 1800, bounds=(0, 7 * DAY_SECONDS),  # a week of retries at most
        description="How long one window may keep failing (429, 5xx, cut-off responses) before the sync "
        "stops with an error. Everything delivered before is checkpointed.",
    )
    retry_initial_backoff_seconds: float = setting(
        "First retry wait (seconds)", 2.0, bounds=(0, 3600),  # an hour at most
        description="The first wait of the exponential backoff (doubles each attempt, capped at 5 minutes). "
        "A `Retry-After` header of more than 0 seconds takes precedence (0, negative or a past date: the "
        "backoff).",
    )
    skip_bad_lines: bool = setting(
        "Skip lines that are not JSON", False,
        description="Off: a line Mixpanel sends that is not a JSON event (after one retry of its window) "
        "fails the sync. On: such lines are counted, logged and skipped.",
    )
    window_target_events: int = setting(
        "Events per request (advanced)", 1_000_000, bounds=(1, 100_000_000),  # 100M events: ~50 GB of JSON
        description="About how many events one export request should return. Days are grouped into "
        "requests, or one day is cut into pieces, by the volume the requests so far returned, up to 'Days "
        "per request'. Lower it if windows take too long or too much temporary disk (about a tenth of "
        "their JSON size each).",
    )
    history_sweep_requests: int = setting(
        "History sweep requests per sync", 2, bounds=(0, 60),  # an hour of Mixpanel's budget at most
        description="Incremental syncs spend this many extra export requests re-reading older, already "
        "synced days for events that arrived later than the attribution window (imports, devices offline "
        "for weeks), oldest-checked days first, in blocks of (Days per request - Attribution window - 1, "
        "at least 1) days: a sweep of all history takes about (history days / block days) / this many "
        "syncs. 0 turns the sweep off. Skipped when the hourly budget is short.",
    )
    recent_first_days: int = setting(
        "Recent days first", 30, bounds=(0, 3660),  # ten years at most
        description="How many of the latest days a first sync (or one after a reset) reads and checkpoints "
        "first when the start date lies further back; it then reads the older days newest first (the "
        "backfill). A later sync reads its new days first, then goes on with the backfill where it stopped. "
        "Only the order of the records changes. 0 reads from the start date forward.",
    )
    profile_properties: tuple[str, ...] = setting(
        "Profile properties", (), shown="all properties", schema={"items": {"type": "string"}},
        description="`profiles` stream: only these profile properties (Mixpanel's `output_properties`); "
        "`$last_seen` is always added, since it places each profile in the ranges it is read by.",
    )
    profile_cohort_id: int | None = setting(
        "Profile cohort ID", None, shown="every profile", bounds=PROJECT_ID_BOUNDS,
        description="`profiles` stream: only the members of this cohort (its id in Mixpanel's Cohorts page).",
    )
    profile_requests_per_hour: int = setting(
        "Query API queries per hour", 60, bounds=(1, 100_000),
        description="`profiles` stream: Query API queries this connection sends per hour, a budget of its own "
        "beside the export's. Mixpanel allows 60 per project; each query returns up to 1,000 profiles.",
    )
    profile_range_pages: int = setting(
        "Profile pages per range (advanced)", 25, bounds=(1, 1000),
        description="`profiles` stream: about how many pages of 1,000 profiles one range of `$last_seen` holds. "
        "A sync checkpoints after each range, and a stopped sync reads its range again from the start.",
    )
    profile_sweep_requests: int = setting(
        "Profile sweep requests per sync", 10, bounds=(0, 60),  # an hour of the Query API's budget at most
        description="`profiles` stream: incremental syncs spend up to this many extra Query API queries "
        "re-reading all profiles a part at a time, so that changes `$last_seen` does not show (edits in "
        "Mixpanel's UI, updates with `$ignore_time`) arrive within about (profiles / (1,000 x (this - 2))) "
        "syncs. 0 turns it off; otherwise at least 3.",
    )

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


DEFAULTS: dict[str, Any] = {key: s.default for key, _, s in declared(Config) if s.default is not MISSING}
_PLAIN_TYPES = ("int", "float", "bool")  # parsed alike (_plain), from their declaration alone


def parse_config(raw: Mapping[str, Any], now: dt.datetime | None = None) -> Config:
    """Validate a raw config dict; raise a config error that names the offending field.

    `now` (default: clock.utc_now) decides what "today" and "the future" are, so tests need no clock.
    """
    if not isinstance(raw, Mapping):
        raise config_error("The config must be a JSON object.")
    moment = pendulum.instance(now or clock.utc_now())
    region = _region(raw.get("region"))
    timezone = _timezone(raw.get("project_timezone"))
    plain = {
        f.name: _plain(raw.get(key), key, f.type, s.bounds, s.default)
        for key, f, s in declared(Config)
        if f.type in _PLAIN_TYPES
    }
    if plain["profile_sweep_requests"] in (1, 2):  # each range it reads costs a page 0 and a page of slack
        raise config_error(
            f"profile_sweep_requests must be 0 (no sweep) or from 3 to 60, got {plain['profile_sweep_requests']}."
        )
    request_tz = timezone if plain["legacy_local_time"] else "UTC"
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
        start=start,
        start_has_time=start_has_time,
        end_day=end_day,
        project_timezone=timezone,
        events=_names(raw.get("events"), "events", "event"),
        profile_properties=_names(raw.get("profile_properties"), "profile_properties", "property"),
        profile_cohort_id=_cohort(raw.get("profile_cohort_id")),
        where=_where(raw.get("where")),
        base_url=_base_url(raw.get("api_base_url"), region),
        **plain,
    )


def _plain(value: Any, key: str, kind: Any, bounds: Any = None, default: Any = None) -> Any:
    """true or false (kind "bool"), or a number within `bounds`: for "int" a whole number (a JSON number, or a
    string of digits as older configs have), for "float" a finite one (NaN or infinity would disable a
    timeout or a retry limit). `default` when the key is absent."""
    if value is None:
        value = default
    elif kind == "bool":
        if not isinstance(value, bool):
            raise config_error(f"{key} must be true or false, got {_shown(value)}.")
    else:
        minimum, maximum = bounds
        if kind == "int" and isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int if kind == "int" else int | float):
            what = "a whole number" if kind == "int" else "a number"
            raise config_error(f"{key} must be {what} between {minimum} and {maximum}, got {_shown(value)}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise config_error(f"{key} must be a finite number between {minimum} and {maximum}, got {value}.")
        if not minimum <= value <= maximum:
            raise config_error(f"{key} must be between {minimum} and {maximum}, got {_shown(value)}.")
    return float(value) if kind == "float" else value


def _project_id(value: Any) -> int:
    return int(_plain(value, "credentials.project_id", "int", PROJECT_ID_BOUNDS))


def _credentials(raw: Mapping[str, Any]) -> Credentials:
    """The credentials option_title names, or (without one) the kind its keys show."""
    creds = raw.get("credentials")
    if not isinstance(creds, Mapping):
        raise config_error("credentials is required: a Service Account or a Project Secret.")
    kind = creds.get("option_title")
    if kind in (None, ""):
        kind = "Project Secret" if "api_secret" in creds else "Service Account"
    if kind not in CREDENTIAL_OPTIONS:
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


def _region(value: Any) -> str:
    if value in (None, ""):
        return DEFAULTS["region"]
    region = value.upper() if isinstance(value, str) else ""
    if region not in REGION_HOSTS:
        raise config_error(f"region must be one of {', '.join(REGION_HOSTS)}; got {_shown(value)}.")
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
        return _midnight(today - dt.timedelta(days=DEFAULT_START_DAYS), timezone), False
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


def _names(value: Any, key: str, what: str) -> tuple[str, ...]:
    """Event or property names. One name may be given as a plain string; a string with commas is refused,
    since Mixpanel would read it as a single (most likely nonexistent) name and the sync would be empty."""
    if value in (None, "", []):
        return ()
    if isinstance(value, str):
        if "," in value:
            example = '["Page View", "Sign Up"]' if what == "event" else '["$email", "plan"]'
            raise config_error(
                f"{key} must be a list of {what} names, got the text {_shown(value)}: write it as a list, "
                f"e.g. {example}."
            )
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise config_error(f"{key} must be a list of {what} names (non-empty strings).")
    return tuple(value)


def _cohort(value: Any) -> int | None:
    if value in (None, ""):
        return None
    return int(_plain(value, "profile_cohort_id", "int", PROJECT_ID_BOUNDS))


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
