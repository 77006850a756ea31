"""Config parsing: defaults, official-connector configs, and errors that name the field."""

import base64
import datetime as dt
import math
from pathlib import Path

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export.config import Config, ProjectSecret, ServiceAccount, declared, parse_config
from source_mixpanel_export.spec import CONNECTION_SPECIFICATION, settings_table

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


@pytest.mark.parametrize(
    "overrides,field",
    [
        ({"request_timeout_seconds": math.nan}, "request_timeout_seconds"),
        ({"request_timeout_seconds": math.inf}, "request_timeout_seconds"),
        ({"request_timeout_seconds": 1e308}, "request_timeout_seconds"),
        ({"max_retry_seconds": math.nan}, "max_retry_seconds"),
        ({"max_retry_seconds": -math.inf}, "max_retry_seconds"),
        ({"retry_initial_backoff_seconds": math.nan}, "retry_initial_backoff_seconds"),
        ({"retry_initial_backoff_seconds": 3601}, "retry_initial_backoff_seconds"),
        ({"date_window_size": 10**9}, "date_window_size"),
        ({"date_window_size": 2**63}, "date_window_size"),
        ({"date_window_size": 10**5000}, "date_window_size"),
        ({"date_window_size": "9" * 40}, "date_window_size"),
        ({"attribution_window": 367}, "attribution_window"),
        ({"export_lookback_window": 7 * 86400 + 1}, "export_lookback_window"),
        ({"requests_per_hour": 100_001}, "requests_per_hour"),
        ({"requests_per_second": 101}, "requests_per_second"),
        ({"max_concurrent_requests": 101}, "max_concurrent_requests"),
        ({"start_date": "0001-01-01"}, "start_date"),
        ({"start_date": "2008-12-31"}, "start_date"),
        ({"start_date": "2026-11-30"}, "start_date"),
        ({"start_date": "2026-11-29T13:00:00Z"}, "start_date"),
        ({"start_date": "9999-12-31T23:59:59-05:00"}, "start_date"),
        ({"start_date": "\uff12\uff10\uff12\uff14-01-01"}, "start_date"),
        ({"start_date": 20240101}, "start_date"),
        ({"end_date": "0001-01-01"}, "end_date"),
        ({"end_date": "9999-12-31"}, "end_date"),
        ({"region": "MARS"}, "region"),
        ({"region": 5}, "region"),
        ({"project_timezone": 5}, "project_timezone"),
        ({"api_base_url": "http://[::1"}, "api_base_url"),
        ({"api_base_url": "http://127.0.0.1:99999"}, "api_base_url"),
        ({"api_base_url": "http://127.0.0.1:abc"}, "api_base_url"),
        ({"api_base_url": "https://proxy.example.com/mixpanel"}, "api_base_url"),
        ({"api_base_url": "https://host?x=1"}, "api_base_url"),
        ({"api_base_url": "http://data.mixpanel.com"}, "api_base_url"),
        ({"api_base_url": "http://10.0.0.5:8080"}, "api_base_url"),
        ({"api_base_url": "https://ho st"}, "api_base_url"),
        ({"api_base_url": 5}, "api_base_url"),
        ({"events": "Page View,Sign Up"}, "events"),
        ({"events": {"a": 1}}, "events"),
        ({"credentials": {**SA, "option_title": "Bogus"}}, "credentials.option_title"),
        ({"credentials": {**SA, "secret": 12345}}, "credentials.secret"),
        ({"credentials": {**SA, "secret": None}}, "credentials.secret"),
        ({"credentials": {**SA, "username": ["u"]}}, "credentials.username"),
        ({"credentials": {**SA, "project_id": "not-a-number"}}, "credentials.project_id"),
        ({"credentials": {**SA, "project_id": 0}}, "credentials.project_id"),
        ({"credentials": {**SA, "project_id": 2**64}}, "credentials.project_id"),
        ({"credentials": {"option_title": "Project Secret"}}, "credentials.api_secret"),
        ({"credentials": {"option_title": "Project Secret", "api_secret": 7}}, "credentials.api_secret"),
    ],
)
def test_given_hostile_value_when_parsed_then_config_error_names_the_field(overrides, field):
    """Absurd, non-finite, overflowing or unsendable values are config errors naming the field, never crashes."""
    assert field in error_of(config(**overrides))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9", "http://127.9.9.9"])
def test_given_plain_http_to_this_machine_when_parsed_then_accepted(url):
    """http:// is allowed for loopback hosts only (the fake server and tests)."""
    assert parse_config(config(api_base_url=url), now=NOW).base_url == url


def test_given_https_base_url_with_slash_when_parsed_then_normalised_without_path():
    """A trailing slash is not a path; the result is scheme://host[:port]."""
    assert parse_config(config(api_base_url=" https://Proxy.example.com:8443/ "), now=NOW).base_url == (
        "https://proxy.example.com:8443"
    )


@pytest.mark.parametrize("url", ["ftp://u:pw-9f8e@host", "https://u:pw-9f8e@host", "http://u:pw-9f8e@10.0.0.1/x"])
def test_given_base_url_with_a_password_when_refused_then_the_password_is_not_echoed(url):
    """The api_base_url error names the problem, never the userinfo."""
    message = error_of(config(api_base_url=url))
    assert "api_base_url" in message and "pw-9f8e" not in message


def test_given_string_event_without_comma_when_parsed_then_one_event():
    """A single event name may be given as a plain string."""
    assert parse_config(config(events="Page View"), now=NOW).events == ("Page View",)


