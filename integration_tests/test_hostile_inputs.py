"""Hostile input: every bad setting named by check, discover and read alike, nothing sent for a config
that cannot be valid, untrusted states and catalogs refused, and no form of a secret in any output even
when the server echoes the Authorization header.

The matrices run the console script's `run` in this process (harness.run_in_process: the same code, its
output captured, without 2-3 s of imports per case); the cases in CLI_CASES run the real console script
too, so every command's subprocess path is covered here as well."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from integration_tests.conftest import FIRST_DAY, TODAY
from integration_tests.harness import (
    FULL_REFRESH,
    INCREMENTAL,
    PROJECT_ID,
    SA_USER,
    catalog,
    config_for,
    run_cli,
    run_in_process,
    state_input,
)

YEAR_MS = 365 * 86_400_000
NON_LATIN1 = "geheim-\u20ac-Wert"  # the euro sign is not in Latin-1: Basic auth cannot carry it


# Cases also run through the real console script (a subprocess), one or two per command and kind of input.
CLI_CASES = {"region-MARS", "url-ftp-password", "secret-not-latin1", "not-json", "synced-9999", "global",
             "401-service-account-debug", "500-project-secret"}


def runner(case: str):
    """run_cli for the cases in CLI_CASES, run_in_process for the rest (both return a harness.Run)."""
    return run_cli if case in CLI_CASES else run_in_process


def status_of(run) -> dict:
    (status,) = run.of("CONNECTION_STATUS")
    return status["connectionStatus"]


def with_credentials(**changes: Any) -> dict[str, Any]:
    """Service-account credentials with some keys changed (None removes a key)."""
    creds: dict[str, Any] = {"option_title": "Service Account", "username": SA_USER, "secret": "sa-secret-5f1e9c",
                             "project_id": PROJECT_ID}
    for key, value in changes.items():
        if value is None:
            creds.pop(key, None)
        else:
            creds[key] = value
    return {"credentials": creds}


# (test id, config overrides, the text the message must hold: the field's name)
BAD_SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("region-MARS", {"region": "MARS"}, "region"),
    ("attribution-negative", {"attribution_window": -3}, "attribution_window"),
    ("project-id-text", with_credentials(project_id="not-a-number"), "credentials.project_id"),
    ("secret-missing", with_credentials(secret=None), "credentials.secret"),
    ("secret-number", with_credentials(secret=12345), "credentials.secret"),
    ("secret-not-latin1", with_credentials(secret=NON_LATIN1), "credentials.secret"),
    ("username-not-latin1", with_credentials(username="d\u00e9j\u00e0-\u4e2d"), "credentials.username"),
    ("option-title-bogus", with_credentials(option_title="Bogus"), "credentials.option_title"),
    ("api-secret-missing", {"credentials": {"option_title": "Project Secret"}}, "credentials.api_secret"),
    ("credentials-missing", {"credentials": None}, "credentials"),
    ("events-comma-text", {"events": "Page View,Sign Up"}, "events"),
    ("events-numbers", {"events": [1, 2]}, "events"),
    ("window-1e9", {"date_window_size": 10**9}, "date_window_size"),
    ("window-2^63", {"date_window_size": 2**63}, "date_window_size"),
    ("window-zero", {"date_window_size": 0}, "date_window_size"),
    ("timeout-nan", {"request_timeout_seconds": math.nan}, "request_timeout_seconds"),
    ("timeout-1e308", {"request_timeout_seconds": 1e308}, "request_timeout_seconds"),
    ("timeout-inf", {"request_timeout_seconds": math.inf}, "request_timeout_seconds"),
    ("retry-nan", {"max_retry_seconds": math.nan}, "max_retry_seconds"),
    ("backoff-nan", {"retry_initial_backoff_seconds": math.nan}, "retry_initial_backoff_seconds"),
    ("per-hour-zero", {"requests_per_hour": 0}, "requests_per_hour"),
    ("per-second-1000", {"requests_per_second": 1000}, "requests_per_second"),
    ("lookback-year", {"export_lookback_window": 365 * 86_400}, "export_lookback_window"),
    ("start-0001", {"start_date": "0001-01-01"}, "start_date"),
    ("start-future", {"start_date": (TODAY + dt.timedelta(days=3)).isoformat()}, "start_date"),
    ("start-not-a-date", {"start_date": "2024-02-30"}, "start_date"),
    ("end-9999", {"end_date": "9999-12-31"}, "end_date"),
    ("end-before-start", {"start_date": "2024-05-01", "end_date": "2024-04-01"}, "end_date"),
    ("timezone-mars", {"project_timezone": "Mars/Olympus"}, "project_timezone"),
    ("skip-bad-lines-text", {"skip_bad_lines": "yes"}, "skip_bad_lines"),
    ("url-ipv6-unclosed", {"api_base_url": "http://[::1"}, "api_base_url"),
    ("url-port-99999", {"api_base_url": "http://127.0.0.1:99999"}, "api_base_url"),
    ("url-port-abc", {"api_base_url": "http://127.0.0.1:abc"}, "api_base_url"),
    ("url-ftp-password", {"api_base_url": "ftp://u:pw-3c9d@host"}, "api_base_url"),
    ("url-http-remote", {"api_base_url": "http://example.com"}, "api_base_url"),
]


def bad_config(fake, overrides: dict[str, Any]) -> dict[str, Any]:
    config = config_for(fake)
    for key, value in overrides.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


@pytest.mark.parametrize("case,overrides,field", BAD_SETTINGS, ids=[i for i, _, _ in BAD_SETTINGS])
def test_given_bad_setting_when_check_then_failed_naming_the_field_and_nothing_sent(
    tmp_path, fake, case, overrides, field
):
    """check: FAILED (exit 0, as the CDK does for config errors) with parse_config's message, no request."""
    run = runner(case)(tmp_path, "check", bad_config(fake, overrides))
    status = status_of(run)
    assert run.returncode == 0 and status["status"] == "FAILED"
    assert field in status["message"] and "Traceback" not in run.stdout
    assert fake.export_requests == []
    assert "pw-3c9d" not in run.stdout + run.stderr


