"""The `export` stream: plan windows, fetch them in order, turn lines into records, checkpoint.

The data path reads top to bottom in `ExportReader.read`: config → windows → HTTP → lines →
records → state. Items it yields are batches of records (records.Batch) or ready AirbyteMessages.
"""

from __future__ import annotations

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
from .plan import Plan
from .prefetch import fetch_in_order
from .records import Batch, Tally, make_builder, window_records
from .state import Checkpoints, ExportState, bind, sync_plan
from .windows import Window

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

    def read(self, mode: SyncMode, state: ExportState) -> Iterator[Item]:
        """Records, then a STATE after every complete window (incremental) or every window (full refresh)."""
        plan, checkpoints = self._start(mode, state)
        yield self._estimate(None)
        started, done = self._clock.monotonic(), 0
        try:
            for download in fetch_in_order(plan, self._client.fetch, self._config.max_concurrent_requests):
                done += 1
                count = yield from self._records(download)
                self._log_progress(download, count, done, started)
                if done == 1:
                    yield self._estimate(plan.estimate())
                yield from map(state_message, checkpoints.after(download.window, download.server_time_ms))
        finally:
            self._stop.set()
        peak = self._client.meter.peak
        self._logger.info(f"Read {plan.first}..{plan.end}; the spill files held at most {peak / 1e6:.1f} MB.")
        yield from map(state_message, checkpoints.final())

    def _start(self, mode: SyncMode, state: ExportState) -> tuple[Plan, Checkpoints]:
        """The sync's plan of windows and its checkpoints, from the state it starts from (checked here)."""
        incremental = mode == SyncMode.incremental
        if not incremental:
            state = ExportState()
        for note in state.notes:
            self._logger.warning(note)
        if state.migrated_from:
            self._logger.info(f"Migrating the official connector's state ({state.migrated_from}).")
        if incremental:
            state = bind(state, self._config)
        sync = sync_plan(self._config, state, self._today)
        self._logger.info(
            f"Reading {sync.first}..{sync.end} ({self._config.request_timezone} days) in {mode.value} mode, "
            f"up to {self._config.date_window_size} days and about {self._config.window_target_events} "
            "events per request."
        )
        self._plan = Plan(sync, self._config, self._budget.left_this_hour, self._logger)
        return self._plan, Checkpoints(sync.state, incremental, self._config, self._plan)

    def _records(self, download: Download) -> Generator[Batch, None, int]:
        """The window's records, in the order Mixpanel sent them; returns how many.

        Lines the body check found not to be JSON objects fail the window before any of it is emitted
        (unless skipped); JSON that is not an event is found while the window is emitted, and fails it
        then: no STATE covers the window, so the next sync reads it again.
        """
        window = download.window
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

    def _estimate(self, rows: int | None) -> AirbyteMessage:
        """An ESTIMATE trace: first without figures, then the first window's volume times the sync's days."""
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
        backfill = self._plan.backfill_left()
        self._logger.info(
            f"Window {download.window.label()}: {count} records, {download.size / 1e6:.1f} MB "
            f"({download.spill.stored / 1e6:.1f} MB as sent) in {download.seconds:.1f} s "
            f"({download.attempts} attempt(s)); {done} windows in {elapsed:.0f} s; "
            f"{self._plan.days_left()} days left" + (f" ({backfill})" if backfill else "") + "; "
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

