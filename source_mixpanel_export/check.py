"""`check`: one cheap request to the export endpoint itself, and an answer a person can act on."""

from __future__ import annotations

import logging
import threading

import requests

from .budget import RateBudget
from .client import ExportClient, describe_rejection, error_message
from .config import Config


def run_check(config: Config, logger: logging.Logger) -> tuple[bool, str | None]:
    """(True, None) when Mixpanel answers an export of today (limit 1), else (False, what to fix)."""
    budget = RateBudget(config.requests_per_second, config.requests_per_hour, logger=logger)
    client = ExportClient(config, budget, logger, stop=threading.Event())
    today = config.today()
    try:
        status, body, _headers = client.probe(today)
    except requests.RequestException as exc:
        return False, (
            f"Could not reach {config.base_url} ({type(exc).__name__}). Check region / api_base_url "
            "and that this host can reach Mixpanel."
        )
    text = error_message(body)
    if status == 200:
        return True, None
    if status == 400 and "cannot be later than today" in text.lower():
        return False, (
            f"Mixpanel says {today} (today in {config.request_timezone}) is later than the project's "
            "today: the project reads dates in a timezone behind that one. If it was created before "
            "2023, turn on legacy_local_time and set project_timezone to the project's timezone "
            "(Project Settings > Overview)."
        )
    if status == 429:
        return False, "Mixpanel's rate limit is exhausted right now (429); try again in a few minutes."
    if status >= 500:
        return False, f"Mixpanel is failing right now ({status}: {text}); try again later."
    error = describe_rejection(config, status, text)
    return False, getattr(error, "message", None) or str(error)
