"""`python -m bench`: records/s and peak memory of the connector's `read` next to the floor loop, same run.

For each workload mix (by default both: the hard mix, the fake's own events, of which ~12% hold an
integer beyond 64 bits; and a realistic mix, where 0.1% do), starts the fake Mixpanel in its own
process, warms it, then alternates timed child runs of the floor (bench/floor.py, one request for the
whole range) and of the real console script (`read`, full refresh, the connector's default settings
unless --window/--concurrency say otherwise, stdout to /dev/null), prints medians, and at the end one
line per mix. Memory is the peak RSS (and PSS) of the connector's process tree, with how many processes
it had; spill is the peak disk taken by its temporary files. `--memory` adds 1-day vs 30-day windows at
10k vs --events events. No assertions: it prints figures and exits 0 unless a child fails or the
connector emits the wrong number of records.

By default the fake keeps every body it has sent and sends it again (a warm-up run and the verification
run make them), and which events answer each query: Mixpanel's servers do not run on the connector's
machine, and a fake selecting, shuffling, rendering and compressing 615 MB would take seconds of this
machine's 2 cores from whatever it measures. `--live-server` makes it render and compress every body
anew, as the first version of this benchmark did.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from source_mixpanel_export.config import DEFAULTS

from .children import PROJECT_ID, SECRET, USER, FakeServer, Timed, run_timed

OFFICIAL_RECORDS_PER_SECOND = 325.0  # the official source-mixpanel export stream, as reported in issue 5
RSS_BOUND_MB = 100  # issue 11: the read stays within it, in one process


@dataclass(frozen=True)
class Mix:
    """A workload: the share of events holding an integer beyond 64 bits (None: the fake's own, ~12%),
    which the connector parses with the standard library's parser instead of orjson."""

    name: str
    huge_int_fraction: float | None


@dataclass(frozen=True)
class Result:
    """One mix's runs, for the closing summary."""

    mix: Mix
    records: int
    huge_share: float
    floor: list[Timed]
    read: list[Timed]


@dataclass(frozen=True)
class Setup:
    """One benchmark configuration."""

    events: int
    days: int
    window: int | None  # None: the connector's default date_window_size
    repeat: int
    concurrency: int | None  # None: the connector's default max_concurrent_requests
    live_server: bool = False


def connector_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m` on the module."""
    script = Path(sys.executable).parent / "source-mixpanel-export"
    return [str(script)] if script.exists() else [sys.executable, "-m", "source_mixpanel_export.run"]


def write_inputs(folder: Path, server: FakeServer, window: int | None, concurrency: int | None) -> list[str]:
    """Config and catalog files for a full-refresh read of the whole range; returns the read arguments."""
    config = {
        "credentials": {
            "option_title": "Service Account", "username": USER, "secret": SECRET, "project_id": PROJECT_ID
        },
        "api_base_url": server.url,
        "start_date": server.first_day.isoformat(),
        "end_date": server.last_day.isoformat(),
        "requests_per_second": 100,
        "requests_per_hour": 100000,
    }
    if window is not None:
        config["date_window_size"] = window
    if concurrency is not None:
        config["max_concurrent_requests"] = concurrency
    stream = {
        "name": "export",
        "json_schema": {},
        "supported_sync_modes": ["full_refresh", "incremental"],
        "source_defined_cursor": True,
        "default_cursor_field": ["time"],
    }
    catalog = {"streams": [{"stream": stream, "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}]}
    config_path, catalog_path = folder / f"config-{window}.json", folder / "catalog.json"
    config_path.write_text(json.dumps(config))
    catalog_path.write_text(json.dumps(catalog))
    return [*connector_command(), "read", "--config", str(config_path), "--catalog", str(catalog_path)]


def floor_command(server: FakeServer) -> list[str]:
    """The floor loop over the whole range in one request."""
    params = server.export_params()
    return [
        sys.executable, "-m", "bench.floor", "--url", server.url, "--from-date", params["from_date"],
        "--to-date", params["to_date"], "--user", USER, "--secret", SECRET, "--project-id", str(PROJECT_ID),
    ]


def checked(what: str, timed: Timed) -> Timed:
    """The run, or exit with its stderr when it failed."""
    if timed.returncode != 0:
        sys.stderr.write(timed.stderr[-4000:])
        raise SystemExit(f"{what} exited with {timed.returncode}")
    return timed


def count_output(args: list[str], folder: Path) -> tuple[int, int]:
    """Run the connector once into a file (untimed) and count its RECORD and STATE lines."""
    path = folder / "out.jsonl"
    checked("connector (verification run)", run_timed(args, str(path)))
    records = states = 0
    with path.open("rb") as lines:
        for line in lines:
            records += line.startswith(b'{"type":"RECORD"')
            states += line.startswith(b'{"type":"STATE"')
    path.unlink()
    return records, states


def throughput(setup: Setup, mixes: Sequence[Mix]) -> list[Result]:
    """Floor vs connector for each mix, medians of `repeat` alternating runs, printed as a table each.

    The fakes generate their events and render their bodies side by side before any timed run; each
    waits idle while the other's mix is measured."""
    cache = not setup.live_server
    servers = [
        FakeServer(setup.events, setup.days, cache_bodies=cache, huge_int_fraction=mix.huge_int_fraction)
        for mix in mixes
    ]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            warmed = list(pool.map(FakeServer.warm, servers))
        return [
            throughput_of(setup, mix, server, lines, size)
            for mix, server, (lines, size) in zip(mixes, servers, warmed, strict=True)
        ]
    finally:
        for server in servers:
            server.stop()


def throughput_of(setup: Setup, mix: Mix, server: FakeServer, lines: int, size: int) -> Result:
    """One mix: verify the connector's output, then time the floor and the read in turn."""
    huge_share = server.huge_events / max(lines, 1)
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        read_args = write_inputs(folder, server, setup.window, setup.concurrency)
        window = setup.window or DEFAULTS["date_window_size"]
        concurrency = setup.concurrency or DEFAULTS["max_concurrent_requests"]
        windows = -(-setup.days // window)
        server_mode = "renders and compresses every body" if setup.live_server else "sends bodies it made before"
        print(f"\n== {describe(mix, huge_share)}", flush=True)
        print(
            f"{lines} events over {setup.days} days ({size / max(lines, 1):.0f} B/event, {size / 1e6:.0f} MB "
            f"uncompressed, gzip on the wire); connector windows of up to {window} days (at least {windows} "
            f"requests, {concurrency} concurrent); floor: one request; the fake {server_mode}; "
            f"{setup.repeat} run(s) each, medians",
            flush=True,
        )
        records, states = count_output(read_args, folder)
        if records != lines:
            raise SystemExit(f"the connector emitted {records} records, expected {lines}")
        print(f"verified: the connector emitted all {records} records and {states} STATE messages", flush=True)
        floor_runs, read_runs, floor_start, read_start = [], [], [], []
        for _ in range(setup.repeat):
            floor_start.append(checked("floor --help", run_timed([*floor_command(server), "--help"])).seconds)
            read_start.append(checked("spec", run_timed([*connector_command(), "spec"])).seconds)
            floor = checked("floor", run_timed(floor_command(server)))
            if json.loads(floor.stderr.strip().splitlines()[-1])["records"] != lines:
                raise SystemExit("the floor read a different number of records")
            floor_runs.append(floor)
            read_runs.append(checked("connector", run_timed(read_args)))
    print_table(lines, floor_runs, read_runs, statistics.median(floor_start), statistics.median(read_start))
    return Result(mix, lines, huge_share, floor_runs, read_runs)


def describe(mix: Mix, huge_share: float) -> str:
    """What a mix is made of, as served."""
    origin = "the fake's own events" if mix.huge_int_fraction is None else "the rest as the fake's own events"
    return (
        f"{mix.name} mix: {huge_share:.2%} of lines hold an integer beyond 64 bits ({origin}; every line also "
        "has one of its awkward values: raw U+2028, emoji, floats at the edges, nesting, long text...)"
    )


def print_summary(results: Sequence[Result], started: float, load_before: float) -> None:
    """One line per mix: the figures issue 11 asks for."""
    print()
    header = (
        f"{'mix':10}{'huge-int lines':>15}{'floor rec/s':>13}{'read rec/s':>12}{'x floor':>9}"
        f"{'read peak RSS MB':>18}{'processes':>11}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        floor = result.records / statistics.median(t.seconds for t in result.floor)
        read = result.records / statistics.median(t.seconds for t in result.read)
        rss = max(t.peak_rss_mb for t in result.read)
        processes = max(t.peak_processes for t in result.read)
        print(
            f"{result.mix.name:10}{result.huge_share:15.2%}{floor:13,.0f}{read:12,.0f}{read / floor:9.2f}"
            f"{rss:18.1f}{processes:11}"
        )
    print("-" * len(header))
    rss = max(t.peak_rss_mb for result in results for t in result.read)
    processes = max(t.peak_processes for result in results for t in result.read)
    within = "yes" if rss <= RSS_BOUND_MB and processes == 1 else "NO"
    print(
        f"records/s: medians; RSS: the highest of the read runs. Read within {RSS_BOUND_MB} MB in one process: "
        f"{within}. The whole benchmark took {time.perf_counter() - started:.0f} s; load average (1 min) "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores."
    )


def print_table(records: int, floor: list[Timed], read: list[Timed], floor_start: float, read_start: float) -> None:
    """Medians of both, their ratio, and the official connector as reference."""
    rows = []
    for name, runs in (("floor (requests+orjson)", floor), ("connector read", read)):
        seconds = statistics.median(t.seconds for t in runs)
        cpu = statistics.median(t.cpu_seconds for t in runs)
        rss = statistics.median(t.peak_rss_mb for t in runs)
        pss = statistics.median(t.peak_pss_mb for t in runs)
        spill = statistics.median(t.peak_spill_mb for t in runs)
        processes = max(t.peak_processes for t in runs)
        rows.append((name, seconds, records / seconds, cpu, rss, pss, spill, processes))
    floor_rate = rows[0][2]
    header = (
        f"{'':25}{'wall s':>7}{'records/s':>11}{'x floor':>8}{'CPU s':>7}{'peak RSS MB':>12}{'PSS MB':>8}"
        f"{'spill MB':>9}{'procs':>6}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, seconds, rate, cpu, rss, pss, spill, processes in rows:
        print(
            f"{name:25}{seconds:7.2f}{rate:11,.0f}{rate / floor_rate:8.2f}{cpu:7.2f}{rss:12.0f}{pss:8.0f}"
            f"{spill:9.1f}{processes:6}"
        )
    official = OFFICIAL_RECORDS_PER_SECOND
    print(f"{'official connector (ref)':25}{records / official:7.0f}{official:11,.0f}{official / floor_rate:8.3f}")
    print("-" * len(header))
    print(
        f"connector / official: {rows[1][2] / official:.0f}x. Start-up alone (`--help` / `spec` runs, imports): "
        f"floor {floor_start:.2f} s, connector {read_start:.2f} s. Spill: the peak disk of the connector's "
        "temporary files (bodies as sent, gzip)."
    )
    print(f"all runs, wall s: floor {_runs(floor)}; connector {_runs(read)}")


def _runs(runs: list[Timed]) -> str:
    return " ".join(f"{t.seconds:.2f}" for t in runs)


def memory(events_counts: Sequence[int], days: int, windows: Sequence[int], concurrency: int | None) -> None:
    """Peak RSS of the connector's read per (events, window size): it should not grow with either."""
    print()
    print(
        f"{'events':>8}{'window days':>13}{'requests':>10}{'wall s':>8}{'records/s':>12}{'CPU s':>7}"
        f"{'peak RSS MB':>13}{'PSS MB':>8}{'spill MB':>10}"
    )
    for events in events_counts:
        server = FakeServer(events, days)
        try:
            lines, _ = server.warm()
            with tempfile.TemporaryDirectory() as temp:
                for window in windows:
                    args = write_inputs(Path(temp), server, window, concurrency)
                    timed = checked("connector", run_timed(args))
                    requests = -(-days // window)
                    print(
                        f"{lines:8}{window:13}{requests:10}{timed.seconds:8.2f}{lines / timed.seconds:12,.0f}"
                        f"{timed.cpu_seconds:7.2f}{timed.peak_rss_mb:13.0f}{timed.peak_pss_mb:8.0f}"
                        f"{timed.peak_spill_mb:10.1f}",
                        flush=True,
                    )
        finally:
            server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the range (default: 1,000,000)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--window", type=int, default=None, help="the connector's date_window_size (default: its own)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="the connector's max_concurrent_requests (default: its own)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each; medians are printed")
    parser.add_argument(
        "--live-server", action="store_true", help="the fake renders and compresses every body anew, on this machine"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 events, 5 days, 1-day windows, once")
    parser.add_argument(
        "--mix",
        choices=("both", "hard", "realistic"),
        default="both",
        help="hard: the fake's own events (~12%% hold an integer beyond 64 bits); realistic: --realistic-share",
    )
    parser.add_argument(
        "--realistic-share",
        type=float,
        default=0.001,
        help="share of events holding an integer beyond 64 bits in the realistic mix (default: 0.001)",
    )
    parser.add_argument(
        "--memory", action="store_true", help="also peak RSS for 1 vs --days day windows, 10k vs --events events"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.days, args.window, args.repeat = 20_000, 5, 1, 1
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    mixes = [Mix("hard", None), Mix("realistic", args.realistic_share)]
    mixes = [mix for mix in mixes if args.mix in ("both", mix.name)]
    setup = Setup(args.events, args.days, args.window, args.repeat, args.concurrency, args.live_server)
    print_summary(throughput(setup, mixes), started, load_before)
    if args.memory:
        memory(sorted({10_000, args.events}), args.days, sorted({1, args.days}), args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
