"""The one HTTP stack: proxies from the environment are used by `check` and `read` alike (real CLI runs,
the proxy set in their environment), and a redirect is never followed (it would carry the query
elsewhere), but named (the console script in this process, harness.run_in_process)."""

from __future__ import annotations

import http.server
import threading

import pytest

from integration_tests.conftest import FIRST_DAY, TODAY
from integration_tests.harness import config_for, record_keys, run_cli, run_in_process, truth


class Redirecting(http.server.BaseHTTPRequestHandler):
    """Answers every request with a 302 to another local server, and counts what it got."""

    target = ""
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def redirecting(fake):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    Redirecting.target, Redirecting.seen = fake.base_url, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("verb", ["check", "read"])
def test_given_a_redirect_when_check_or_read_then_not_followed_and_a_config_error_names_the_url(
    tmp_path, fake, redirecting, verb
):
    config = config_for(fake, api_base_url=redirecting, start_date=FIRST_DAY.isoformat(), max_retry_seconds=1)
    run = run_in_process(tmp_path, verb, config)
    assert Redirecting.seen and fake.export_requests == []
    if verb == "check":
        status = run.of("CONNECTION_STATUS")[-1]["connectionStatus"]
        assert status["status"] == "FAILED" and "302" in status["message"] and "api_base_url" in status["message"]
    else:
        assert run.returncode != 0 and run.errors[-1]["failure_type"] == "config_error"
        assert "302" in run.errors[-1]["message"] and "api_base_url" in run.errors[-1]["message"]


@pytest.mark.parametrize("verb", ["check", "read"])
def test_given_an_http_proxy_in_the_environment_when_check_or_read_then_requests_go_through_it(tmp_path, fake, verb):
    """The fake answers proxied requests too (absolute URLs): aimed at a port where nothing listens,
    the sync can only succeed through the proxy."""
    config = config_for(fake, api_base_url="http://127.0.0.1:9", start_date=FIRST_DAY.isoformat())
    env = {"HTTP_PROXY": fake.base_url, "http_proxy": fake.base_url, "NO_PROXY": "", "no_proxy": ""}
    run = run_cli(tmp_path, verb, config, env=env)
    assert fake.export_requests and all(r.path == "/api/2.0/export" for r in fake.export_requests)
    if verb == "check":
        assert run.of("CONNECTION_STATUS")[-1]["connectionStatus"]["status"] == "SUCCEEDED"
    else:
        assert run.returncode == 0 and record_keys(run.records) == truth(fake, FIRST_DAY, TODAY)
