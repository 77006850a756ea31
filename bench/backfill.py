"""`python -m bench.backfill`: how long a new connection to a project of a billion events a year takes to
deliver its last 30 days and its whole history, recent days first (recent_first_days 30) and oldest first (0).

A simulation in this process, of the connector's own decisions: the real `state.sync_plan`, `plan.Plan` and
`state.Checkpoints` plan and checkpoint every window, one sync after another, each from the last STATE the
one before wrote. Mixpanel is modelled by volume: a day holds `events_per_day` events of `bytes_per_event`
bytes, a window returns those of its days (and pieces) that happened before it was asked, a re-read of late
arrivals returns a small share, and a body past twice the target is abandoned and split, as the client does.
Time is the budget's: the n-th request of a sync leaves when the hour's budget (a moving hour, as
budget.RateBudget counts it) and the download slots allow, and a window is done when a destination taking
`rows_per_second` (None: any number) has taken its records, in order.

The request count depends only on events per day / window_target_events (and the event size, which counts
once an event is over 512 bytes), so the same figures hold at any scale: `--scale 10000` divides both, as
the integration tests do with the fake; `--fake` also runs the real CLI against the fake at that scale and
compares its requests with the model's.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import datetime as dt
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from source_mixpanel_export.config import Config, parse_config
from source_mixpanel_export.plan import Plan
from source_mixpanel_export.retry import TooLarge
from source_mixpanel_export.state import Checkpoints, ExportState, parse_state, sync_plan
from source_mixpanel_export.windows import BYTES_PER_TARGET_EVENT, ONE_DAY, Window

MS_HOUR = 3_600_000
MS_DAY = 24 * MS_HOUR
EPOCH = dt.date(1970, 1, 1)
OVERSIZE = 2  # client.OVERSIZE_FACTOR
LATE_SHARE = 0.005  # of a recent day's events, processed after the sync before (re-read for late arrivals)
SWEEP_SHARE = 1e-6  # of an old day's events, processed after its range's watermark (the sweep's)


def ms(day: dt.date) -> int:
    return (day - EPOCH).days * MS_DAY


class Project:
    """Mixpanel, by volume: what a window returns. Late arrivals (a window's processed_after_ms): a few on
    recent days, next to none before (see LATE_SHARE, SWEEP_SHARE)."""

    def between(self, low_ms: int, high_ms: int) -> tuple[float, float]:
        """Events, and their bytes, that happened in [low_ms, high_ms) of one day."""
        raise NotImplementedError

    def answer(self, window: Window, asked_ms: int) -> tuple[int, int]:
        """The events a window returns when asked at `asked_ms`, and their bytes of JSON."""
        events = size = 0.0
        day = window.first_day
        while day <= window.last_day:
            low, high = ms(day), min(ms(day) + MS_DAY, asked_ms)
            if window.time_from is not None:
                low = max(low, window.time_from * 1000)
            if window.time_to is not None:
                high = min(high, window.time_to * 1000)
            count, length = self.between(low, high) if high > low else (0.0, 0.0)
            if window.processed_after_ms is not None:
                recent = ms(day) >= window.processed_after_ms - 6 * MS_DAY
                share = LATE_SHARE if recent else SWEEP_SHARE
                count, length = count * share, length * share
            events, size = events + count, size + length
            day += ONE_DAY
        return round(events), round(size)


@dataclasses.dataclass(frozen=True)
class Even(Project):
    """`per_day` events every day, spread evenly over it, of `bytes_per_event` each."""

    per_day: float
    bytes_per_event: float

    def between(self, low_ms: int, high_ms: int) -> tuple[float, float]:
        count = self.per_day * (high_ms - low_ms) / MS_DAY
        return count, count * self.bytes_per_event


class Listed(Project):
    """Exactly these events, given as (time_ms, bytes of their export line), all processed before any sync."""

    def __init__(self, events: list[tuple[int, int]]) -> None:
        ordered = sorted(events)
        self._times = [t for t, _ in ordered]
        self._bytes = [0]
        for _, length in ordered:
            self._bytes.append(self._bytes[-1] + length)

    def between(self, low_ms: int, high_ms: int) -> tuple[float, float]:
        a, b = bisect.bisect_left(self._times, low_ms), bisect.bisect_left(self._times, high_ms)
        return float(b - a), float(self._bytes[b] - self._bytes[a])


class Budget:
    """When each request of a sync leaves and when its window is done (see the module docstring)."""

    def __init__(self, start_ms: int, config: Config, rows_per_second: float | None) -> None:
        self._per_hour, self._workers = config.requests_per_hour, config.max_concurrent_requests
        self._rows_per_ms = rows_per_second / 1000 if rows_per_second else None
        self.sent: list[int] = []
        self._done: list[int] = [start_ms]  # when each window was taken by the destination (and the start)

    def send(self) -> int:
        """The time the next request leaves."""
        at = max(self._done[max(0, len(self._done) - self._workers)], self.sent[-1] if self.sent else 0)
        if len(self.sent) >= self._per_hour:
            at = max(at, self.sent[-self._per_hour] + MS_HOUR)
        self.sent.append(at)
        return at

    def emit(self, sent_ms: int, rows: int) -> int:
        """When the destination has taken a window's rows (windows are taken in order)."""
        start = max(sent_ms, self._done[-1])
        self._done.append(start + (math.ceil(rows / self._rows_per_ms) if self._rows_per_ms else 0))
        return self._done[-1]

    @property
    def last_done(self) -> int:
        """When the destination took the last window (the sync's start before any)."""
        return self._done[-1]

    def left(self) -> int:
        """Requests left in the hour before the next one would leave (for the sweep's check)."""
        now = self.sent[-1] if self.sent else self._done[0]
        return self._per_hour - sum(1 for t in self.sent if t > now - MS_HOUR)


@dataclasses.dataclass
class Sync:
    """What one modelled sync did."""

    start_ms: int
    state: ExportState  # the last STATE it wrote
    requests: int = 0
    abandoned: int = 0  # bodies past twice the target, split
    records: int = 0
    end_ms: int = 0
    killed: bool = False
    windows: list[Window] = dataclasses.field(default_factory=list)
    progress: list[tuple[int, ExportState]] = dataclasses.field(default_factory=list)  # (time, STATE)


def model_sync(
    config: Config, project: Project, state: ExportState, start_ms: int,
    rows_per_second: float | None = None, kill_ms: int | None = None,
) -> Sync:
    """One sync from `state`, starting at `start_ms` with a full hour's budget; killed at `kill_ms` (the
    window being taken then is lost, and nothing after it)."""
    today = EPOCH + dt.timedelta(days=start_ms // MS_DAY)
    plan_of = sync_plan(config, state, today)
    budget = Budget(start_ms, config, rows_per_second)
    plan = Plan(plan_of, config, budget.left, logging.getLogger("bench.backfill"))
    checkpoints = Checkpoints(plan_of.state, True, config, plan)
    out = Sync(start_ms, plan_of.state)
    queue: collections.deque[Window] = collections.deque()
    target = config.window_target_events * OVERSIZE
    while queue or (window := plan.next()) is not None:
        window = queue.popleft() if queue else window
        sent = budget.send()
        out.requests += 1
        events, size = project.answer(window, sent)
        if (events > target or size > target * BYTES_PER_TARGET_EVENT) and not window.whole:
            out.abandoned += 1
            queue.extendleft(reversed(plan.replace(window, TooLarge("past twice the target")) or []))
            continue
        plan.observe(window, SimpleNamespace(head=None, events=events, size=size))
        done = budget.emit(sent, events)
        if kill_ms is not None and done > kill_ms:
            out.killed, out.end_ms = True, kill_ms
            return out
        out.windows.append(window)
        out.records += events
        for blob in checkpoints.after(window, sent - 250):
            out.state = parse_state(blob, now=_at(done + 60_000))
            out.progress.append((done, out.state))
    for blob in checkpoints.final():
        out.state = parse_state(blob, now=_at(budget.last_done + 60_000))
        out.progress.append((budget.last_done, out.state))
    out.end_ms = budget.last_done
    return out


def _at(epoch_ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)


def covered(state: ExportState, first: dt.date, last: dt.date) -> bool:
    """Whether the state promises every event of `first..last` processed by its watermarks: read up to
    them, and none of them in a range never read."""
    reached = state.reached()
    return reached is not None and reached >= last and state.unread_days((first, last)) == 0


@dataclasses.dataclass
class Outcome:
    """When a new connection had its last 30 days and its whole history, and what it cost."""

    recent_hours: float
    history_hours: float
    requests: int  # until the whole history was complete
    abandoned: int
    syncs: int
    daily_requests: list[int]  # of the daily syncs after it


def new_connection(
    config: Config, project: Project, start_ms: int, rows_per_second: float | None = None,
    kill_after_hours: float | None = None, restart_hours: float = 1.0, daily: int = 3,
) -> Outcome:
    """A first sync at `start_ms` (killed after `kill_after_hours`, and the next `restart_hours` after the
    kill), syncs until the history is complete, then `daily` syncs a day apart."""
    first_day = EPOCH + dt.timedelta(days=start_ms // MS_DAY)
    recent = (first_day - 29 * ONE_DAY, first_day)
    history = (config.start_day(), first_day)
    state, now, syncs = ExportState(), start_ms, []
    recent_at = history_at = None
    while history_at is None:
        kill = now + int(kill_after_hours * MS_HOUR) if kill_after_hours is not None and not syncs else None
        sync = model_sync(config, project, state, now, rows_per_second, kill)
        syncs.append(sync)
        for at, written in sync.progress:
            if recent_at is None and covered(written, *recent):
                recent_at = at
            if history_at is None and covered(written, *history):
                history_at = at
        state = sync.state
        now = sync.end_ms + int(restart_hours * MS_HOUR)
        if len(syncs) > 50:
            raise RuntimeError("the history is not complete after 50 syncs")
    assert recent_at is not None
    after = []
    for _ in range(daily):
        now = max(now, syncs[-1].end_ms) + MS_DAY
        sync = model_sync(config, project, state, now, rows_per_second)
        state = sync.state
        after.append(sync.requests)
    return Outcome(
        (recent_at - start_ms) / MS_HOUR, (history_at - start_ms) / MS_HOUR,
        sum(s.requests for s in syncs), sum(s.abandoned for s in syncs), len(syncs), after,
    )


def config_of(start: dt.date, **overrides: Any) -> Config:
    raw = {
        "credentials": {"option_title": "Service Account", "username": "u", "secret": "s", "project_id": 1},
        "start_date": start.isoformat(), **overrides,
    }
    return parse_config(raw, now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


def _hours(value: float) -> str:
    return f"{int(value)} h {round(value % 1 * 60):02d} min"


def report(
    per_year: float, years: int, bytes_per_event: float, scale: float, start: dt.datetime,
    rows_per_second: float | None = None, kill_after_hours: float = 12.0,
) -> list[str]:
    """The table of figures for a project of `per_year` events (divided by `scale`, with the target)."""
    project = Even(per_year / 365 / scale, bytes_per_event)
    start_ms = int(start.timestamp() * 1000)
    first = start.date() - dt.timedelta(days=365 * years)
    target = max(1, round(1_000_000 / scale))
    taken = f"a destination taking {rows_per_second:,.0f} rows a second" if rows_per_second else "no destination"
    lines = [
        f"{per_year:,.0f} events a year ({per_year / 365:,.0f} a day, {bytes_per_event:.0f} B each)"
        + (f", scaled down {scale:,.0f} times (window_target_events {target:,})" if scale != 1 else "")
        + f"; start_date {first} ({years} years); first sync at {start:%Y-%m-%d %H:%M} UTC; {taken}; "
        "defaults otherwise.",
        "",
        "| order | interruption | last 30 days complete | whole history complete | requests | of them abandoned | "
        "syncs | daily syncs after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    cases = [("recent first (30)", 30), ("oldest first (0)", 0)]
    for kill in (None, kill_after_hours):
        for name, days in cases:
            config = config_of(first, recent_first_days=days, window_target_events=target)
            outcome = new_connection(config, project, start_ms, rows_per_second, kill_after_hours=kill)
            lines.append(
                f"| {name} | {'none' if kill is None else f'killed at {kill:.0f} h, next sync 1 h later'} | "
                f"{_hours(outcome.recent_hours)} | {_hours(outcome.history_hours)} | {outcome.requests:,} | "
                f"{outcome.abandoned} | {outcome.syncs} | {', '.join(map(str, outcome.daily_requests))} requests |"
            )
    return lines


def fake_check(per_year: float, years: int, scale: float, recent_first_days: int = 30, seed: int = 1) -> str:
    """The request count of a real first sync (the CLI against the fake, at `scale`, today's clock) next to
    the model's for the same events: the model's figures are the connector's."""
    from fake_mixpanel import FakeMixpanel, generate_events

    today = dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=365 * years)
    events = generate_events(round(per_year * years / scale), first, 365 * years, seed=seed)
    target = max(1, round(1_000_000 / scale))
    fake = FakeMixpanel(events, username="u", secret="s", project_id=1)
    fake.start()
    try:
        raw = {
            "credentials": {"option_title": "Service Account", "username": "u", "secret": "s", "project_id": 1},
            "api_base_url": fake.base_url, "start_date": first.isoformat(), "window_target_events": target,
            "recent_first_days": recent_first_days, "requests_per_hour": 100_000, "requests_per_second": 100,
        }
        stream = {"name": "export", "json_schema": {}, "supported_sync_modes": ["incremental"]}
        catalog = {"streams": [{"stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append"}]}
        with tempfile.TemporaryDirectory() as folder:
            paths = [Path(folder, name) for name in ("config.json", "catalog.json")]
            for path, value in zip(paths, (raw, catalog), strict=True):
                path.write_text(json.dumps(value))
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "source_mixpanel_export.run", "read", "--config", str(paths[0]),
                 "--catalog", str(paths[1])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
            )
            seconds = time.monotonic() - started
        if done.returncode:
            raise RuntimeError(done.stderr.decode(errors="replace")[-2000:])
        real = len(fake.export_requests)
    finally:
        fake.stop()
    project = Listed([(e.time_ms, len(e.export_line(time_in_ms=True))) for e in events])
    now_ms = int(time.time() * 1000)
    model = model_sync(config_of(first, **{k: v for k, v in raw.items() if k not in ("credentials", "start_date")}),
                       project, ExportState(), now_ms)
    return (
        f"Scaled to the fake ({len(events):,} events over {365 * years} days, window_target_events {target}, "
        f"recent_first_days {recent_first_days}): the real CLI sent {real:,} export requests in {seconds:.0f} s; "
        f"the model of the same events {model.requests:,} ({model.abandoned} abandoned)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events-per-year", type=float, default=1e9)
    parser.add_argument("--years", type=int, default=2)
    parser.add_argument("--bytes-per-event", type=float, default=500.0)
    parser.add_argument("--scale", type=float, default=1.0, help="divide the volume and the target by this")
    parser.add_argument("--start", default="2026-06-01T06:00:00", help="the first sync's start, UTC")
    parser.add_argument("--rows-per-second", type=float, default=12_800.0,
                        help="the destination's speed for the second table (PyAirbyte into DuckDB: 12,800)")
    parser.add_argument("--fake", action="store_true",
                        help="also run the real CLI against the fake, 10,000 times smaller (about a minute)")
    args = parser.parse_args(argv)
    start = dt.datetime.fromisoformat(args.start).replace(tzinfo=dt.UTC)
    figures = (args.events_per_year, args.years, args.bytes_per_event, args.scale, start)
    print("\n".join(report(*figures)))
    print()
    print("\n".join(report(*figures, rows_per_second=args.rows_per_second)))
    if args.fake:
        print()
        print(fake_check(args.events_per_year, args.years, 10_000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