@pytest.mark.parametrize("case,overrides,field", BAD_SETTINGS, ids=[i for i, _, _ in BAD_SETTINGS])
def test_given_bad_setting_when_read_then_config_error_naming_the_field_and_nothing_sent(
    tmp_path, fake, case, overrides, field
):
    """read: a config error TRACE naming the field, exit 1, no request (the head start included)."""
    run = runner(case)(tmp_path, "read", bad_config(fake, overrides))
    assert run.returncode == 1 and run.errors
    assert run.errors[-1]["failure_type"] == "config_error" and field in run.errors[-1]["message"]
    assert run.records == [] and fake.export_requests == []
    assert "pw-3c9d" not in run.stdout + run.stderr


DISCOVER_SAMPLE = ["region-MARS", "project-id-text", "secret-missing", "option-title-bogus", "window-2^63",
                   "timeout-nan", "url-port-abc", "start-0001"]


DISCOVER_SETTINGS = [setting for setting in BAD_SETTINGS if setting[0] in DISCOVER_SAMPLE]


@pytest.mark.parametrize("case,overrides,field", DISCOVER_SETTINGS, ids=[i for i, _, _ in DISCOVER_SETTINGS])
def test_given_bad_setting_when_discover_then_config_error_naming_the_field(tmp_path, fake, case, overrides, field):
    """discover validates like read: a config error TRACE naming the field, no CATALOG."""
    run = runner(case)(tmp_path, "discover", bad_config(fake, overrides))
    assert run.returncode == 1 and run.of("CATALOG") == []
    assert run.errors[-1]["failure_type"] == "config_error" and field in run.errors[-1]["message"]


# -- inputs the JSON schema would refuse but parse_config accepts: check and read agree ---------------------


@pytest.mark.parametrize(
    "overrides",
    [{"events": "Purchase"}, with_credentials(project_id=str(PROJECT_ID)), {"region": "us"}, {"date_window_size": "3"}],
    ids=["events-one-name-as-text", "project-id-as-text", "region-lowercase", "window-as-text"],
)
def test_given_setting_only_the_schema_would_refuse_when_check_and_read_then_both_accept(tmp_path, fake, overrides):
    """What read accepts, check accepts too (the CDK's schema check used to fail these)."""
    config = {**config_for(fake, start_date=FIRST_DAY.isoformat()), **overrides}
    assert status_of(run_in_process(tmp_path, "check", config))["status"] == "SUCCEEDED"
    run = run_in_process(tmp_path, "read", config)
    assert run.returncode == 0 and run.records
    if "events" in overrides:
        assert {r["event"] for r in run.records} == {"Purchase"}


# -- config files ----------------------------------------------------------------------------------------------


CONFIG_FILES = [("not-json", "{not json"), ("list", "[]"), ("number", "5"), ("missing", None)]


