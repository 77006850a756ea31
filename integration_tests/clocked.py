"""The console script's `run`, with the connector's calendar clock started at a given epoch millisecond.

`python -m integration_tests.clocked <epoch_ms> <verb> --config ...` runs exactly what
`source-mixpanel-export <verb> --config ...` runs, except that `clock.utc_now` (the package's one reader of
the calendar: what today is, what lies in the future) starts at <epoch_ms> and moves on in real time.
The lossless tests set it to the fake Mixpanel's clock, as a real project's clock and Mixpanel's agree,
so their result never depends on the hour at which they run (they once failed near midnight UTC, and
whenever the fake's clock was set more than an hour ahead of the machine's).
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
