"""`check`'s Engage page against a server that is not Mixpanel: the export answers a good sample, and the
Query API answers what proxies and bad days answer. Only an answer that says the profiles stream cannot
work fails the check (a refusal, a 200 that is no Engage page); a rate limit, an outage or no answer is a
warning, since the export just accepted the same credentials. Through the console script's `run`
(harness.run_in_process), with no secret in anything it prints."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest

from integration_tests.harness import Run, assert_no_secrets, run_in_process
from integration_tests.test_hostile_server import PEAK_RSS_BOUND_MB, hostile_config, run_measured

QUERY_API = "the Query API (the profiles stream)"
PAGE_HEAD = b'{"page": 0, "page_size": 1000, "session_id": "s1", "status": "ok", "total": 0, "results": ['
PAGE_CAP = 1 << 20  # check.PAGE_MAX_BYTES


def sample(handler: Any) -> None:
    """30 events of the last minutes, each received by Mixpanel a second after it happened: times that fit
    the default settings."""
    now_ms = int(time.time() * 1000)
    lines = [
        b'{"event": "E", "properties": {"time": %d, "$insert_id": "i%d", "$mp_api_timestamp_ms": %d}}\n'
        % (now_ms - 60_000 - n * 1000, n, now_ms - 59_000 - n * 1000)
        for n in range(30)
    ]
    answer(handler, 200, b"".join(lines), "text/plain")


def answer(handler: Any, status: int, body: bytes, kind: str = "application/json", **headers: str) -> None:
    """One answer, and the connection closed after it: check reads at most 8 MB of a body and then drops its
    connection, which the server would otherwise find reset while it waits for the next request (and print
    that into the output under test)."""
    handler.close_connection = True
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


def echoed_credentials(handler: Any) -> str:
    """What a careless proxy shows: the Authorization header, and the credentials it carries, decoded."""
    header = handler.headers.get("Authorization", "")
    return f"{header} = {base64.b64decode(header.removeprefix('Basic ')).decode()}"


def proxy_html(handler: Any) -> None:
    page = f"<html><head><title>Access policy</title></head><body>Request {echoed_credentials(handler)}</body></html>"
    answer(handler, 200, page.encode(), "text/html")


def status_ok(handler: Any) -> None:
    answer(handler, 200, b'{"status":"ok"}')


def empty_page(handler: Any) -> None:
    answer(handler, 200, PAGE_HEAD + b"]}")


def rate_limited(handler: Any) -> None:
    answer(handler, 429, b'{"error": "Query rate limit exceeded"}', Retry_After="120")


def unavailable(handler: Any) -> None:
    answer(handler, 503, b"<html>Service Unavailable</html>", "text/html")


def forbidden(handler: Any) -> None:
    body = f'{{"error": "service account lacks the Query API permission ({echoed_credentials(handler)})"}}'
    answer(handler, 403, body.encode())


def hang_up(handler: Any) -> None:
    """Closes the connection without a word."""
    handler.close_connection = True


def large_page(handler: Any) -> None:
    """A page of 1,000 profiles of 2 kB each (a server that ignored the `where`): more than check reads."""
    profile = b'{"$distinct_id": "u%d", "$properties": {"$last_seen": "2024-01-01T00:00:00", "bio": "' + b"x" * 2_000
    results = b",".join(profile % n + b'"}}' for n in range(1000))
    answer(handler, 200, PAGE_HEAD + results + b"]}")


def large_html(handler: Any) -> None:
    answer(handler, 200, b"<html>" + b"<p>blocked</p>" * (PAGE_CAP // 10) + b"</html>", "text/html")


def check(tmp_path: Any, hostile: Callable[..., str], post: Callable[[Any], None]) -> tuple[Run, dict[str, Any]]:
    """check against a server whose export answers `sample` and whose Engage answers `post`: the run, and
    its one CONNECTION_STATUS. Nothing printed holds a secret."""
    run = run_in_process(tmp_path, "check", hostile_config(hostile(sample, post)))
    assert_no_secrets(run.stdout, run.stderr)
    (status,) = run.of("CONNECTION_STATUS")
    assert "Timezone settings (legacy_local_time off: times read as UTC) fit" in run.logs(), run.logs()
    return run, status["connectionStatus"]


def warnings(run: Run) -> list[str]:
    return [m["log"]["message"] for m in run.of("LOG") if m["log"]["level"] == "WARN"]


@pytest.mark.parametrize(
    ("post", "says"),
    [
        (proxy_html, ["answered 200 with no Engage page", "not complete JSON", "<html>", "api_base_url"]),
        (status_ok, ["answered 200 with no Engage page", "no list of results", '{"status":"ok"}']),
        (large_html, ["answered 200 with no Engage page", "more than 1 MB, and not a JSON object", "<html>"]),
    ],
    ids=["html", "status-ok-json", "html-past-the-cap"],
)
def test_given_a_200_that_is_no_engage_page_when_check_then_failed_naming_the_query_api(tmp_path, hostile, post, says):
    """A proxy's page, or JSON without `results`, is what a profiles sync would fail on: check fails, names
    the Query API and its URL, and quotes the start of the answer (credentials it echoed masked)."""
    _, status = check(tmp_path, hostile, post)
    message = status["message"]
    assert status["status"] == "FAILED" and QUERY_API in message and "/api/query/engage" in message, status
    assert all(part in message for part in says), message
    if post is proxy_html:
        assert "****" in message


def test_given_an_empty_engage_page_when_check_then_succeeded_without_warnings(tmp_path, hostile):
    """The answer Mixpanel gives check's query (no profile seen after 2099): success, one Engage request."""
    run, status = check(tmp_path, hostile, empty_page)
    assert status["status"] == "SUCCEEDED" and warnings(run) == []


