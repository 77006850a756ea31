"""The `profiles` stream: ask the plan for a range, read its pages in one session, emit, checkpoint.

The data path, top to bottom: config → ranges of `$last_seen` (profile_plan, profile_ranges) → HTTP
(engage.py) → pages → records (profiles.py) → batches and STATE messages (profile_state.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Iterator

import orjson
from airbyte_cdk.models import SyncMode

from .budget import RateBudget
from .clock import Clock
from .config import Config
from .engage import EngageClient, SessionLost
from .errors import system_error
from .profile_plan import ProfilePlan, Verdict
from .profile_ranges import Range
from .profile_state import ProfileState
from .profiles import LAST_SEEN, Page, last_seen_seconds
from .records import Batch
from .stream import Item, state_message
from .waits import Cancelled

NAME = "profiles"
SESSION_RESTARTS = 3  # sessions lost in one range before the sync stops
# Ids kept per range so that a restarted session emits no profile twice: ~100 bytes each. A range past
# this (one second of $last_seen, or the profiles without one) may repeat profiles after a restart.
REMEMBERED_IDS = 500_000
PAGES_PAST_TOTAL = 2  # pages a session may send past what page 0's total makes (profiles added meanwhile)
PAGES_WITHOUT_TOTAL = 500  # pages of a session whose page 0 gave no total (of 1,000: the ids a range remembers)
_Read = tuple[int, int | None, int, int | None]


class ProfileReader:
    """One sync of the profiles stream, full refresh or incremental."""

    def __init__(
        self,
        config: Config,
        logger: logging.Logger,
        clock: Clock | None = None,
        client: EngageClient | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._config = config
        self._logger = logger
        self._stop = stop or threading.Event()
        self._clock = clock or Clock.real(self._stop)
        # Mixpanel's Query API limits queries per hour and 5 at once, none per second: this stream sends one
        # at a time, so the per-second rate is the hourly one
        per_hour = config.profile_requests_per_hour
        self._budget = RateBudget(per_hour, per_hour, self._clock, logger, name="Query API")
        self._client = client or EngageClient(config, self._budget, self._clock, self._stop, logger)
        self._requests = 0

    def read(self, mode: SyncMode, state: ProfileState) -> Iterator[Item]:
        """Records, and a STATE after every range read whole (both modes: a killed sync resumes there)."""
        incremental = mode == SyncMode.incremental
        config = self._config
        plan = ProfilePlan(
            state, incremental, int(self._clock.wall()), config.profile_sweep_requests, config.profile_range_pages
        )
        self._logger.info(f"Reading profiles in {mode.value} mode: a {plan.kind()} walk.")
        written = None
        while (rng := plan.next()) is not None:
            kind = plan.kind()
            read = yield from self._range(rng, plan)
            if read is None:
                continue  # narrowed, or the sweep stopped: the plan knows
            count, total, requests, earliest = read
            written = plan.read(rng, count, requests, earliest)
            yield state_message(written, NAME)
            counted = "page 0 gave no total" if total is None else f"of {total} (page 0's total)"
            self._logger.info(
                f"Profiles {rng.label()} ({kind}): {count} read {counted} in {requests} "
                f"request(s); {self._requests} Engage requests in this sync; {self._budget.left_this_hour()} Query "
                "API queries left in its hourly budget."
            )
        self._logger.info(f"Profiles done in {self._requests} Engage requests.")
        if plan.state.to_dict() != written:
            yield state_message(plan.state.to_dict(), NAME)

    def _range(self, rng: Range, plan: ProfilePlan) -> Generator[Item, None, _Read | None]:
        """Read `rng` from page 0 to its last page in one session (a new one if Mixpanel loses it), emitting
        each page's profiles; (profiles emitted, page 0's total, requests, the earliest date of `$last_seen`),
        or None when the plan narrows it or stops it."""
        page = self._page(rng, 0, None)
        plan.page_size = page.page_size
        total = page.total if page.total is not None or page.full() else len(page.records)
        sample = _last_seen(page)
        if plan.verdict(rng, total, sample) is not Verdict.READ:
            return None
        emitted: set[str] = set()
        count, requests, number, restarts, earliest = 0, 1, 0, 0, None
        while True:
            # only after a restart: one session never repeats a profile (4 and "4" are two, with one key)
            fresh = [r for r in page.records if r["distinct_id"] not in emitted] if restarts else page.records
            if fresh:
                yield Batch(records=fresh)
            known = len(emitted)
            if known < REMEMBERED_IDS:
                emitted.update(r["distinct_id"] for r in fresh)
            repeated = not restarts and known < REMEMBERED_IDS and len(emitted) == known
            count += len(fresh)
            earliest = _earliest(earliest, _last_seen(page))
            if not page.full():
                return count, total, requests, earliest
            self._check_paging(rng, page, number, total, plan.page_size, repeated)
            if not plan.more(requests, rng, sample):
                return None
            number += 1
            requests += 1
            try:
                page = self._page(rng, number, page.session_id)
            except SessionLost as lost:
                if not plan.more(requests, rng, sample):  # the restart's page 0 would pass the sweep's bound
                    return None
                restarts += 1
                if restarts > SESSION_RESTARTS:
                    raise system_error(
                        f"Mixpanel lost the session of profiles {rng.label()} {restarts} times ({lost}). Everything "
                        "before this range was delivered and checkpointed; the next sync resumes there."
                    ) from None
                self._logger.warning(
                    f"Profiles {rng.label()}: Mixpanel no longer knows the session at page {number} ({lost}); "
                    f"reading the range again from page 0, without the {len(emitted)} profiles already emitted."
                )
                number, requests = 0, requests + 1
                page = self._page(rng, 0, None)

    @staticmethod
    def _check_paging(rng: Range, page: Page, number: int, total: int | None, page_size: int, repeated: bool) -> None:
        """A full page asks for the next one: not past page 0's total in page 0's page size, and not when it
        brought no profile the session had not sent already (a server that pages for ever would hold the sync
        for ever)."""
        what = f"Page {number} of profiles {rng.label()}"
        if page.session_id is None:
            raise system_error(f"{what} is full but names no session_id.")
        if total is not None and number >= total // page_size + PAGES_PAST_TOTAL:
            raise system_error(f"{what} is full, yet page 0 counted {total} profiles: Mixpanel's paging does not end.")
        if total is None and number + 1 >= PAGES_WITHOUT_TOTAL:
            raise system_error(f"{what} is full, and page 0 gave no total: Mixpanel's paging does not end.")
        if repeated:
            raise system_error(f"{what} is full of profiles this session sent already: Mixpanel's paging does not end.")

    def _page(self, rng: Range, number: int, session_id: str | None) -> Page:
        form = {"where": rng.where(), "page": str(number)}
        if session_id is not None:
            form["session_id"] = session_id
        if self._config.profile_properties:
            names = dict.fromkeys([*self._config.profile_properties, LAST_SEEN])  # $last_seen places every profile
            form["output_properties"] = orjson.dumps(list(names)).decode()
        if self._config.profile_cohort_id is not None:
            form["filter_by_cohort"] = orjson.dumps({"id": self._config.profile_cohort_id}).decode()
        if self._stop.is_set():
            raise Cancelled()
        self._requests += 1
        return self._client.page(form, f"profiles {rng.label()} page {number}")


def _last_seen(page: Page) -> list[int | None]:
    """The page's `$last_seen` as epoch seconds, in its order (None: none, or no date)."""
    return [last_seen_seconds(r["properties"].get(LAST_SEEN)) for r in page.records]


def _earliest(earliest: int | None, seen: list[int | None]) -> int | None:
    return min((s for s in (earliest, *seen) if s is not None), default=None)
