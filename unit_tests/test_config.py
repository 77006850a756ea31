"""Config parsing: defaults, official-connector configs, and errors that name the field."""

import datetime as dt

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export.config import ProjectSecret, ServiceAccount, parse_config

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
SA = {"option_title": "Service Account", "username": "u", "secret": "s3cret", "project_id": 7}


def config(**overrides):
    raw = {"credentials": dict(SA), "start_date": "2026-11-01"}
    raw.update(overrides)
    return raw


def error_of(raw) -> str:
    with pytest.raises(AirbyteTracedException) as info:
        parse_config(raw, now=NOW)
    assert info.value.failure_type == FailureType.config_error
    return info.value.message


def test_given_minimal_service_account_config_when_parsed_then_defaults_are_filled():
    """Every setting has its default after parsing."""
    cfg = parse_config(config(), now=NOW)
    assert cfg.credentials == ServiceAccount("u", "s3cret", 7)
    assert cfg.region == "US" and cfg.export_url == "https://data.mixpanel.com/api/2.0/export"
    assert (cfg.date_window_size, cfg.attribution_window, cfg.export_lookback_window) == (30, 5, 0)
    assert cfg.project_timezone == "UTC" and not cfg.legacy_local_time
    assert cfg.start_day() == dt.date(2026, 11, 1) and cfg.end_day is None and not cfg.start_has_time


def test_given_official_connector_config_when_parsed_then_accepted_unchanged():
    """A config written for Airbyte's official source-mixpanel works, its own keys ignored."""
    raw = {
        "credentials": {"option_title": "Project Secret", "api_secret": "abc"},
        "project_id": 99,
        "attribution_window": 5,
        "project_timezone": "US/Pacific",
        "select_properties_by_default": True,
        "start_date": "2024-01-01T00:00:00Z",
        "region": "EU",
        "date_window_size": 30,
        "page_size": 1000,
        "num_workers": 3,
        "export_lookback_window": 3600,
    }
    cfg = parse_config(raw, now=NOW)
    assert cfg.credentials == ProjectSecret("abc", 99)
    assert cfg.export_url == "https://data-eu.mixpanel.com/api/2.0/export"
    assert cfg.start_day() == dt.date(2024, 1, 1) and not cfg.start_has_time
    assert cfg.export_lookback_window == 3600


@pytest.mark.parametrize(
    "region,host", [("US", "data.mixpanel.com"), ("EU", "data-eu.mixpanel.com"), ("IN", "data-in.mixpanel.com")]
)
def test_given_region_when_parsed_then_export_host_follows(region, host):
    """Each residency has its own export host."""
    assert parse_config(config(region=region), now=NOW).base_url == f"https://{host}"


def test_given_start_date_with_time_when_parsed_then_start_is_an_instant():
    """A start_date with a time of day keeps the time and says so."""
    cfg = parse_config(config(start_date="2026-11-01T06:30:00Z"), now=NOW)
    assert cfg.start == dt.datetime(2026, 11, 1, 6, 30, tzinfo=dt.UTC) and cfg.start_has_time


def test_given_no_start_date_when_parsed_then_one_year_back():
    """Without start_date the sync starts 365 days ago, like the official connector."""
    raw = config()
    del raw["start_date"]
    assert parse_config(raw, now=NOW).start_day() == dt.date(2025, 11, 29)


def test_given_api_base_url_when_parsed_then_it_replaces_the_region_host():
    """api_base_url overrides scheme://host:port and keeps no trailing slash."""
    cfg = parse_config(config(api_base_url="http://127.0.0.1:8080/"), now=NOW)
    assert cfg.export_url == "http://127.0.0.1:8080/api/2.0/export"


def test_given_legacy_project_when_today_is_asked_then_project_timezone_decides():
    """Legacy projects read dates in the project timezone; new ones in UTC."""
    late_evening_pacific = dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)
    legacy = parse_config(config(project_timezone="US/Pacific", legacy_local_time=True), now=NOW)
    modern = parse_config(config(project_timezone="US/Pacific"), now=NOW)
    assert legacy.today(late_evening_pacific) == dt.date(2026, 11, 28)
    assert modern.today(late_evening_pacific) == dt.date(2026, 11, 29)


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"start_date": "2026-13-01"}, "start_date"),
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2026-10-01"}, "end_date"),
        ({"project_timezone": "Mars/Olympus"}, "project_timezone"),
        ({"region": "APAC"}, "region"),
        ({"date_window_size": 0}, "date_window_size"),
        ({"attribution_window": -1}, "attribution_window"),
        ({"export_lookback_window": -5}, "export_lookback_window"),
        ({"api_base_url": "ftp://x"}, "api_base_url"),
        ({"api_base_url": "https://user:pw@host"}, "api_base_url"),
        ({"events": [1, 2]}, "events"),
        ({"credentials": {"username": "u", "secret": "s"}}, "project_id"),
        ({"credentials": {"username": "u", "secret": "s", "project_id": "abc"}}, "project_id"),
        ({"credentials": {"option_title": "Project Secret", "api_secret": ""}}, "api_secret"),
        ({"credentials": None}, "credentials"),
        ({"skip_bad_lines": "yes"}, "skip_bad_lines"),
    ],
)
def test_given_invalid_value_when_parsed_then_config_error_names_the_field(overrides, field):
    """Bad values fail before any request, naming the field."""
    assert field in error_of(config(**overrides))


def test_given_secret_when_derived_forms_listed_then_basic_token_is_among_them():
    """The Basic-auth token and the URL-encoded secret are masked like the secret."""
    forms = parse_config(config(credentials={**SA, "secret": "a/b c"}), now=NOW).secret_forms()
    assert "a/b c" in forms and "a%2Fb%20c" in forms and "dTphL2IgYw==" in forms


def test_given_legacy_project_behind_utc_when_start_date_is_a_date_then_first_day_is_that_local_day():
    """2024-03-08 is the project's own 2024-03-08, not the UTC instant (which is still 03-07 in Pacific)."""
    raw = config(start_date="2024-03-08", project_timezone="US/Pacific", legacy_local_time=True)
    cfg = parse_config(raw, now=NOW)
    assert cfg.start_day() == dt.date(2024, 3, 8) and not cfg.start_has_time