@pytest.mark.parametrize("case,content", CONFIG_FILES, ids=[i for i, _ in CONFIG_FILES])
def test_given_unusable_config_file_when_check_discover_read_then_clear_config_error(tmp_path, fake, case, content):
    """A config file that is missing, not JSON or not an object: FAILED / config error naming the file."""
    path = tmp_path / "given.json"
    if content is not None:
        path.write_text(content)
    run_cli = runner(case)
    check = run_cli(tmp_path, "check", extra=["--config", str(path)])
    assert check.returncode == 0 and status_of(check)["status"] == "FAILED"
    assert "given.json" in status_of(check)["message"]
    discover = run_cli(tmp_path, "discover", extra=["--config", str(path)])
    assert discover.returncode == 1 and discover.errors[-1]["failure_type"] == "config_error"
    assert "given.json" in discover.errors[-1]["message"]
    read = run_cli(tmp_path, "read", extra=["--config", str(path)])
    assert read.returncode == 1 and read.errors[-1]["failure_type"] == "config_error"
    assert "given.json" in read.errors[-1]["message"] and fake.export_requests == []


# -- untrusted state -------------------------------------------------------------------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


FUTURE_STATES = [
    ("official-2100", lambda: {"time": "2100-01-01T00:00:00Z"}, "'time'"),
    ("watermark-year-ahead", lambda: {"version": 2, "synced_through": TODAY.isoformat(),
                                      "watermark_ms": now_ms() + YEAR_MS}, "watermark_ms"),
    ("watermark-1e20", lambda: {"version": 2, "synced_through": TODAY.isoformat(), "watermark_ms": 10**20},
     "watermark_ms"),
    ("synced-9999", lambda: {"version": 2, "synced_through": "9999-12-31", "watermark_ms": now_ms()},
     "synced_through"),
    ("events-per-day-1e15", lambda: {"version": 3, "synced_through": TODAY.isoformat(), "watermark_ms": now_ms(),
                                     "events_per_day": 10**15}, "events_per_day"),  # not one we wrote
]


@pytest.mark.parametrize("case,make,field", FUTURE_STATES, ids=[i for i, _, _ in FUTURE_STATES])
def test_given_state_from_the_future_when_read_then_config_error_saying_reset_and_nothing_sent(
    tmp_path, fake, case, make, field
):
    """A state after the present would make every later sync read nothing, exit 0: refused instead."""
    run = runner(case)(tmp_path, "read", config_for(fake), mode=INCREMENTAL, state=state_input(make()))
    assert run.returncode == 1 and run.errors[-1]["failure_type"] == "config_error"
    message = run.errors[-1]["message"]
    assert field in message and "Reset" in message and "Traceback" not in message
    assert fake.export_requests == [] and run.records == []


FOREIGN_STATES = [
    ("global", [{"type": "GLOBAL", "global": {"shared_state": {"x": 1}, "stream_states": [
        {"stream_descriptor": {"name": "export"}, "stream_state": {"time": "2024-01-01"}}]}}]),
    ("legacy", [{"type": "LEGACY", "data": {"export": {"time": "2024-01-01"}}}]),
    ("export-twice", state_input({"time": "2024-01-01"}) + state_input({"time": "2024-02-01"})),
]


@pytest.mark.parametrize("case,state", FOREIGN_STATES, ids=[i for i, _ in FOREIGN_STATES])
def test_given_state_this_connector_never_writes_when_read_then_config_error(tmp_path, fake, case, state):
    """GLOBAL, LEGACY or two export entries: a config error that says to reset, never a crash."""
    run = runner(case)(tmp_path, "read", config_for(fake), mode=INCREMENTAL, state=state)
    assert run.returncode == 1 and run.errors[-1]["failure_type"] == "config_error"
    assert "Reset" in run.errors[-1]["message"] and fake.export_requests == []


def doubled_catalog(first: str, second: str) -> dict[str, Any]:
    return {"streams": catalog(first)["streams"] + catalog(second)["streams"]}


@pytest.mark.parametrize("modes", [(FULL_REFRESH, FULL_REFRESH), (FULL_REFRESH, INCREMENTAL)], ids=["twice", "both"])
def test_given_catalog_listing_export_twice_when_read_then_config_error_and_nothing_sent(tmp_path, fake, modes):
    """export twice would emit every record twice: a config error before any request."""
    run = run_in_process(tmp_path, "read", config_for(fake), catalog_value=doubled_catalog(*modes))
    assert run.returncode == 1 and run.errors[-1]["failure_type"] == "config_error"
    assert "2 times" in run.errors[-1]["message"] and fake.export_requests == [] and run.records == []


# -- secrets: a server that echoes everything it was sent ----------------------------------------------------

ECHOED_SECRET = "geheim-\u00fc\u00df Wert/+1"  # Latin-1 accents, a space, a slash and a plus


