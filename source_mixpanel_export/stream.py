"""The `export` stream: plan windows, fetch them in order, turn lines into records, checkpoint.

The data path reads top to bottom in `ExportReader.read`: config → windows → HTTP → lines →
records → state. Items it yields are record dicts (hot path) or ready AirbyteMessages (state, logs).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import functools
import logging
import threading
import time
from collections.abc import Iterator, Mapping
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

from .bodies import ENCODED, EncodedBody, EncodedFile
from .budget import RateBudget
from .client import Cancelled, DateAfterToday, Download, ExportClient, TooLarge, first_attempt_of
from .config import Config
from .errors import config_error, system_error, transient_error
from .headstart import HeadStart, HeadStartMissed
from .prefetch import fetch_in_order
from .records import CURSOR_FIELD, PRIMARY_KEY, SCHEMA, STREAM_NAME, Tally, make_builder, window_records
from .state import NO_CURSOR_MARKER, ExportState, sync_windows
from .windows import ONE_DAY, Window, split_window
from .workers import EncoderPool, WorkerFailed

# A record dict, a window's RECORD lines made by the encoding workers (fast path only), or a message.
Item = dict[str, Any] | EncodedBody | EncodedFile | AirbyteMessage


def state_message(state: Mapping[str, Any]) -> AirbyteMessage:
    """A per-stream STATE message for the export stream."""
    return AirbyteMessage(
        type=Type.STATE,
        state=AirbyteStateMessage(
            type=AirbyteStateType.STREAM,
            stream=AirbyteStreamState(
                stream_descriptor=StreamDescriptor(name=STREAM_NAME),
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
        client: ExportClient | None = None,
        now: dt.datetime | None = None,
        encoder: EncoderPool | None = None,
        head_start: HeadStart | None = None,
    ) -> None:
        """With an `encoder`, windows come out as EncodedBody items rather than record dicts; a
        `head_start`'s downloads are used if it planned the same first windows."""
        self._config = config
        self._logger = logger
        self._stop = threading.Event()
        self._budget = RateBudget(
            config.requests_per_second, config.requests_per_hour, logger=logger, sleep=self._stop.wait
        )
        self._client = client or ExportClient(config, self._budget, logger, stop=self._stop, encoder=encoder)
        self._today = config.today(now)
        self._end = min(config.end_day or self._today, self._today)
        self._head_start = head_start
        if head_start is not None:
            head_start.connect(self._budget)

    def read(self, mode: SyncMode, state: ExportState) -> Iterator[Item]:
        """Records, then a STATE after every complete window (incremental) or every window (full refresh)."""
        incremental = mode == SyncMode.incremental
        if not incremental:
            state = ExportState()
        elif state.migrated_from:
            self._logger.info(f"Migrating the official connector's state ({state.migrated_from}).")
        first, windows = sync_windows(self._config, state, self._end)
        adopted = self._head_start.adopt(self._config, incremental, windows) if self._head_start else {}
        fetch_for = {window: functools.partial(self._adopted, started) for window, started in adopted.items()}
        yield self._estimate()
        self._logger.info(
            f"Reading {len(windows)} windows ({first}..{self._end}, {self._config.request_timezone} days) "
            f"in {mode.value} mode."
        )
        watermark: int | None = None
        started = time.monotonic()
        try:
            downloads = fetch_in_order(
                windows, self._client.fetch, self._config.max_concurrent_requests,
                self._replace, (TooLarge, DateAfterToday), fetch_for,
            )
            for done, download in enumerate(downloads, start=1):
                count = yield from self._records(download)
                window = download.window
                if watermark is None or download.server_time_ms < watermark:
                    watermark = download.server_time_ms
                if window.time_to is not None:  # an inner piece of a split day: the day is not done
                    continue
                if incremental:
                    state = state.progressed(window.last_day, watermark)
                    yield state_message(state.to_dict())
                else:
                    yield state_message({NO_CURSOR_MARKER: True})
                self._log_progress(download, count, done, len(windows), started)
                if done == 1 and len(windows) > 1:  # one window's size, times the windows planned
                    yield self._estimate(count * len(windows), download.size * len(windows))
        except WorkerFailed as exc:  # raised in a download thread, while handing a block to the workers
            raise transient_error(f"Records could not be encoded: {exc}.") from None
        finally:
            self._stop.set()
            if self._head_start is not None:
                self._head_start.cancel()
        if incremental:
            if watermark is not None and self._end >= first:
                state = state.completed(self._end, watermark)
            yield state_message(state.to_dict())
        elif not windows:
            yield state_message({NO_CURSOR_MARKER: True})

    def _records(self, download: Download) -> Iterator[dict[str, Any] | EncodedBody | EncodedFile]:
        """The window's records, in the order Mixpanel sent them; returns how many.

        Bad lines the body check found fail the window before any of it is emitted (unless skipped);
        so do those only parsing finds when the workers encoded the window, else they fail it after.
        """
        window, body = download.window, download.body
        if download.malformed_lines and not self._config.skip_bad_lines:
            self._bad_lines(window, download.malformed_lines, download.first_malformed_line or 0)
        if isinstance(body, ENCODED):
            try:
                tally = body.wait()
            except WorkerFailed as exc:
                raise transient_error(f"Window {window.label()} could not be encoded: {exc}.") from None
            if tally.bad:
                self._bad_lines(window, tally.bad, tally.first_bad or 0)
            if tally.count:
                yield body
            return tally.count
        tally = Tally()
        build = make_builder(self._config.legacy_timezone, self._config.records_not_before(window.first_day))
        yield from window_records(body.chunks(), build, tally)
        if tally.bad:
            self._bad_lines(window, tally.bad, tally.first_bad or 0)
        return tally.count

    def _adopted(self, started: cf.Future[Download], window: Window) -> Download:
        """The head start's download of `window`, run in a fetch slot like any fetch; if its attempt
        failed, the client goes on from there (the failed attempt counts as attempt 1)."""
        try:
            return started.result()
        except HeadStartMissed as missed:
            if self._stop.is_set():  # the sync is over (the workers were stopped with it): say nothing more
                raise Cancelled() from None
            self._logger.info(f"Window {window.label()}: the head start's attempt failed ({missed}); taking over.")
            return self._client.fetch(window, first_attempt_of(self._config, missed.result))

    def _bad_lines(self, window: Window, bad: int, first_bad: int) -> None:
        text = f"Window {window.label()}: {bad} lines are not JSON events (first at line {first_bad})"
        if self._config.skip_bad_lines:
            self._logger.warning(text + "; skipped because skip_bad_lines is on.")
            return
        raise system_error(
            text + ", also after asking again. Nothing after the last checkpoint is lost: the next "
            "sync reads this window again. To skip such lines instead, turn on skip_bad_lines.",
        )

    def _replace(self, window: Window, exc: Exception) -> list[Window]:
        """What to fetch instead of a window Mixpanel could not or would not answer as asked."""
        if isinstance(exc, TooLarge):
            parts = split_window(window, self._config.request_timezone)
            if parts is None:
                raise system_error(
                    f"Mixpanel timed out on window {window.label()} even at one hour ({exc}). "
                    "Narrow the export with events or where.",
                )
            self._logger.info(
                f"Mixpanel could not answer window {window.label()} in time; splitting it into "
                + ", ".join(p.label() for p in parts) + "."
            )
            return parts
        last = window.last_day - ONE_DAY
        self._logger.warning(
            f"Mixpanel says {window.last_day} is later than its today ({exc}): its clock or the "
            f"project's timezone is behind ours. Reading up to {last} instead; check project_timezone."
        )
        self._end = min(self._end, last)
        if last < window.first_day:
            return []
        return [dataclasses.replace(window, last_day=last)]

    def _estimate(self, rows: int | None = None, size: int | None = None) -> AirbyteMessage:
        """An ESTIMATE trace: first without figures, then extrapolated from the first window."""
        return AirbyteMessage(
            type=Type.TRACE,
            trace=AirbyteTraceMessage(
                type=TraceType.ESTIMATE,
                emitted_at=time.time() * 1000,
                estimate=AirbyteEstimateTraceMessage(
                    name=STREAM_NAME, type=EstimateType.STREAM, row_estimate=rows, byte_estimate=size
                ),
            ),
        )

    def _log_progress(self, download: Download, count: int, done: int, total: int, started: float) -> None:
        elapsed = time.monotonic() - started
        remaining = max(total - done, 0)
        eta = f", about {elapsed / done * remaining:.0f} s to go" if remaining and done else ""
        self._logger.info(
            f"Window {download.window.label()}: {count} records, {download.size / 1e6:.1f} MB in "
            f"{download.seconds:.1f} s ({download.attempts} attempt(s)); {done}/{total} windows done"
            f"{eta}; {self._budget.left_this_hour()} export queries left in this sync's hourly budget."
        )


