"""The floor: the least a Python export reader can do (GET with gzip, split, orjson, one RECORD line each).

Run as a child process by the benchmark; records go to stdout (meant to be /dev/null) and a one-line JSON
summary goes to stderr.

Records are written through a 1 MB buffer of the floor's own, as the connector writes ~256 KB at a
time, not through `sys.stdout.buffer`: with PYTHONUNBUFFERED set (as in this project's sandbox) that one
makes a system call per line, ~0.2 µs a record more.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

import orjson
import requests


def main(argv: Sequence[str] | None = None) -> int:
    """Read one export request's body and write a RECORD line per event."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--url", required=True, help="base URL of the fake Mixpanel")
    parser.add_argument("--from-date", required=True)
    parser.add_argument("--to-date", required=True)
    parser.add_argument("--user", default="sa-user")
    parser.add_argument("--secret", default="sa-secret")
    parser.add_argument("--project-id", default="12345")
    args = parser.parse_args(argv)
    params = {
        "from_date": args.from_date,
        "to_date": args.to_date,
        "time_in_ms": "true",
        "project_id": args.project_id,
    }
    response = requests.get(
        args.url + "/api/2.0/export",
        params=params,
        auth=(args.user, args.secret),
        headers={"Accept-Encoding": "gzip"},
        stream=True,
        timeout=600,
    )
    response.raise_for_status()
    out = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)  # closed below
    dumps, loads, now_ns = orjson.dumps, orjson.loads, time.time_ns
    count = 0
    rest = b""
    for chunk in response.iter_content(1 << 20):  # urllib3 decompresses the gzip stream as it arrives
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line:
                record = {"stream": "export", "data": loads(line), "emitted_at": now_ns() // 1_000_000}
                out.write(dumps({"type": "RECORD", "record": record}) + b"\n")
                count += 1
    if rest.strip():
        raise SystemExit("the body did not end with a newline")
    out.close()
    print(json.dumps({"records": count}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
