"""`check`: a small sample of recent events from the export endpoint, one page of the Query API's Engage
(the profiles stream's), and an answer a person can act on that names the API that failed.

Besides credentials and region, it catches timezone settings that do not fit the project, which would
otherwise shift every event time by hours without any error: Mixpanel refusing today's date, or event
times that sit a whole UTC offset away from the moment Mixpanel received the events.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import requests

from . import clock
from .api import (
    ENGAGE_ENDPOINT,
    TRANSPORT_ERRORS,
    deadline,
    engage_post,
    export_get,
    export_params,
    new_session,
    read_decoded,
)
from .body import GzipError
from .config import Config
from .engage import QUERY_API
from .profiles import BadPage, parse_page
from .records import LegacyClock
from .retry import DateAfterToday, Retriable, TooLarge, error_message, retry_after_seconds, status_failure
from .windows import ONE_DAY, Window

SAMPLE_LIMIT = 100  # events asked for per request; at most two requests (today, then yesterday)
ENOUGH_EVENTS = 20  # fewer than this today: yesterday's events are added to the sample
SAMPLE_MAX_BYTES = 8 << 20  # events can be up to 1 MB each; the rest of a huge sample is not read
_LINE = re.compile(rb"[^\n]+")  # a line that is not empty
_JSON_OBJECT = re.compile(rb"\s*\{")  # how a JSON object, an Engage page, begins
# The most of an Engage answer check reads and parses: the page it asks for holds no profiles (a few hundred
# bytes), and parsing costs up to 30 times the bytes (8 MB of `[],` is 250 MB of lists).
PAGE_MAX_BYTES = 1 << 20
# The Engage page check asks for: profiles seen after 2099, normally none, so the answer is a few bytes.
PROFILES_API = "the Query API (the profiles stream)"  # how check's messages name it
PROBE_FORM = {"where": 'properties["$last_seen"] > datetime("2099-01-01T00:00:00")', "page": "0"}

MINUTE_MS = 60_000
QUARTER_HOUR_MS = 15 * MINUTE_MS
MIN_EVIDENCE = 5  # events with both times needed before judging
MIN_OFFSET_MS = 30 * MINUTE_MS  # smaller gaps are delivery delay, not a timezone
DELAY_SLACK_MS = 10 * MINUTE_MS  # an event may reach Mixpanel this long after it happened...
SKEW_SLACK_MS = 2 * MINUTE_MS  # ...or, by its device's clock, this long before
MEDIAN_DELAY_MS = 5 * MINUTE_MS  # but the typical event arrives within this (seconds, in practice)
AGREEING_SHARE = 0.6  # the share of the sample that must show the same offset
SETTINGS_HINT = "the Timezone in Mixpanel's Project Settings > Overview"


def run_check(config: Config, logger: logging.Logger) -> tuple[bool, str | None]:
    """(True, None) when Mixpanel answers, event times fit the timezone settings and the Query API does not
    refuse the credentials (see _query_api_problem), else (False, what to fix)."""
    today = config.today()
    sample: list[Any] = []
    for day in (today, today - ONE_DAY):
        try:
            status, body = _export_sample(config, day)
        except TRANSPORT_ERRORS + (TooSlow,) as exc:
            if day != today:
                break  # the first answer already proved the connection; judge what there is
            return False, _unreachable(config, exc)
        if status != 200:
            if day != today:
                logger.info(f"Mixpanel answered {status} for {day}; judging the timezone settings on {today} alone.")
                break
            return False, _refusal(config, day, status, error_message(_masked(body, config)))
        sample.extend(_events(body))
        if len(sample) >= ENOUGH_EVENTS:
            break
    finding = compare_times(sample, config)
    logger.info(finding.summary(config))
    if finding.mismatch:
        return False, finding.problem(config)
    refused = _query_api_problem(config, logger)
    return (False, refused) if refused else (True, None)


def _query_api_problem(config: Config, logger: logging.Logger) -> str | None:
    """None when the Query API (the profiles stream's) answers one Engage page, else what to fix, naming
    that API: a service account may be allowed the export and not the Query API. One query of its 60.

    Only answers that say the profiles stream cannot work with these settings fail the check: a refusal
    (401, 403 and the other 4xx that retry.status_failure makes config errors) and a 200 that is no Engage
    page (a proxy's page, `{}`: a profiles sync would fail on it too). What a read retries (429, 408, 5xx)
    says nothing about the credentials, which the export just accepted: a warning, and check succeeds, so a
    rate limit or an outage of the Query API does not fail a connection that syncs only `export`.
    """
    url = ENGAGE_ENDPOINT.url(config)
    try:
        status, body, retry_after = _ask(
            config, lambda session, read: engage_post(session, config, PROBE_FORM, read), PAGE_MAX_BYTES + 1
        )
    except TRANSPORT_ERRORS + (TooSlow,) as exc:
        # No answer says nothing about the credentials either, and the export's host answered a moment ago:
        # with api_base_url the very same host; else data*.mixpanel.com, next to the Query API's *.mixpanel.com.
        # Most likely a passing network failure (or a firewall that lets only the export host through, which a
        # profiles sync reports in its own error): a warning, not a failed check for export-only connections.
        logger.warning(
            f"Not verified whether these credentials may use {PROFILES_API}: {url} could not be reached "
            f"({_no_answer(exc)}). check passes on the Raw Event Export API's answer; a profiles sync retries "
            "and fails naming the Query API if it stays unreachable (this host must reach it on port 443)."
        )
        return None
    if status == 200:
        return _page_problem(config, url, body, logger)
    text = error_message(_masked(body, config))
    wait = retry_after_seconds(retry_after, clock.utc_now())
    failure = status_failure(config, status, text, wait, api=(url, QUERY_API))
    if isinstance(failure, Retriable | TooLarge | DateAfterToday):  # for Engage all three are Mixpanel failing
        what = "is rate limited" if isinstance(failure, Retriable) and failure.rate_limited else "is failing"
        asked = f"; it asks to wait {wait:.0f} s" if wait is not None else ""
        logger.warning(
            f"Not verified whether these credentials may use {PROFILES_API}: at {url} it {what} right now "
            f"({status}: {text}{asked}). check passes on the Raw Event Export API's answer; a profiles sync "
            "waits and retries (the Query API allows 60 queries an hour)."
        )
        return None
    reason = getattr(failure, "message", None) or str(failure)
    return f"The Raw Event Export API answers, but {PROFILES_API} does not: {reason}"


def _page_problem(config: Config, url: str, body: bytes, logger: logging.Logger) -> str | None:
    """None when a 200 answer of the Query API is an Engage page (profiles.parse_page, as a profiles sync
    reads it), else what is wrong with it.

    At most PAGE_MAX_BYTES + 1 of the body were read. The page check asks for is a few hundred bytes, but a
    server that ignored its `where` may send 1,000 large profiles: a longer body is judged by its start alone
    (a JSON object passes, with a warning; anything else, such as a proxy's HTML, is no page).
    """
    cut = len(body) > PAGE_MAX_BYTES
    if cut and _JSON_OBJECT.match(body):
        logger.warning(
            f"Not verified whether {PROFILES_API} answers Engage pages: at {url} it answered more than "
            f"{PAGE_MAX_BYTES >> 20} MB for a page that should hold no profiles; check read that much, the start "
            "of a JSON object, and does not judge the rest."
        )
        return None
    if cut:
        problem = f"more than {PAGE_MAX_BYTES >> 20} MB, and not a JSON object"
    else:
        try:
            parse_page(body)
            return None
        except BadPage as exc:
            problem = str(exc)
    start = " ".join(error_message(_masked(body, config)).split())[:120]  # masked whole, then cut
    return (
        f"The Raw Event Export API answers, but {PROFILES_API} at {url} answered 200 with no Engage page "
        f"({problem}; it begins {start!r}). Check api_base_url and any proxy between this host and Mixpanel."
    )


def _no_answer(exc: Exception) -> str:
    """Why a request got no complete answer, in a few words."""
    if isinstance(exc, TooSlow):
        return str(exc)
    if isinstance(exc, GzipError):
        return f"a body that is not valid gzip: {exc}"
    if isinstance(exc, requests.Timeout):
        return "no answer within request_timeout_seconds"
    return type(exc).__name__


def _export_sample(config: Config, day: dt.date) -> tuple[int, bytes]:
    """One export request for up to SAMPLE_LIMIT of a day's events: status and (at most SAMPLE_MAX_BYTES of) body."""
    params = export_params(config, Window(day, day), limit=SAMPLE_LIMIT)
    status, body, _ = _ask(config, lambda session, timeout: export_get(session, config, params, timeout))
    return status, body


def _ask(
    config: Config,
    send: Callable[[requests.Session, float], requests.Response],
    max_bytes: int = SAMPLE_MAX_BYTES,
) -> tuple[int, bytes, str | None]:
    """One of check's requests, `send(session, read_timeout)`, within its deadline: the status, at most
    `max_bytes` of the body, and the Retry-After header. TooSlow past the deadline."""
    timeout = config.request_timeout_seconds
    with new_session() as session, deadline(timeout) as watched:
        try:
            with send(session, timeout) as response:
                body = read_decoded(response, watched, max_bytes)
            if watched.expired:  # a body that ends with its connection looks whole when cut off
                raise TooSlow(watched.problem())
            return response.status_code, body, response.headers.get("Retry-After")
        except TRANSPORT_ERRORS:
            if watched.expired:
                raise TooSlow(watched.problem()) from None
            raise


class TooSlow(Exception):
    """The sample's answer did not come within its deadline (api.Deadline)."""


def _unreachable(config: Config, exc: Exception) -> str:
    """What to check when the sample request got no complete answer."""
    if isinstance(exc, TooSlow):
        return f"{config.base_url} {exc}. Check api_base_url and any proxy between this host and Mixpanel."
    if isinstance(exc, GzipError):
        return (
            f"{config.base_url} answered with a body that is not valid gzip ({exc}). Check api_base_url and any "
            "proxy between this host and Mixpanel."
        )
    if isinstance(exc, requests.Timeout):
        return (
            f"{config.base_url} did not answer within request_timeout_seconds ({config.request_timeout_seconds:.0f} s)."
            " Check region / api_base_url, or raise request_timeout_seconds."
        )
    return (
        f"Could not reach {config.base_url} ({type(exc).__name__}). Check region / api_base_url "
        "and that this host can reach Mixpanel."
    )


def _masked(body: bytes, config: Config) -> bytes:
    """An error body with every form of the secret masked, before it is cut short for a message: a
    server may echo the Authorization header, and a form cut in half would no longer be recognised."""
    text = body[:SAMPLE_MAX_BYTES].decode("utf-8", errors="replace")
    for form in config.secret_forms():
        text = text.replace(form, "****")
    return text.encode()


def _events(body: bytes) -> list[Any]:
    """The events of a sample body; lines that do not parse (or were cut off by the size cap) are left out.

    Lines are found one at a time, empty ones skipped unseen: `split` would make a list of every line
    first, 8 million entries (64 MB of pointers) for a sample of newlines."""
    events = []
    for match in _LINE.finditer(body):
        try:
            events.append(orjson.loads(match.group()))
        except orjson.JSONDecodeError:
            continue
    return events


def _refusal(config: Config, day: dt.date, status: int, text: str) -> str:
    """What to fix when Mixpanel refused the sample request, by the read's own classification
    (retry.status_failure): check does not retry, so what a read would retry is "try again later"."""
    failure = status_failure(config, status, text, None)
    if isinstance(failure, DateAfterToday):
        return _day_ahead(config, day)
    if isinstance(failure, Retriable) and failure.rate_limited:
        return f"Mixpanel's rate limit is exhausted right now ({status}); try again in a few minutes."
    if isinstance(failure, Retriable | TooLarge):
        return f"Mixpanel is failing right now ({status}: {text}); try again later."
    return getattr(failure, "message", None) or str(failure)


def _day_ahead(config: Config, day: dt.date) -> str:
    """Mixpanel's today is behind ours: the project reads dates in a timezone west of the one configured."""
    said = (
        f"Mixpanel refused {day}, today in {config.request_timezone}, as later than the project's today: "
        f"the project reads dates in a timezone behind {config.request_timezone}."
    )
    if not config.legacy_local_time:
        return (
            f"{said} Projects created before 2023 do that (and store event times in that timezone): turn on "
            f"legacy_local_time and set project_timezone to {SETTINGS_HINT}."
        )
    return (
        f"{said} Set project_timezone to {SETTINGS_HINT} (now {config.project_timezone}); if the project was "
        "created in 2023 or later, turn off legacy_local_time instead (such projects read dates in UTC)."
    )


@dataclass(frozen=True)
class TimeFinding:
    """How the sample's event times sit against the moments Mixpanel received the events."""

    events: int  # events in the sample that carry both times
    observed_ms: int | None  # the project's offset of `time` from true UTC, snapped to a quarter hour
    assumed_ms: int  # the offset the settings assume (the median over the sample)
    residual_ms: int | None  # observed minus assumed, snapped; None when the sample does not agree
    agreeing: int  # events within the delivery slack of the residual
    median_ms: int | None = None  # median of `time` (read as the settings say) minus receipt

    @property
    def mismatch(self) -> bool:
        """The settings shift event times by a consistent, whole quarter-hour offset of at least 30 min."""
        return self.residual_ms is not None and abs(self.residual_ms) >= MIN_OFFSET_MS

    def summary(self, config: Config) -> str:
        """A log line that says what the sample showed."""
        if self.events < MIN_EVIDENCE:
            return (
                f"Timezone settings not verified: only {self.events} recent events carry both `time` and "
                "$mp_api_timestamp_ms."
            )
        median = self.median_ms or 0
        gap = f"`time` minus receipt is a median {'-' if median < 0 else '+'}{_span(median)}"
        if self.mismatch:
            return (
                f"Timezone settings ({_settings(config)}) do not fit: in {self.events} sampled events {gap}; "
                f"the project stores times at UTC{_offset(self.observed_ms or 0)}."
            )
        if abs(median) < MIN_OFFSET_MS:
            return f"Timezone settings ({_settings(config)}) fit: in {self.events} sampled events {gap}."
        return (
            f"Timezone settings not verified: in {self.events} sampled events {gap}, but not consistently "
            "enough to blame the settings (late or imported events?)."
        )

    def problem(self, config: Config) -> str:
        """What to change, for a finding that is a mismatch."""
        observed = self.observed_ms or 0
        seen = (
            f"In {self.agreeing} of {self.events} recent events, `time` is {_span(self.residual_ms or 0)} "
            f"{'ahead of' if (self.residual_ms or 0) > 0 else 'behind'} what the settings ({_settings(config)}) "
            f"expect, compared with when Mixpanel received them ($mp_api_timestamp_ms): the project stores "
            f"times at UTC{_offset(observed)}."
        )
        if not config.legacy_local_time:
            return (
                f"{seen} Projects created before 2023 store event times in the project timezone: turn on "
                f"legacy_local_time and set project_timezone to {SETTINGS_HINT}."
            )
        if abs(observed) < MIN_OFFSET_MS:
            return (
                f"{seen} Its event times are already UTC: turn off legacy_local_time (projects created in "
                "2023 or later store UTC)."
            )
        return (
            f"{seen} {config.project_timezone} is UTC{_offset(self.assumed_ms)} at those times: set "
            f"project_timezone to {SETTINGS_HINT}."
        )


def compare_times(events: Iterable[Any], config: Config) -> TimeFinding:
    """Compare each event's `time`, read the way the settings say, with when Mixpanel received it.

    Read right, an event's time is a little before its receipt (delivery delay). Read with the wrong
    settings, the whole sample sits a UTC offset away: a legacy project read as UTC shows its local
    offset, a UTC project read as legacy the negated offset of project_timezone. Only a whole quarter
    hour of at least 30 minutes counts, and only when most of the sample sits just below it and the
    median within a few minutes of it: late or imported events, or a steady pipeline delay, cannot
    fake a finding.
    """
    clock = LegacyClock(config.project_timezone) if config.legacy_local_time else None
    raw_gaps: list[int] = []
    assumed: list[int] = []
    for event in events:
        pair = _times(event)
        if pair is None:
            continue
        shown, received = pair
        raw_gaps.append(shown - received)
        assumed.append(shown - clock.to_utc_ms(shown) if clock else 0)
    count = len(raw_gaps)
    assumed_ms = int(statistics.median_low(assumed)) if assumed else 0
    if count < MIN_EVIDENCE:
        return TimeFinding(count, None, assumed_ms, None, 0)
    residuals = [gap - offset for gap, offset in zip(raw_gaps, assumed, strict=True)]
    median = int(statistics.median_low(residuals))
    residual, agreeing = _common_offset(residuals)
    observed, _ = _common_offset(raw_gaps)
    if agreeing < AGREEING_SHARE * count or not -SKEW_SLACK_MS <= residual - median <= MEDIAN_DELAY_MS:
        return TimeFinding(count, None, assumed_ms, None, agreeing, median)
    return TimeFinding(count, observed, assumed_ms, residual, agreeing, median)


def _common_offset(gaps: list[int]) -> tuple[int, int]:
    """The quarter hour next to the median gap that most gaps sit just below, and how many do."""
    middle = statistics.median_low(gaps)
    below = middle // QUARTER_HOUR_MS * QUARTER_HOUR_MS
    candidates = (below, below + QUARTER_HOUR_MS)
    scored = [(sum(1 for g in gaps if -DELAY_SLACK_MS <= g - c <= SKEW_SLACK_MS), c) for c in candidates]
    agreeing, offset = max(scored)
    return offset, agreeing


def _times(event: Any) -> tuple[int, int] | None:
    """(`time` as epoch ms, receipt epoch ms) of an exported event, or None when either is missing."""
    if not isinstance(event, Mapping):
        return None
    props = event.get("properties")
    if not isinstance(props, Mapping):
        return None
    shown: Any
    received: Any
    shown, received = props.get("time"), props.get("$mp_api_timestamp_ms", props.get("mp_processing_time_ms"))
    if not _is_number(shown) or not _is_number(received):
        return None
    shown_ms = int(shown) if shown >= 100_000_000_000 else int(shown * 1000)  # seconds if time_in_ms was ignored
    return shown_ms, int(received)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _settings(config: Config) -> str:
    if config.legacy_local_time:
        return f"legacy_local_time on, project_timezone {config.project_timezone}"
    return "legacy_local_time off: times read as UTC"


def _offset(ms: int) -> str:
    """+05:30 / -07:00 for an offset in milliseconds."""
    sign = "-" if ms < 0 else "+"
    minutes = abs(ms) // MINUTE_MS
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _span(ms: int) -> str:
    """7 h / 5 h 30 min / 12 min / 40 s for a duration in milliseconds."""
    if abs(ms) < MINUTE_MS:
        return f"{abs(ms) // 1000} s"
    minutes = abs(ms) // MINUTE_MS
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if hours and rest else (f"{hours} h" if hours else f"{rest} min")
