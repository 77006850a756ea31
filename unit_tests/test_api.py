"""Where each Mixpanel API answers: its host per region, its path, and api_base_url over every API; the one
request function both APIs use, and reading a body."""

import datetime as dt
import gzip
import tracemalloc

import pytest

from source_mixpanel_export.api import (
    CONNECT_TIMEOUT_SECONDS,
    ENGAGE_ENDPOINT,
    EXPORT_ENDPOINT,
    Deadline,
    Endpoint,
    engage_post,
    export_get,
    read_decoded,
)
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


class _Raw:
    """A response's raw stream: the given pieces, as urllib3 hands them over."""

    def __init__(self, pieces):
        self._pieces = pieces

    def stream(self, amount, decode_content=False):
        yield from self._pieces


class _Response:
    def __init__(self, pieces, headers=None):
        self.raw = _Raw(pieces)
        self.headers = headers or {}


def test_given_a_body_past_the_cap_when_read_decoded_then_bytes_of_exactly_the_cap():
    """The cap cuts inside a piece; what came over the wire is counted for the deadline."""
    watched = Deadline(10)
    body = read_decoded(_Response([b"a" * 10, b"b" * 10, b"c" * 10]), watched, 15)
    assert body == b"a" * 10 + b"b" * 5 and type(body) is bytes
    assert watched.received == 20


def test_given_a_gzipped_body_when_read_decoded_then_inflated():
    """Content-Encoding gzip: the body is inflated here, not by urllib3."""
    wire = gzip.compress(b'{"results": []}')
    body = read_decoded(_Response([wire[:5], wire[5:]], {"Content-Encoding": "gzip"}), Deadline(10), 1 << 20)
    assert body == b'{"results": []}'


def test_given_a_large_body_when_read_decoded_then_no_second_copy_of_it_is_made():
    """The body is handed over as the buffer it was read into: peak memory stays near one body, where
    a bytearray turned into bytes at the end held two."""
    size = 32 << 20
    pieces = [b"x" * (1 << 16)] * (size >> 16)  # one object, repeated: the pieces cost nothing
    tracemalloc.start()
    try:
        body = read_decoded(_Response(pieces), Deadline(10), size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(body) == size and type(body) is bytes
    assert peak < 1.5 * size, f"peak {peak >> 20} MB for a {size >> 20} MB body"


def test_given_each_api_when_its_request_is_sent_then_one_call_with_the_same_auth_stream_timeout_and_no_redirects():
    """export_get and engage_post differ only in method, URL, query and form (api._send)."""
    calls = []

    class Session:
        def request(self, method, url, **kwargs):
            calls.append((method, url, kwargs))
            return object()

    cfg = config(api_base_url="http://127.0.0.1:8080")
    export_get(Session(), cfg, {"from_date": "2026-11-01"}, 42)
    engage_post(Session(), cfg, {"page": "0"}, 42)
    (get, get_url, get_kwargs), (post, post_url, post_kwargs) = calls
    assert (get, get_url, post, post_url) == ("GET", EXPORT_ENDPOINT.url(cfg), "POST", ENGAGE_ENDPOINT.url(cfg))
    assert get_kwargs["params"] == {"from_date": "2026-11-01"} and get_kwargs["data"] is None
    assert post_kwargs["params"] == {"project_id": "7"} and post_kwargs["data"] == {"page": "0"}
    shared = {"auth", "stream", "timeout", "allow_redirects"}
    assert {k: get_kwargs[k] for k in shared} == {k: post_kwargs[k] for k in shared}
    assert get_kwargs["stream"] is True and get_kwargs["allow_redirects"] is False
    assert get_kwargs["timeout"] == (CONNECT_TIMEOUT_SECONDS, 42)