def every_form(user: str, password: str) -> list[str]:
    """Every form of the secret a message could carry; the test fails if any appears anywhere."""
    secret = password or user
    pair = f"{user}:{password}"
    return [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        quote(secret, safe="", encoding="latin-1"),
        json.dumps(secret)[1:-1],
        base64.b64encode(pair.encode("latin-1")).decode(),
        base64.b64encode(pair.encode("utf-8")).decode(),
    ]


@dataclass
class EchoServer:
    """An HTTP server on 127.0.0.1 that answers every request with `status` and a body echoing the
    Authorization header, the URL, the decoded credentials and their URL-encoded forms."""

    status: int
    trickle: bool = False  # instead: a 200 whose body comes one byte every few ms, for ever (bounded)
    seen: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                header = self.headers.get("Authorization", "")
                owner.seen.append(self.path)
                if owner.trickle:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    for _ in range(3000):  # at most ~15 s; the client gives up long before
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(0.005)
                    return
                decoded = base64.b64decode(header.removeprefix("Basic ")).decode("latin-1")
                secret = decoded.split(":", 1)[1] or decoded.split(":", 1)[0]
                body = json.dumps({
                    "error": f"denied: you sent {header} for {self.path}; that is {decoded} "
                    f"({quote(secret, safe='')}, {quote_plus(secret)})",
                }, ensure_ascii=False).encode()
                self.send_response(owner.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def echo_server(request) -> Iterator[EchoServer]:
    server = EchoServer(request.param)
    yield server
    server.stop()


CREDENTIAL_KINDS = {
    "service-account": ({"option_title": "Service Account", "username": SA_USER, "secret": ECHOED_SECRET,
                         "project_id": PROJECT_ID}, (SA_USER, ECHOED_SECRET)),
    "project-secret": ({"option_title": "Project Secret", "api_secret": ECHOED_SECRET}, (ECHOED_SECRET, "")),
}


def echo_config(server: EchoServer, credentials: dict[str, Any]) -> dict[str, Any]:
    return {
        "credentials": credentials,
        "api_base_url": server.base_url,
        "start_date": (TODAY - dt.timedelta(days=2)).isoformat(),
        "retry_initial_backoff_seconds": 0.01,
        "max_retry_seconds": 0.3,
        "requests_per_second": 100,
        "requests_per_hour": 10000,
    }


def assert_no_form_of(user: str, password: str, run) -> None:
    output = run.stdout + run.stderr
    for form in every_form(user, password):
        assert form not in output, f"a form of the secret leaked: {form!r}"


@pytest.mark.parametrize("echo_server", [401, 403, 500], indirect=True, ids=["401", "403", "500"])
@pytest.mark.parametrize("kind", sorted(CREDENTIAL_KINDS))
@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_given_server_echoing_the_credentials_when_check_then_no_form_of_the_secret_in_any_output(
    tmp_path, echo_server, kind, debug
):
    """check quotes the answer in its FAILED message: every form of the secret is masked there and everywhere."""
    credentials, (user, password) = CREDENTIAL_KINDS[kind]
    case = f"{echo_server.status}-{kind}-{'debug' if debug else 'plain'}"
    run = runner(case)(tmp_path, "check", echo_config(echo_server, credentials), extra=["--debug"] if debug else [])
    assert echo_server.seen, "the check reached the echoing server"
    status = status_of(run)
    assert status["status"] == "FAILED" and "denied" in status["message"] and "****" in status["message"]
    assert_no_form_of(user, password, run)


@pytest.mark.parametrize("echo_server", [401, 500], indirect=True, ids=["401", "500"])
@pytest.mark.parametrize("kind", sorted(CREDENTIAL_KINDS))
def test_given_server_echoing_the_credentials_when_read_then_no_form_of_the_secret_in_any_output(
    tmp_path, echo_server, kind
):
    """read fails (config error for 401, transient after retries for 500) without any form of the secret."""
    credentials, (user, password) = CREDENTIAL_KINDS[kind]
    run = runner(f"{echo_server.status}-{kind}")(tmp_path, "read", echo_config(echo_server, credentials),
                                                 extra=["--debug"])
    assert echo_server.seen and run.returncode == 1 and run.errors
    assert_no_form_of(user, password, run)


def test_given_server_trickling_bytes_when_check_then_failed_within_request_timeout(tmp_path):
    """A 200 whose body never ends, one byte every few ms: check gives up after request_timeout_seconds."""
    server = EchoServer(200, trickle=True)
    try:
        config = echo_config(server, CREDENTIAL_KINDS["service-account"][0]) | {"request_timeout_seconds": 1}
        run = run_in_process(tmp_path, "check", config)
    finally:
        server.stop()
    status = status_of(run)
    assert status["status"] == "FAILED" and "request_timeout_seconds" in status["message"]
    assert "too slowly" in status["message"]

