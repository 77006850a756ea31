"""The connection specification shown by `spec`; defaults and ranges come from config.DEFAULTS and
config.BOUNDS, never restated, so the form a user fills in allows exactly what parse_config accepts."""

from __future__ import annotations

from typing import Any

from airbyte_cdk.models import ConnectorSpecification

from .config import BOUNDS, DEFAULTS, FIRST_DATE

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _ranged(kind: str, title: str, key: str, description: str, order: int) -> dict[str, Any]:
    """A number setting with its default and its range from config.py."""
    minimum, maximum = BOUNDS[key]
    return {
        "title": title,
        "type": kind,
        "minimum": minimum,
        "maximum": maximum,
        "default": DEFAULTS[key],
        "description": description,
        "order": order,
    }


def _int(title: str, key: str, description: str, order: int) -> dict[str, Any]:
    return _ranged("integer", title, key, description, order)


def _number(title: str, key: str, description: str, order: int) -> dict[str, Any]:
    return _ranged("number", title, key, description, order)


CONNECTION_SPECIFICATION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Mixpanel Raw Event Export",
    "type": "object",
    "required": ["credentials"],
    "additionalProperties": True,
    "properties": {
        "credentials": {
            "title": "Authentication",
            "description": "A service account (recommended) or the project's API secret (deprecated by "
            "Mixpanel, retired on 2027-03-03).",
            "type": "object",
            "order": 0,
            "oneOf": [
                {
                    "title": "Service Account",
                    "type": "object",
                    "required": ["username", "secret", "project_id"],
                    "properties": {
                        "option_title": {"type": "string", "const": "Service Account", "order": 0},
                        "username": {
                            "title": "Username",
                            "type": "string",
                            "description": "Service account user name (Organization Settings > Service Accounts).",
                            "order": 1,
                        },
                        "secret": {
                            "title": "Secret",
                            "type": "string",
                            "airbyte_secret": True,
                            "description": "The service account's secret.",
                            "order": 2,
                        },
                        "project_id": {
                            "title": "Project ID",
                            "type": "integer",
                            "minimum": 1,
                            "description": "Your project's id (Project Settings > Overview).",
                            "order": 3,
                        },
                    },
                },
                {
                    "title": "Project Secret",
                    "type": "object",
                    "required": ["api_secret"],
                    "properties": {
                        "option_title": {"type": "string", "const": "Project Secret", "order": 0},
                        "api_secret": {
                            "title": "Project Secret",
                            "type": "string",
                            "airbyte_secret": True,
                            "description": "The project's API secret (Project Settings > Overview).",
                            "order": 1,
                        },
                    },
                },
            ],
        },
        "region": {
            "title": "Data residency",
            "type": "string",
            "enum": ["US", "EU", "IN"],
            "default": DEFAULTS["region"],
            "description": "Where the project's data lives: US (data.mixpanel.com), EU (data-eu) or "
            "IN (data-in). Project Settings > Overview > Data Residency.",
            "order": 1,
        },
        "start_date": {
            "title": "Start date",
            "type": "string",
            "pattern": DATE_PATTERN,
            "examples": ["2024-01-01", "2024-01-01T00:00:00Z"],
            "description": "The first day of events to replicate, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, from "
            f"{FIRST_DATE} (Mixpanel's launch) to today. Default: {DEFAULTS['default_start_days_ago']} days ago.",
            "order": 2,
        },
        "end_date": {
            "title": "End date",
            "type": "string",
            "pattern": DATE_PATTERN,
            "examples": ["2024-12-31"],
            "description": "The last day of events to replicate (inclusive), from "
            f"{FIRST_DATE} to a year after today. Default: today.",
            "order": 3,
        },
        "project_timezone": {
            "title": "Project timezone",
            "type": "string",
            "default": DEFAULTS["project_timezone"],
            "examples": ["UTC", "US/Pacific", "Europe/Berlin"],
            "description": "The 'Timezone' shown in Mixpanel's Project Settings > Overview, as an IANA name "
            "(e.g. US/Pacific, Europe/Berlin). Used only when 'Project created before 2023' is on. If that "
            "timezone was ever changed, events ingested before the change keep the old offset.",
            "order": 4,
        },
        "legacy_local_time": {
            "title": "Project created before 2023 (times stored in project timezone)",
            "type": "boolean",
            "default": DEFAULTS["legacy_local_time"],
            "description": "Look at 'Date Created' in Mixpanel's Project Settings > Overview. Created before "
            "1 January 2023: turn this on and set Project timezone - Mixpanel reads export dates in that "
            "timezone and stores event times as its local time, which the connector converts to true UTC. "
            "Created since: leave off (dates and times are UTC). `check` tells you if this looks wrong.",
            "order": 5,
        },
        "date_window_size": _int(
            "Days per request", "date_window_size", "How many days of events one export request asks "
            "for. Windows Mixpanel cannot answer in time are split automatically.", 6,
        ),
        "attribution_window": _int(
            "Attribution window (days)", "attribution_window", "Events Mixpanel processes up to this many days after "
            "they happened are picked up by the next incremental sync, which re-reads those days keeping only "
            "events processed since the previous sync.", 7,
        ),
        "export_lookback_window": _int(
            "Lookback (seconds)", "export_lookback_window", "Extra safety margin subtracted from the "
            "incremental watermark, for events Mixpanel makes visible late. 0 is right for most projects.", 8,
        ),
        "events": {
            "title": "Events",
            "type": "array",
            "items": {"type": "string"},
            "description": "Only export these event names. Default: all events.",
            "order": 9,
        },
        "where": {
            "title": "Filter expression",
            "type": "string",
            "examples": ['properties["$os"] == "iOS"'],
            "description": "A Mixpanel segmentation expression events must match.",
            "order": 10,
        },
        "api_base_url": {
            "title": "API base URL (advanced)",
            "type": "string",
            "description": "Overrides scheme://host[:port] of every request (a corporate proxy, a test "
            "server); no path. https:// is required except for this machine (localhost, 127.0.0.0/8, ::1). "
            "Leave empty to use the region's host.",
            "order": 11,
        },
        "requests_per_hour": _int(
            "Export queries per hour", "requests_per_hour", "Mixpanel allows 60 raw-export queries per "
            "hour per project; raise only if your plan allows more.", 12,
        ),
        "requests_per_second": _int(
            "Export queries per second", "requests_per_second", "Mixpanel allows 3 per second.", 13,
        ),
        "max_concurrent_requests": _int(
            "Concurrent requests", "max_concurrent_requests", "Windows downloaded at once, ahead of the "
            "one being emitted (each is held on local disk until emitted).", 14,
        ),
        "request_timeout_seconds": _number(
            "Read timeout (seconds)", "request_timeout_seconds",
            "How long a response may stay silent before the attempt is retried.", 15,
        ),
        "max_retry_seconds": _number(
            "Retry budget per window (seconds)", "max_retry_seconds", "How long one window may keep failing "
            "(429, 5xx, cut-off responses) before the sync stops with an error, after checkpointing everything "
            "delivered.", 16,
        ),
        "retry_initial_backoff_seconds": _number(
            "First retry wait (seconds)", "retry_initial_backoff_seconds", "The first wait of the exponential "
            "backoff (doubles each attempt, capped at 5 minutes); a Retry-After header of more than 0 seconds takes "
            "precedence.", 17,
        ),
        "skip_bad_lines": {
            "title": "Skip lines that are not JSON",
            "type": "boolean",
            "default": DEFAULTS["skip_bad_lines"],
            "description": "Off: a line Mixpanel sends that is not a JSON event (after one retry of its "
            "window) fails the sync. On: such lines are counted, logged and skipped.",
            "order": 18,
        },
        "window_target_events": _int(
            "Events per request (advanced)", "window_target_events", "About how many events one export "
            "request should return. Days are grouped into requests, or one day is cut into pieces, by the "
            "volume the requests so far returned, up to 'Days per request'. Lower it if windows take too "
            "long or too much temporary disk (about a tenth of their JSON size each).", 19,
        ),
        "history_sweep_requests": _int(
            "History sweep requests per sync", "history_sweep_requests", "Incremental syncs spend this "
            "many extra export requests re-reading older, already synced days for events that arrived "
            "later than the attribution window (imports, devices offline for weeks), oldest-checked days "
            "first, in blocks of (Days per request - Attribution window - 1, at least 1) days: a sweep of all "
            "history takes about (history days / block days) / this many syncs. 0 turns the sweep off. "
            "Skipped when the hourly budget is short.",
            20,
        ),
    },
}


def connector_specification() -> ConnectorSpecification:
    """The SPEC message body."""
    return ConnectorSpecification(
        documentationUrl="https://github.com/source-mixpanel-export/source-mixpanel-export/blob/main/docs/mixpanel-export.md",
        connectionSpecification=CONNECTION_SPECIFICATION,
        supportsIncremental=True,
    )