def test_given_a_page_larger_than_check_reads_when_check_then_succeeded_with_a_warning(tmp_path, hostile):
    """A page cut by check's 1 MB cap is no false failure: it begins as a JSON object, and check says it did not
    judge the rest."""
    run, status = check(tmp_path, hostile, large_page)
    assert status["status"] == "SUCCEEDED", status
    (warning,) = warnings(run)
    assert QUERY_API in warning and "more than 1 MB" in warning, warning


@pytest.mark.parametrize(
    ("post", "says"),
    [
        (rate_limited, ["is rate limited right now (429: Query rate limit exceeded; it asks to wait 120 s)"]),
        (unavailable, ["is failing right now (503: <html>Service Unavailable</html>)"]),
        (hang_up, ["could not be reached (ConnectionError)"]),
    ],
    ids=["429-retry-after", "503", "connection-closed"],
)
def test_given_the_query_api_rate_limited_down_or_silent_when_check_then_succeeded_with_a_warning_naming_it(
    tmp_path, hostile, post, says
):
    """A 429, a 5xx or no answer says nothing about the credentials the export just accepted: check succeeds
    (an export-only connection must not fail for it) and a WARN log names the Query API and what it answered."""
    run, status = check(tmp_path, hostile, post)
    assert status["status"] == "SUCCEEDED", status
    (warning,) = warnings(run)
    assert QUERY_API in warning and "/api/query/engage" in warning, warning
    assert all(part in warning for part in says), warning


def test_given_the_query_api_refuses_the_credentials_when_check_then_failed_naming_it(tmp_path, hostile):
    """403: these credentials cannot read profiles. check fails as before, naming the Query API, the status and
    what to check, with the echoed credentials masked."""
    run, status = check(tmp_path, hostile, forbidden)
    message = status["message"]
    assert status["status"] == "FAILED" and warnings(run) == [], status
    assert QUERY_API in message and "403" in message and "credentials.project_id" in message, message
    assert "****" in message


def test_given_a_page_of_a_megabyte_of_empty_lists_when_check_then_failed_in_bounded_memory(tmp_path, hostile):
    """The most check parses, made of the values that cost most parsed (`[]`: 3 bytes each, some 60 parsed):
    no Engage page, and memory within the benchmark's bound (the real CLI, its peak RSS measured)."""
    values = (PAGE_CAP - len(PAGE_HEAD) - 2) // 3

    def empty_lists(handler: Any) -> None:
        answer(handler, 200, PAGE_HEAD + b",".join([b"[]"] * values) + b"]}")

    run, peak_mb = run_measured(tmp_path, "check", hostile_config(hostile(sample, empty_lists)))
    status = run.of("CONNECTION_STATUS")[-1]["connectionStatus"]
    assert status["status"] == "FAILED" and "a result is not a JSON object" in status["message"], status
    print(f"check against an Engage page of {values:,} empty lists: peak RSS {peak_mb:.1f} MB")
    assert 0 < peak_mb < PEAK_RSS_BOUND_MB
