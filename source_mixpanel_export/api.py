"""The export API's requests: the query of a window, the one HTTP session, the one GET.

`check` and the read send their requests through `export_get`, so both honour proxies
(HTTP(S)_PROXY, NO_PROXY) and REQUESTS_CA_BUNDLE as requests does, and both refuse redirects: a
redirect from the export host is never Mixpanel's answer (a captive portal, a misconfigured proxy),
and following it would carry the query, or with some clients the credentials, to another host.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
import requests

from .config import Config
from .windows import Window

CONNECT_TIMEOUT_SECONDS = 30
USER_AGENT = "source-mixpanel-export (Airbyte connector)"


def new_session() -> requests.Session:
    """A session for one command: gzip bodies, our User-Agent, proxies and CA bundle from the environment."""
    session = requests.Session()
    session.headers.update({"Accept-Encoding": "gzip", "User-Agent": USER_AGENT})
    return session


def export_get(
    session: requests.Session, config: Config, params: Mapping[str, str], read_timeout: float
) -> requests.Response:
    """One export request, streamed; a 3xx comes back as the response (see the module docstring)."""
    return session.get(
        config.export_url,
        params=dict(params),
        auth=config.credentials.basic_auth(),
        stream=True,
        timeout=(CONNECT_TIMEOUT_SECONDS, read_timeout),
        allow_redirects=False,
    )


def where_clause(user_where: str | None, window: Window) -> str | None:
    """The `where` parameter: the user's expression and the window's own narrowing, all required."""
    parts = [f"({user_where})"] if user_where else []
    if window.processed_after_ms is not None:
        parts.append(f'number(properties["mp_processing_time_ms"]) > {window.processed_after_ms}')
    if window.time_from is not None:
        parts.append(f'properties["$time"] >= datetime({window.time_from})')
    if window.time_to is not None:
        parts.append(f'properties["$time"] < datetime({window.time_to})')
    return " and ".join(parts) or None


def export_params(config: Config, window: Window, limit: int | None = None) -> dict[str, str]:
    """Query parameters for one window (dates inclusive, times in milliseconds)."""
    params = {
        "from_date": window.first_day.isoformat(),
        "to_date": window.last_day.isoformat(),
        "time_in_ms": "true",
    }
    if config.project_id is not None:
        params["project_id"] = str(config.project_id)
    if config.events:
        params["event"] = orjson.dumps(list(config.events)).decode()
    where = where_clause(config.where, window)
    if where:
        params["where"] = where
    if limit is not None:
        params["limit"] = str(limit)
    return params
