"""The console script's `run`, with the connector's calendar clock started at a given epoch millisecond.

`python -m integration_tests.clocked <epoch_ms> <verb> --config ...` runs exactly what
`source-mixpanel-export <verb> --config ...` runs, except that `clock.utc_now` (the package's one reader of
the calendar: what today is, what lies in the future) starts at <epoch_ms> and moves on in real time.
harness.run_cli and read_and_kill run it at the clock of the fake Mixpanel a config aims at
(harness.connector_clock), as a real project's clock and Mixpanel's agree, so a test's result does not
depend on the hour it runs at (three failed near midnight UTC, when the fake's clock was hours ahead).
"""

from __future__ import annotations

import datetime as dt
import sys
import time

from source_mixpanel_export import clock


def main() -> None:
    offset = int(sys.argv.pop(1)) / 1000 - time.time()
    clock.utc_now = lambda: dt.datetime.fromtimestamp(time.time() + offset, dt.UTC)

    from source_mixpanel_export.run import run

    sys.exit(run())


if __name__ == "__main__":
    main()
