"""Where each Mixpanel API answers: its host per region, its path, and api_base_url over every API."""

import datetime as dt

import pytest

from source_mixpanel_export.api import ENGAGE_ENDPOINT, EXPORT_ENDPOINT, Endpoint
from source_mixpanel_export.config import parse_config

NOW = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
SA = {"option_title": "Service Account", "username": "u", "secret": "s3cret", "project_id": 7}


def config(**overrides):
    return parse_config({"credentials": dict(SA), "start_date": "2026-11-01", **overrides}, now=NOW)


@pytest.mark.parametrize(
    "region,export,engage",
    [
        ("US", "https://data.mixpanel.com/api/2.0/export", "https://mixpanel.com/api/query/engage"),
        ("EU", "https://data-eu.mixpanel.com/api/2.0/export", "https://eu.mixpanel.com/api/query/engage"),
        ("IN", "https://data-in.mixpanel.com/api/2.0/export", "https://in.mixpanel.com/api/query/engage"),
    ],
)
def test_given_region_when_urls_are_made_then_each_api_has_its_own_host(region, export, engage):
    """The export API answers on the data* hosts, the Query API (engage) on the region's mixpanel.com host."""
    cfg = config(region=region)
    assert EXPORT_ENDPOINT.url(cfg) == export
    assert ENGAGE_ENDPOINT.url(cfg) == engage


@pytest.mark.parametrize("region", ["US", "EU", "IN"])
def test_given_region_when_parsed_then_the_configs_base_url_is_the_export_apis_host(region):
    """config.py's export host and api.py's agree: a region's default is never taken for an override."""
    cfg = config(region=region)
    assert cfg.base_url + EXPORT_ENDPOINT.path == EXPORT_ENDPOINT.url(cfg) == cfg.export_url


@pytest.mark.parametrize("region", ["US", "EU", "IN"])
def test_given_api_base_url_when_urls_are_made_then_it_replaces_the_host_of_every_api(region):
    """One base URL (a proxy, the fake) serves both paths, whatever the region."""
    cfg = config(region=region, api_base_url="http://127.0.0.1:8080/")
    assert EXPORT_ENDPOINT.url(cfg) == "http://127.0.0.1:8080/api/2.0/export"
    assert ENGAGE_ENDPOINT.url(cfg) == "http://127.0.0.1:8080/api/query/engage"


def test_given_an_endpoint_when_its_url_is_made_then_the_path_follows_the_base_unchanged():
    """A new endpoint is data: a path and a host per region."""
    endpoint = Endpoint("/api/query/events/names", {"US": "mixpanel.com", "EU": "eu.mixpanel.com", "IN": "x.test"})
    assert endpoint.url(config(region="IN")) == "https://x.test/api/query/events/names"
    assert endpoint.url(config(api_base_url="https://proxy.example.com:8443")) == (
        "https://proxy.example.com:8443/api/query/events/names"
    )
