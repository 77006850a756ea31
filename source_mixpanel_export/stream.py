"""The `export` stream: plan windows, fetch them in order, turn lines into records, checkpoint.

The data path reads top to bottom in `ExportReader.read`: config → windows → HTTP → lines →
records → state. Items it yields are batches of records (records.Batch) or ready AirbyteMessages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Generator, Iterator, Mapping
from typing import Any

from airbyte_cdk.models import (
    AirbyteEstimateTraceMessage,
    AirbyteMessage,
    AirbyteStateBlob,
    AirbyteStateMessage,
    AirbyteStateType,
    AirbyteStreamState,
    AirbyteTraceMessage,
    EstimateType,
    StreamDescriptor,
    SyncMode,
    TraceType,
    Type,
)
from airbyte_cdk.sources.streams import Stream

from .budget import RateBudget
from .catalog import EXPORT, StreamDef
from .client import Cancelled, Download, ExportClient
from .clock import Clock
from .config import Config
from .errors import system_error
from .prefetch import fetch_in_order
from .records import Batch, Tally, make_builder, window_records
from .retry import DateAfterToday, TooLarge
from .state import NO_CURSOR_MARKER, ExportState, SyncPlan, bind, sync_plan
from .sweep import block_days, syncs_per_pass
from .windows import ONE_DAY, Listed, Planner, SameAnswers, Segment, Window, split_window

Item = Batch | AirbyteMessage  # a batch of records, or a message ready to write


def state_message(state: Mapping[str, Any], stream: str = EXPORT.name) -> AirbyteMessage:
    """A per-stream STATE message of `stream` (this module's, export, unless another is named)."""
    return AirbyteMessage(
        type=Type.STATE,
        state=AirbyteStateMessage(
            type=AirbyteStateType.STREAM,
            stream=AirbyteStreamState(
                stream_descriptor=StreamDescriptor(name=stream),
                stream_state=AirbyteStateBlob(**state),
            ),
        ),
    )


class ExportReader:
    """One sync of the export stream, full refresh or incremental."""

    def __init__(
        self,
        config: Config,
        logger: logging.Logger,
        now: dt.datetime | None = None,
        clock: Clock | None = None,
        client: ExportClient | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """`clock` (default: the machine's, sleeping on the sync's stop event) times every wait; `stop`,
        set from outside, ends the read after the batch being emitted and cancels every download."""
        self._config = config
        self._logger = logger
        self._stop = stop or threading.Event()
        self._clock = clock or Clock.real(self._stop)
        self._budget = RateBudget(config.requests_per_second, config.requests_per_hour, self._clock, logger)
        self._client = client or ExportClient(config, self._budget, self._clock, self._stop, logger)
        self._today = config.today(now)
        self._end = self._today
        self._pieces = SameAnswers()

    def read(self, mode: SyncMode, state: ExportState) -> Iterator[Item]:
        """Records, then a STATE after every complete window (incremental) or every window (full refresh)."""
        incremental = mode == SyncMode.incremental
        if not incremental:
            state = ExportState()
        for note in state.notes:
            self._logger.warning(note)
        if state.migrated_from:
            self._logger.info(f"Migrating the official connector's state ({state.migrated_from}).")
        if incremental:
            state = bind(state, self._config)
        plan = sync_plan(self._config, state, self._today)
        state = plan.state
        self._end = plan.end
        planner = Planner(
            plan.segments, self._config.date_window_size, self._config.window_target_events,
            self._config.request_timezone, state.events_per_day,
        )
        self._planner = planner
        yield self._estimate()
        self._logger.info(
            f"Reading {plan.first}..{plan.end} ({self._config.request_timezone} days) in {mode.value} mode, "
            f"up to {self._config.date_window_size} days and about {self._config.window_target_events} "
            "events per request."
        )
        watermark: int | None = None
        written: dict[str, Any] | None = None  # the last STATE written
        started, done = self._clock.monotonic(), 0
        try:
            for download in self._fetch(planner):
                done += 1
                window = download.window
                if window.first_day > self._end:  # past Mixpanel's today, answered as its day rolled over:
                    continue  # a piece of that day may have been dropped, so none of it counts
                count = yield from self._records(download)
                if watermark is None or download.server_time_ms < watermark:
                    watermark = download.server_time_ms
                self._log_progress(download, count, done, started)
                if done == 1:
                    yield self._estimate(plan, planner)
                if window.time_to is not None:  # an inner piece of a split day: the day is not done
                    continue
                if incremental:
                    state = state.progressed(window.last_day, watermark).sized(planner.rate())
                    yield state_message(written := state.to_dict())
                else:
                    yield state_message({NO_CURSOR_MARKER: True})
            if incremental and watermark is not None and self._end >= plan.first:
                # History days an attribution window longer than the recent days made the sync re-read
                # are checked anew, so that the next sync does not ask for their late arrivals again.
                state = state.checked(plan.first, self._end, watermark)
                state = state.completed(self._end, watermark).settled(self._config).sized(planner.rate())
            # The sweep comes after every window of fresh data, and after their STATE: a sweep that
            # fails or is killed leaves the fresh data checkpointed.
            if incremental and plan.sweep and self._sweep_allowed(plan):
                yield state_message(written := state.to_dict())
                for download in self._fetch(Listed(plan.sweep)):
                    done += 1
                    count = yield from self._records(download)
                    watermark = min(download.server_time_ms, watermark or download.server_time_ms)
                    self._log_progress(download, count, done, started)
                    if download.window.time_to is None:  # not an inner piece of a split day
                        state = state.checked(download.window.first_day, download.window.last_day, watermark)
                        yield state_message(written := state.to_dict())
        finally:
            self._stop.set()
        peak = self._client.meter.peak
        self._logger.info(f"Read {plan.first}..{self._end}; the spill files held at most {peak / 1e6:.1f} MB.")
        if incremental:
            if state.to_dict() != written:
                yield state_message(state.to_dict())
        elif watermark is None:
            yield state_message({NO_CURSOR_MARKER: True})

    def _fetch(self, planner: Planner | Listed) -> Iterator[Download]:
        workers, replaceable = self._config.max_concurrent_requests, (TooLarge, DateAfterToday)
        return fetch_in_order(planner, self._client.fetch, workers, self._replace, replaceable)

    def _sweep_allowed(self, plan: SyncPlan) -> bool:
        """Whether the sweep may run now: not when the hourly budget left cannot pay for it (it would
        make the sync wait for the next hour)."""
        sweep, left = plan.sweep, self._budget.left_this_hour()
        if left < len(sweep):
            self._logger.info(
                f"Skipping the history sweep this sync: {left} export queries are left in this hour's "
                f"budget and it needs {len(sweep)}. The next sync sweeps instead."
            )
            return False
        history = plan.state.history_days(self._config.start_day())
        block = block_days(self._config.date_window_size, self._config.attribution_window)
        self._logger.info(
            f"History sweep: {len(sweep)} window(s) of old days, for events that arrived after they were "
            "last checked: " + ", ".join(w.label() for w in sweep) + f". Checking all {history} days of "
            f"history takes {syncs_per_pass(history, block, len(sweep))} syncs like this one."
        )
        return True

    def _records(self, download: Download) -> Generator[Batch, None, int]:
        """The window's records, in the order Mixpanel sent them; returns how many.

        Lines the body check found not to be JSON objects fail the window before any of it is emitted
        (unless skipped); JSON that is not an event is found while the window is emitted, and fails it
        then: no STATE covers the window, so the next sync reads it again.
        """
        window = download.window
        self._same_answer(window, download.head)
        if download.malformed_lines and not self._config.skip_bad_lines:
            self._bad_lines(window, download.malformed_lines, download.first_malformed_line or 0)
        tally = Tally()
        build = make_builder(self._config.legacy_timezone, self._config.records_not_before(window.first_day))
        for batch in window_records(download.chunks(), build, tally):
            yield batch
            if self._stop.is_set():  # asked to stop from outside (the read's own end sets it later)
                raise Cancelled()
        if tally.bad:
            self._bad_lines(window, tally.bad, tally.first_bad or 0)
        return tally.count

    def _bad_lines(self, window: Window, bad: int, first_bad: int) -> None:
        text = f"Window {window.label()}: {bad} lines are not JSON events (first at line {first_bad})"
        if self._config.skip_bad_lines:
            self._logger.warning(text + "; skipped because skip_bad_lines is on.")
            return
        raise system_error(
            text + ", also after asking again. Nothing after the last checkpoint is lost: the next "
            "sync reads this window again. To skip such lines instead, turn on skip_bad_lines.",
        )

    def _same_answer(self, window: Window, head: bytes | None) -> None:
        """Fail when this piece's answer proves the server ignores the time filter (windows.SameAnswers)."""
        whole = self._pieces.ignored_by(window, head)
        if whole is not None:
            raise system_error(
                f"{self._config.base_url} answered two pieces of window {whole.label()}, the last "
                f"{window.label()}, with the start of the whole window's own answer: it ignores the time "
                "filter (where) that splitting a large window relies on, so every piece would hold the whole. "
                "Mixpanel's export API honours it: check api_base_url and what stands between this machine "
                "and Mixpanel."
            )

    def _replace(self, window: Window, exc: Exception) -> list[Window]:
        """What to fetch instead of a window Mixpanel could not or would not answer as asked."""
        if isinstance(exc, TooLarge):
            self._same_answer(window, exc.head)
            parts = split_window(window, self._config.request_timezone)
            if parts is None:
                raise system_error(
                    f"Mixpanel timed out on window {window.label()} even at one hour ({exc}). "
                    "Narrow the export with events or where.",
                )
            self._logger.info(
                f"Window {window.label()} is too large ({exc}); splitting it into "
                + ", ".join(p.label() for p in parts) + "."
            )
            self._pieces.split(window, exc.head, parts)
            return parts
        last = min(window.last_day - ONE_DAY, self._end)
        self._logger.warning(
            f"Mixpanel says {window.last_day} is later than its today ({exc}): its clock or the "
            f"project's timezone is behind ours. Reading up to {last} instead; check project_timezone."
        )
        self._end = min(self._end, last)
        self._planner.stop_after(last)
        if last < window.first_day:
            return []
        return [dataclasses.replace(window, last_day=last)]

    def _estimate(self, plan: SyncPlan | None = None, planner: Planner | None = None) -> AirbyteMessage:
        """An ESTIMATE trace: first without figures, then the first window's volume times the sync's days."""
        rows = None
        if plan is not None and planner is not None:
            days = {late: sum(_days(s) for s in plan.segments if (s.processed_after_ms is not None) == late)
                    for late in (False, True)}
            rows = int(sum((planner.rate(late) or 0.0) * days[late] for late in days))
        return AirbyteMessage(
            type=Type.TRACE,
            trace=AirbyteTraceMessage(
                type=TraceType.ESTIMATE,
                emitted_at=self._clock.wall() * 1000,
                estimate=AirbyteEstimateTraceMessage(name=EXPORT.name, type=EstimateType.STREAM, row_estimate=rows),
            ),
        )

    def _log_progress(self, download: Download, count: int, done: int, started: float) -> None:
        elapsed = self._clock.monotonic() - started
        self._logger.info(
            f"Window {download.window.label()}: {count} records, {download.size / 1e6:.1f} MB "
            f"({download.spill.stored / 1e6:.1f} MB as sent) in {download.seconds:.1f} s "
            f"({download.attempts} attempt(s)); {done} windows in {elapsed:.0f} s; "
            f"{self._planner.days_left()} days left; "
            f"{self._budget.left_this_hour()} export queries left in this sync's hourly budget."
        )


class ExportStream(Stream):
    """The stream as the CDK sees it (for discover): its definition's name, schema, keys and cursor
    (reading goes through ExportReader)."""

    def __init__(self, config: Config, definition: StreamDef) -> None:
        super().__init__()
        self._config = config
        self._definition = definition

    @property
    def name(self) -> str:
        return self._definition.name

    @property
    def primary_key(self) -> list[list[str]]:
        return self._definition.primary_key

    @property
    def source_defined_cursor(self) -> bool:
        return True

    @property
    def supports_incremental(self) -> bool:
        return bool(self._definition.cursor_field)

    @property
    def cursor_field(self) -> list[str]:
        return self._definition.cursor_field

    def get_json_schema(self) -> Mapping[str, Any]:  # type: ignore[override]  # the CDK's is lru_cache-wrapped
        return self._definition.schema

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: list[str] | None = None,
        stream_slice: Mapping[str, Any] | None = None,
        stream_state: Mapping[str, Any] | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Not a read path: SourceMixpanelExport.read replaces the CDK's, which is the only caller of this
        (abstract in the CDK's Stream, so it must exist). Every read goes through ExportReader."""
        raise NotImplementedError("read through SourceMixpanelExport.read (ExportReader)")


def _days(segment: Segment) -> int:
    return (segment.last_day - segment.first_day).days + 1
