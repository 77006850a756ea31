"""Where a record's CPU time goes on the read path, stage by stage, in one process with no network.

`python -m bench.stages [--events N] [--huge-int-fraction F]` renders the fake's events (by default
its hard mix, ~12% of lines with an integer beyond 64 bits) as one gzipped export body and times,
on the main thread (process CPU time, best of several runs): decompressing it from its spill,
splitting into line batches, parsing, building records, and writing RECORD lines to /dev/null. Each
stage includes the ones before it; the table shows the increments in microseconds per record. It
isolates our per-record code from the server, the network and the other processes on the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import os
import sys
import time
from collections.abc import Callable, Sequence

from fake_mixpanel import generate_events
from fake_mixpanel.data import holds_huge_int
from source_mixpanel_export.body import Spill, SpillMeter
from source_mixpanel_export.catalog import EXPORT
from source_mixpanel_export.lines import iter_line_batches, parse_line
from source_mixpanel_export.records import Tally, make_builder, records_of_lines
from source_mixpanel_export.writer import MessageWriter


def stages(spill: Spill) -> list[tuple[str, Callable[[], None]]]:
    """The read path cut after each stage, as it runs in ExportReader._records and run.read, from a
    body spilled as it came (gzip): the first stage is the second decompression."""

    def gunzip() -> None:
        for _chunk in spill.chunks():
            pass

    def split() -> None:
        for _lines, _exact in iter_line_batches(spill.chunks()):
            pass

    def parse() -> None:
        for lines, exact in iter_line_batches(spill.chunks()):
            flagged = set(exact)
            for position, line in enumerate(lines):
                parse_line(line, position in flagged)

    def build() -> None:
        build = make_builder()
        for lines, exact in iter_line_batches(spill.chunks()):
            records_of_lines(lines, exact, build, Tally())

    def write() -> None:
        build = make_builder()
        with open(os.devnull, "wb") as out:
            writer = MessageWriter(out)
            for lines, exact in iter_line_batches(spill.chunks()):
                batch = records_of_lines(lines, exact, build, Tally())
                batch.stream = EXPORT.name  # as SourceMixpanelExport.read_items names it
                writer.records(batch)
            writer.flush()

    return [
        ("gunzip the spill again", gunzip), ("+ split into line batches", split), ("+ parse", parse),
        ("+ build record", build), ("+ write", write),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Print microseconds per record for each stage."""
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per stage; the best is kept")
    parser.add_argument(
        "--huge-int-fraction",
        type=float,
        default=None,
        help="share of events holding an integer beyond 64 bits (default: the fake's own, ~12%%)",
    )
    args = parser.parse_args(argv)
    events = generate_events(args.events, dt.date(2024, 1, 1), 30, seed=1, huge_int_fraction=args.huge_int_fraction)
    huge = sum(map(holds_huge_int, events))
    body = b"".join(event.export_line(True) for event in events)
    spill = Spill(True, 1 << 20, SpillMeter())
    spill.write(gzip.compress(body, compresslevel=1))  # as the fake sends it; Mixpanel's level is unknown
    print(
        f"{args.events} events, {huge / args.events:.2%} with an integer beyond 64 bits, "
        f"{len(body) / args.events:.0f} B each, {spill.stored / args.events:.0f} B gzipped; "
        f"CPU µs per record, best of {args.repeat}"
    )
    print(f"  {'stage':26}{'cumulative':>11}{'this stage':>11}")
    before = 0.0
    for name, stage in stages(spill):
        best = min(_cpu(stage) for _ in range(args.repeat)) / args.events * 1e6
        print(f"  {name:26}{best:11.2f}{best - before:11.2f}")
        before = best
    return 0


def _cpu(stage: Callable[[], None]) -> float:
    started = time.process_time()
    stage()
    return time.process_time() - started


if __name__ == "__main__":
    sys.exit(main())
