"""What a failed export attempt means, and how long to wait before the next: pure functions, no HTTP.

Every answer other than a complete 200 body is classified here, once: retry it (429, 408, 5xx, a
cut-off body), ask for less (400 `Timeout Error.`), ask for an earlier day (400 `to_date cannot be
later than today`), or stop with an error a person can act on. The client and `check` both use it.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from collections.abc import Callable
from typing import TypeGuard

import orjson
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from .config import Config, ServiceAccount
from .errors import config_error, system_error

MAX_BACKOFF_SECONDS = 300.0
MAX_RETRY_AFTER_SECONDS = 3600.0


class Retriable(Exception):
    """An attempt failed in a way the next attempt may not: rate limit, outage, cut-off body."""

    def __init__(
        self, reason: str, retry_after: float | None = None, rate_limited: bool = False, attempts: int | None = None
    ) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        self.attempts = attempts  # a failure that repeats each time: give up after this many attempts


class TooLarge(Exception):
    """The window is too big to read whole: Mixpanel timed out (400 `Timeout Error.`), or the body
    grew past what one window may hold on disk. Either way the window is split and asked again.
    `head` is the digest of the start of the abandoned body (body.BodyCheck.head), when there was one."""

    def __init__(self, reason: str, head: bytes | None = None) -> None:
        super().__init__(reason)
        self.head = head


class DateAfterToday(Exception):
    """Mixpanel's today is earlier than ours (400 `to_date cannot be later than today`)."""


def backoff_seconds(
    attempt: int, retry_after: float | None, base: float, rand: Callable[[], float] = random.random
) -> float:
    """How long to wait before attempt `attempt + 1`: Retry-After when it is a positive wait (capped at
    an hour), else capped exponential backoff with full jitter on its upper half (so parallel downloads
    do not retry in step). A Retry-After of zero, below zero or NaN is no wait at all: honouring it
    would let a server have the connector retry as fast as it answers."""
    if is_positive_wait(retry_after):
        return min(retry_after, MAX_RETRY_AFTER_SECONDS)
    ceiling = min(base * (2 ** (attempt - 1)), MAX_BACKOFF_SECONDS)
    return ceiling / 2 + ceiling / 2 * rand()


def is_positive_wait(seconds: float | None) -> TypeGuard[float]:
    """Whether a Retry-After asks for a real wait: a number above zero (NaN compares false)."""
    return seconds is not None and seconds > 0.0


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """A Retry-After header's wait in seconds (a number or an HTTP date, read against `now`), or None
    when it is absent, junk, or no positive wait (0, negative, NaN, a date not in the future): the
    caller then backs off exponentially, as if the server had said nothing.

    Not urllib3's `Retry.parse_retry_after`: it reads a date against the machine's clock (time.time),
    which tests cannot inject, and raises on junk where a server's bad header should only be ignored."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        moment = http_date(value)
        if moment is None:
            return None
        seconds = (moment - (now or dt.datetime.now(dt.UTC))).total_seconds()
    return seconds if is_positive_wait(seconds) else None


def http_date(value: str) -> dt.datetime | None:
    """An HTTP date (Date, Retry-After headers) as an aware datetime, or None when it is not one."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def status_failure(
    config: Config, status: int, message: str, retry_after: float | None, api: tuple[str, str] | None = None
) -> Exception:
    """What an answer other than 200 means for the request: retry, split, shorten, or stop. `api` is the
    (URL, name) a refusal names; by default the Raw Event Export API's."""
    if status == 429:
        return Retriable(f"429 rate limited: {message}", retry_after, rate_limited=True)
    if status >= 500 or status == 408:
        return Retriable(f"{status} from Mixpanel: {message}", retry_after)
    lowered = message.lower()
    if status == 400 and "timeout error" in lowered:
        return TooLarge(message)
    if status == 400 and "cannot be later than today" in lowered:
        return DateAfterToday(message)
    return describe_rejection(config, status, message, api)


def describe_rejection(config: Config, status: int, message: str, api: tuple[str, str] | None = None) -> Exception:
    """A config error a person can act on, for a request Mixpanel refused outright."""
    lowered = message.lower()
    url, name = api or (config.export_url, "Raw Event Export API")
    account = isinstance(config.credentials, ServiceAccount)
    if 300 <= status < 400:
        return config_error(
            f"{url} answered {status} ({message}), a redirect, which the connector does not "
            "follow (it would send the credentials elsewhere). Check region and api_base_url."
        )
    if status == 401 or (status == 400 and "authenticate" in lowered):
        fields = "credentials.username / credentials.secret" if account else "credentials.api_secret"
        hint = f"Mixpanel rejected the credentials ({status}: {message}). Check {fields}"
        if config.region == "US" and config.base_url.endswith("data.mixpanel.com"):
            hint += "; if the project's data lives in the EU or India, set region to EU or IN"
        return config_error(hint + ".")
    if status == 403:
        return config_error(_forbidden(config, message, name))
    if status == 402:
        return config_error(f"Mixpanel's plan for this project does not allow the {name} (402: {message}).")
    if status == 404:
        return config_error(f"No {name} at {url} (404). Check region and api_base_url.")
    if status == 400 and "project" in lowered:
        return config_error(f"Mixpanel rejected the project id (400: {message}). Check credentials.project_id.")
    if status == 400 and ("where" in lowered or "event" in lowered or "segmentation" in lowered):
        return config_error(f"Mixpanel rejected the request (400: {message}). Check the where and events settings.")
    if 400 <= status < 500:
        return config_error(f"Mixpanel rejected the request ({status}: {message}).")
    return system_error(f"Unexpected answer from Mixpanel ({status}: {message}).")


def _forbidden(config: Config, message: str, name: str) -> str:
    """What to check after a 403: the project when the config names one; with a project secret that
    names none, the secret itself (it alone says which project is meant)."""
    if isinstance(config.credentials, ServiceAccount):
        return (
            f"Mixpanel refused the {name} access to project {config.project_id} (403: {message}). Check "
            "credentials.project_id and that the service account is a member of that project "
            "(with access to classified data if the project has any) and its role may use this API."
        )
    if config.project_id is not None:
        return (
            f"Mixpanel refused access to project {config.project_id} (403: {message}). Check "
            "credentials.project_id and that credentials.api_secret is that project's API secret."
        )
    return (
        f"Mixpanel refused access with the project secret (403: {message}). Check credentials.api_secret: "
        "it must be the API secret of the project to export (Mixpanel's Project Settings > Overview)."
    )


def error_message(body: bytes) -> str:
    """Mixpanel's error message from a JSON `{"error": ...}` or plain-text body, kept short.

    Secrets are masked before the cut: a body may echo the request's Authorization header (a proxy
    does), and a form cut in half would no longer be recognised by the log filter."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and parsed.get("error"):
            text = str(parsed["error"])
    except orjson.JSONDecodeError:
        pass
    return (filter_secrets(text) or "no message")[:500]