@pytest.mark.parametrize("title", ["Service Account", "Project Secret", None])
def test_given_option_title_when_parsed_then_it_decides_the_kind(title):
    """option_title picks the credential kind; without it the keys do."""
    creds = {"api_secret": "p"} if title != "Service Account" else dict(SA)
    if title:
        creds["option_title"] = title
    kind = ServiceAccount if title == "Service Account" else ProjectSecret
    assert isinstance(parse_config(config(credentials=creds), now=NOW).credentials, kind)


@pytest.mark.parametrize("field", ["username", "secret"])
def test_given_credential_that_latin1_cannot_carry_when_parsed_then_config_error_without_the_value(field):
    """requests sends Basic auth as Latin-1: a character outside it cannot be sent at all."""
    message = error_of(config(credentials={**SA, field: "geheim-\u20ac-Wert"}))
    assert f"credentials.{field}" in message and "geheim" not in message


@pytest.mark.parametrize(
    "credentials",
    [
        {**SA, "secret": "geheim-\u00fc\u00df-Wert"},
        {"option_title": "Project Secret", "api_secret": "geheim-\u00fc\u00df-Wert"},
    ],
)
def test_given_latin1_secret_when_forms_listed_then_wire_token_and_encodings_are_masked(credentials):
    """The Basic token as requests sends it (Latin-1), its UTF-8 twin and every URL/JSON encoding are listed."""
    cfg = parse_config(config(credentials=credentials), now=NOW)
    user, password = cfg.credentials.basic_auth()
    forms = cfg.secret_forms()
    wire = base64.b64encode(f"{user}:{password}".encode("latin-1")).decode()
    utf8 = base64.b64encode(f"{user}:{password}".encode()).decode()
    expected = {"geheim-\u00fc\u00df-Wert", "geheim-%C3%BC%C3%9F-Wert", "geheim-\\u00fc\\u00df-Wert", wire, utf8}
    assert expected <= set(forms)
    assert [len(f) for f in forms] == sorted((len(f) for f in forms), reverse=True)


def test_given_secret_with_spaces_when_forms_listed_then_both_url_encodings():
    """quote() writes a space %20, quote_plus() '+': a query string may carry either."""
    forms = parse_config(config(credentials={**SA, "secret": "a b/c"}), now=NOW).secret_forms()
    assert "a%20b%2Fc" in forms and "a+b%2Fc" in forms


BOUNDED = [(key, f.type, s.bounds) for key, f, s in declared(Config) if s.bounds]


@pytest.mark.parametrize("key,kind,bounds", BOUNDED, ids=[key for key, _, _ in BOUNDED])
def test_given_declared_bounds_when_parsed_then_both_ends_pass_and_beyond_them_fails(key, kind, bounds):
    """A declared range is the parser's: its ends are accepted, a step beyond either names the key."""
    minimum, maximum = bounds
    step = 1 if kind in ("int", "int | None") else 0.5
    assert getattr(parse_config(config(**{key: minimum}), now=NOW), key) == minimum
    assert getattr(parse_config(config(**{key: maximum}), now=NOW), key) == maximum
    for beyond in (minimum - step, maximum + step):
        assert error_of(config(**{key: beyond})) == f"{key} must be between {minimum} and {maximum}, got {beyond!r}."


def test_given_no_settings_when_parsed_then_each_attribute_is_the_spec_default():
    """What the form shows as a default is what a config without the key gets."""
    cfg = parse_config(config(), now=NOW)
    defaults = {key: p["default"] for key, p in CONNECTION_SPECIFICATION["properties"].items() if "default" in p}
    assert {key: getattr(cfg, key) for key in defaults} == defaults


def test_spec_keys_are_the_declared_keys_in_form_order():
    """Every declared key is in the spec, numbered in declaration order; only credentials is required."""
    properties = CONNECTION_SPECIFICATION["properties"]
    assert list(properties) == [key for key, _, _ in declared(Config)]
    assert [p["order"] for p in properties.values()] == list(range(len(properties)))
    assert CONNECTION_SPECIFICATION["required"] == ["credentials"]
    for key in properties:
        assert properties[key]["type"] in ("integer", "number", "boolean", "string", "array", "object"), key


def test_credential_secrets_are_airbyte_secrets_and_kept_out_of_repr():
    """Both secrets are masked by the CDK (airbyte_secret) and never printed by a repr."""
    service, project = CONNECTION_SPECIFICATION["properties"]["credentials"]["oneOf"]
    assert service["required"] == ["username", "secret", "project_id"] and project["required"] == ["api_secret"]
    assert service["properties"]["secret"]["airbyte_secret"] and project["properties"]["api_secret"]["airbyte_secret"]
    assert "s3cret" not in repr(ServiceAccount("u", "s3cret", 7)) and "abc" not in repr(ProjectSecret("abc"))


def test_guide_configuration_table_is_the_rendered_declarations():
    """docs/mixpanel-export.md's configuration table is spec.settings_table(): paste its output there."""
    guide = (Path(__file__).parents[1] / "docs" / "mixpanel-export.md").read_text(encoding="utf-8")
    section = guide.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    assert table == settings_table()


def test_given_start_today_and_end_within_a_year_when_parsed_then_accepted():
    """start_date today and an end_date up to a year ahead are valid (syncs stop at today)."""
    cfg = parse_config(config(start_date="2026-11-29", end_date="2027-06-30"), now=NOW)
    assert cfg.start_day() == dt.date(2026, 11, 29) and cfg.end_day == dt.date(2027, 6, 30)
