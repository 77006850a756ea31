"""Child processes of the benchmark: the fake server, and timed runs with their own peak RSS and CPU.

CPU comes from GNU time (`/usr/bin/time -f`), which counts the command and the processes it waited
for (the connector's encoding workers), or from `os.wait4` on the child without it. Memory is sampled
from /proc every 10 ms over the whole process tree, the connector and its workers: the peak of the
sum of their RSS (each process's resident pages, shared ones counted in every process) and of their
PSS (shared pages split between the processes sharing them). A single process's peak RSS, which is
what GNU time reports, would leave out the workers.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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
    peak_rss_mb: float  # of all the processes together
    peak_pss_mb: float
    returncode: int
    stderr: str
    peak_spill_mb: float = 0.0  # disk taken by the files the child holds open in its own temp directory
    peak_processes: int = 0  # the most processes the run had at once (GNU time not counted)


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of a process and all its descendants until stopped."""

    def __init__(self, pid: int, skip_root: bool = False, interval: float = 0.01, temp_dir: str = "") -> None:
        """`skip_root`: leave out the process `pid` itself (GNU time, when it wraps the command);
        `temp_dir`: also sample the disk taken by files open under it (unlinked temporary files too)."""
        super().__init__(daemon=True)
        self._pid, self._skip_root, self._interval, self._temp_dir = pid, skip_root, interval, temp_dir
        self._done = threading.Event()
        self.peak_rss_kb = self.peak_pss_kb = self.peak_spill_bytes = self.peak_processes = 0

    def run(self) -> None:
        while not self._done.is_set():
            rss = pss = spill = 0
            pids = _tree(self._pid)[1 if self._skip_root else 0 :]
            self.peak_processes = max(self.peak_processes, len(pids))
            for pid in pids:
                process_rss, process_pss = _memory_kb(pid)
                rss, pss = rss + process_rss, pss + process_pss
                spill += _open_files_bytes(pid, self._temp_dir) if self._temp_dir else 0
            self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)
            self.peak_spill_bytes = max(self.peak_spill_bytes, spill)
            self._done.wait(self._interval)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the children of each of their threads, from /proc)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:  # gone meanwhile
            continue
    return found


def _open_files_bytes(pid: int, folder: str) -> int:
    """Disk blocks of the files `pid` holds open under `folder` (its spill files, unlinked or not)."""
    total = 0
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in descriptors:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(folder):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except OSError:
            continue
    return total


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; zeros once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def run_timed(args: list[str], stdout_path: str = os.devnull) -> Timed:
    """Run a child to completion with stdout to a file (default /dev/null), timing it and reading its peak RSS."""
    temp_dir = tempfile.mkdtemp(prefix="bench-spill-")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": temp_dir}
    with open(stdout_path, "wb") as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as usage:
        command = [GNU_TIME, "-f", "%M %U %S", "-o", usage.name, *args] if GNU_TIME else args
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        memory = TreeMemory(process.pid, skip_root=GNU_TIME is not None, temp_dir=temp_dir)
        memory.start()
        _, status, rusage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        memory.stop()
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        measured = usage.read().decode().split() if GNU_TIME else []
    if len(measured) >= 3:
        cpu = float(measured[-2]) + float(measured[-1])
    else:
        cpu = rusage.ru_utime + rusage.ru_stime
    shutil.rmtree(temp_dir, ignore_errors=True)
    return Timed(
        seconds, cpu, memory.peak_rss_kb / 1024, memory.peak_pss_kb / 1024, process.returncode, text,
        memory.peak_spill_bytes / 1e6, memory.peak_processes,
    )


class FakeServer:
    """`python -m fake_mixpanel` in its own process, warmed by one full-range request before timing."""

    def __init__(
        self, events: int, days: int, seed: int = 1, cache_bodies: bool = True, huge_int_fraction: float | None = None
    ) -> None:
        """`cache_bodies`: the fake sends each body it made once again, costing next to no CPU (see
        FakeMixpanel); without it, it renders and compresses every body anew, on this machine's cores.
        `huge_int_fraction`: the share of events holding an integer beyond 64 bits (None: the fake's own
        mix, about 12%); `huge_events` is how many it generated."""
        self.events = events
        self.huge_events = 0
        self.last_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # every event already processed
        self.first_day = self.last_day - dt.timedelta(days=days - 1)
        args = [
            sys.executable, "-m", "fake_mixpanel", "--port", "0", "--events", str(events), "--days", str(days),
            "--seed", str(seed), "--end-date", self.last_day.isoformat(),
            "--username", USER, "--secret", SECRET, "--project-id", str(PROJECT_ID),
            *(["--cache-bodies"] if cache_bodies else []),
            *([] if huge_int_fraction is None else ["--huge-int-fraction", repr(huge_int_fraction)]),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=ROOT, env=env)
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The fake's base URL, once it listens (the first use waits for it: fakes can generate their
        events side by side)."""
        if self._url is None:
            self._url = self._wait_for_url()
        return self._url

    def _wait_for_url(self) -> str:
        """The fake's URL, from its first line; the second says how many events hold a huge integer."""
        assert self._process.stdout is not None
        url = None
        for raw in self._process.stdout:
            line = raw.decode()
            found = re.search(r"listening on (\S+)", line)
            url = found.group(1) if found else url
            huge = re.search(r"(\d+) \([^)]*\) holding an integer beyond 64 bits", line)
            if huge:
                self.huge_events = int(huge.group(1))
            if url and huge:
                return url
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