class ExportStream(Stream):
    """The stream as the CDK sees it: name, schema, keys, cursor (reading goes through ExportReader)."""

    primary_key = PRIMARY_KEY
    name = STREAM_NAME

    def __init__(self, config: Config) -> None:
        super().__init__()
        self._config = config

    @property
    def source_defined_cursor(self) -> bool:
        return True

    @property
    def supports_incremental(self) -> bool:
        return True

    @property
    def cursor_field(self) -> list[str]:
        return CURSOR_FIELD

    def get_json_schema(self) -> Mapping[str, Any]:
        return SCHEMA

    def read_records(
        self,
        sync_mode: SyncMode,
        cursor_field: list[str] | None = None,
        stream_slice: Mapping[str, Any] | None = None,
        stream_state: Mapping[str, Any] | None = None,
    ) -> Iterator[Mapping[str, Any]]:
        """Every record of a full-refresh read (the connector's own read path is ExportReader)."""
        reader = ExportReader(self._config, self.logger)
        for item in reader.read(SyncMode.full_refresh, ExportState()):
            if isinstance(item, dict):
                yield item


def unknown_stream(name: str) -> Exception:
    """A catalog that asks for a stream this source does not have."""
    return config_error(f"The catalog asks for stream {name!r}; this source offers only {STREAM_NAME!r}.")
