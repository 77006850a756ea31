"""Run the fake Mixpanel in the foreground, so the connector can be tried by hand or from a benchmark script."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
import threading
import time
from collections.abc import Sequence

from .data import generate_events, holds_huge_int
from .profiles import generate_profiles
from .server import FakeMixpanel


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Describe the command line."""
    parser = argparse.ArgumentParser(prog="python -m fake_mixpanel", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--events", type=int, default=2000, help="number of generated events")
    parser.add_argument("--profiles", type=int, default=2000, help="number of generated people profiles")
    parser.add_argument("--days", type=int, default=10, help="days the events spread over, ending at --end-date")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=None, help="YYYY-MM-DD, default today (UTC)")
    parser.add_argument("--late-fraction", type=float, default=0.0, help="share of events processed hours-days late")
    parser.add_argument(
        "--huge-int-fraction",
        type=float,
        default=None,
        help="share of events holding an integer beyond 64 bits (default: as generated, about 12%%)",
    )
    parser.add_argument("--legacy-timezone", default=None, help="serve as a pre-2023 project in this timezone")
    parser.add_argument("--auth-error-style", choices=("401", "400"), default="401")
    parser.add_argument("--username", default="sa-user")
    parser.add_argument("--secret", default="sa-secret")
    parser.add_argument("--project-id", type=int, default=12345)
    parser.add_argument("--api-secret", default="proj-secret")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--cache-bodies", action="store_true", help="send each export body made once again (benchmarks)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the data, serve it until SIGTERM/SIGINT, and return the exit status."""
    args = _parse_args(argv)
    end = args.end_date or dt.datetime.now(dt.UTC).date()
    start = end - dt.timedelta(days=args.days - 1)
    events = generate_events(
        args.events,
        start,
        args.days,
        seed=args.seed,
        late_fraction=args.late_fraction,
        huge_int_fraction=args.huge_int_fraction,
    )
    huge = sum(map(holds_huge_int, events))
    end_of_end_ms = int(dt.datetime.combine(end, dt.time.max, dt.UTC).timestamp() * 1000)
    profiles = generate_profiles(args.profiles, args.seed, now_ms=min(int(time.time() * 1000), end_of_end_ms))
    server = FakeMixpanel(
        events,
        username=args.username,
        secret=args.secret,
        project_id=args.project_id,
        api_secret=args.api_secret,
        legacy_timezone=args.legacy_timezone,
        auth_error_style=args.auth_error_style,
        host=args.host,
        port=args.port,
        verbose=args.verbose,
        cache_bodies=args.cache_bodies,
        profiles=profiles,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    url = server.start()
    print(f"fake mixpanel listening on {url}", flush=True)
    print(
        f"service account: {args.username}:{args.secret} project_id={args.project_id}; "
        f"project secret: {args.api_secret} (empty password); "
        f"{len(events)} events from {start} to {end} (UTC), "
        f"{huge} ({huge / max(len(events), 1):.2%}) holding an integer beyond 64 bits; {len(profiles)} profiles",
        flush=True,
    )
    try:
        stopping.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
