"""Child processes of the benchmark: the fake server, and timed runs with their own peak RSS and CPU.

Peak RSS and CPU come from GNU time (`/usr/bin/time -f`), which measures only the command it starts.
Without it, `os.wait4` on the child is the fallback: its own rusage, not the running maximum that
`getrusage(RUSAGE_CHILDREN)` keeps over every child reaped so far; but Linux carries the parent's peak
RSS at fork over into the child's, so that figure can be too high when the benchmark itself is large.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
USER, SECRET, PROJECT_ID = "bench-user", "bench-secret", 12345


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


@dataclass(frozen=True)
class Timed:
    """What one child run cost: wall and CPU seconds, peak RSS, exit status and what it wrote to stderr."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    stderr: str


def run_timed(args: list[str], stdout_path: str = os.devnull) -> Timed:
    """Run a child to completion with stdout to a file (default /dev/null), timing it and reading its peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(stdout_path, "wb") as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as usage:
        command = [GNU_TIME, "-f", "%M %U %S", "-o", usage.name, *args] if GNU_TIME else args
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        _, status, rusage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        measured = usage.read().decode().split() if GNU_TIME else []
    if len(measured) >= 3:
        rss_kb, cpu = float(measured[-3]), float(measured[-2]) + float(measured[-1])
    else:
        rss_kb, cpu = rusage.ru_maxrss, rusage.ru_utime + rusage.ru_stime
    return Timed(seconds, cpu, rss_kb / 1024, process.returncode, text)


class FakeServer:
    """`python -m fake_mixpanel` in its own process, warmed by one full-range request before timing."""

    def __init__(self, events: int, days: int, seed: int = 1) -> None:
        self.events = events
        self.last_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # every event already processed
        self.first_day = self.last_day - dt.timedelta(days=days - 1)
        args = [
            sys.executable, "-m", "fake_mixpanel", "--port", "0", "--events", str(events), "--days", str(days),
            "--seed", str(seed), "--end-date", self.last_day.isoformat(),
            "--username", USER, "--secret", SECRET, "--project-id", str(PROJECT_ID),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            found = re.search(r"listening on (\S+)", raw.decode())
            if found:
                return found.group(1)
        raise RuntimeError(f"the fake server exited ({self._process.wait()}) before listening")

    def export_params(self) -> dict[str, str]:
        """The full range, as the floor asks for it."""
        return {
            "from_date": self.first_day.isoformat(),
            "to_date": self.last_day.isoformat(),
            "time_in_ms": "true",
            "project_id": str(PROJECT_ID),
        }

    def warm(self) -> tuple[int, int]:
        """Render every line once (the fake caches them); returns (lines, decompressed bytes) of the full range."""
        lines = size = 0
        with requests.get(
            self.url + "/api/2.0/export", params=self.export_params(), auth=(USER, SECRET), timeout=600, stream=True
        ) as response:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
        return lines, size

    def stop(self) -> None:
        """Stop our own server process (by its pid) and reap it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
