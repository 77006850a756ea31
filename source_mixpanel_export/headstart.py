"""A head start for `read`: the encoding workers fetch the first windows while the CDK is imported.

Importing the CDK takes ~0.7 s of one core before `read` can even parse its arguments, and a sync
of a few hundred thousand events takes little more than that. So run.py starts the encoding workers
and calls `HeadStart.begin` first: it reads the config, catalog and state files itself, plans the
sync with the same functions the reader uses, and has the workers fetch and encode the first windows
(remote.py), two per worker, at most max_concurrent_requests at once and requests_per_second in all:
the first requests of a sync always fit its budget. Any surprise (an invalid file, a catalog or state
it does not read the simple way) means no head start, and the CDK path reports it. It checks the
files' structure as far as it reads them, so input the CDK rejects sends no request.

Once the CDK is in, the reader counts the requests already sent against its rate budget (`connect`)
and `adopt`s the downloads only if it planned the very same windows from the very same config;
otherwise they are dropped and the reader fetches everything itself. A window whose single attempt
failed raises HeadStartMissed, and the reader fetches it with its own retries. The head start never
writes to stdout or logs; the reader logs what it adopted and what it fetches again.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from typing import Any, NoReturn

from .client import Download, remote_download, remote_spec
from .config import Config, parse_config
from .records import STREAM_NAME
from .state import ExportState, parse_state, sync_windows
from .windows import Window
from .workers import EncoderPool, WorkerFailed

MAX_WINDOWS_PER_WORKER = 2  # a third would seldom start before the reader takes over

SYNC_MODES = frozenset({"full_refresh", "incremental"})
DESTINATION_SYNC_MODES = frozenset({"append", "overwrite", "append_dedup", "update", "soft_delete"})


class HeadStartMissed(Exception):
    """The head start's single attempt at a window failed; `result` says how (see remote.py), so the
    reader can take over from there (ExportClient.first_attempt_of)."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(_problem(result))
        self.result = result


class HeadStart:
    """The first windows of a `read`, fetched and encoded by the encoding workers before the reader exists."""

    def __init__(self, config: Config, incremental: bool, windows: list[Window], encoder: EncoderPool) -> None:
        self.config = config
        self.incremental = incremental
        self.windows = windows
        self._stop = threading.Event()
        self._adopted = False
        # Each worker fetches its windows one after the other: at most `slots` requests at once.
        slots = min(encoder.processes, config.max_concurrent_requests)
        self._futures = [self._start(encoder, window, index % slots) for index, window in enumerate(windows)]

    @classmethod
    def begin(cls, args: Sequence[str], encoder: EncoderPool | None) -> HeadStart | None:
        """Start fetching the first windows of the `read` these arguments ask for, or None."""
        if encoder is None or not os.path.isdir(f"/proc/{os.getpid()}/fd") or urllib.request.getproxies():
            return None  # no workers, no /proc to hand files over, or a proxy the workers' urllib3 would not use
        try:
            plan = _plan(args)
        except Exception:  # anything unexpected: the CDK path reads the files again and reports it
            return None
        if plan is None:
            return None
        config, incremental, windows = plan
        most = MAX_WINDOWS_PER_WORKER * min(encoder.processes, config.max_concurrent_requests)
        return cls(config, incremental, windows[:most], encoder)

    def _start(self, encoder: EncoderPool, window: Window, worker: int) -> cf.Future[Download]:
        """Hand one window to a worker; the future gives its Download or raises HeadStartMissed."""
        lines = tempfile.TemporaryFile()  # no name on disk: the worker opens it through /proc
        spec = remote_spec(self.config, window, f"/proc/{os.getpid()}/fd/{lines.fileno()}")
        spec["batch"] = id(self)  # a worker sends no more of this head start's requests after one failed
        started = time.monotonic()
        download: cf.Future[Download] = cf.Future()

        def finished(attempt: cf.Future[dict[str, Any]]) -> None:
            failure = attempt.exception()
            result = attempt.result() if failure is None else {"ok": False, "kind": "none", "problem": str(failure)}
            if result["ok"] and not self._stopped():
                download.set_result(remote_download(self.config, window, result, lines, time.monotonic() - started))
                return
            lines.close()
            if result["ok"]:
                result = {"ok": False, "kind": "none", "problem": "the sync is stopping"}
            download.set_exception(HeadStartMissed(result))

        try:
            encoder.fetch(spec, worker).add_done_callback(finished)
        except WorkerFailed as exc:
            lines.close()
            download.set_exception(HeadStartMissed({"ok": False, "kind": "none", "problem": str(exc)}))
        return download

    def connect(self, budget: Any) -> None:
        """Count the requests the workers sent against the reader's budget."""
        for _ in self.windows:
            budget.acquire()

    def adopt(self, config: Config, incremental: bool, windows: Sequence[Window]) -> dict[Window, cf.Future[Download]]:
        """The downloads, if the reader's plan starts with the same windows for the same config; else {}."""
        same = config == self.config and incremental == self.incremental
        if not same or list(windows[: len(self.windows)]) != self.windows or self._adopted:
            self.cancel()
            return {}
        self._adopted = True
        return dict(zip(self.windows, self._futures, strict=True))

    def cancel(self) -> None:
        """Free what was not adopted (downloads still under way are freed when they end)."""
        if self._adopted:
            return  # the reader owns them
        self._stop.set()
        for future in self._futures:
            future.add_done_callback(_close_download)

    def _stopped(self) -> bool:
        return self._stop.is_set()


def _problem(result: dict[str, Any]) -> str:
    if result.get("kind") == "status":
        return f"Mixpanel answered {result['status']}"
    if result.get("kind") == "malformed":
        return f"{result['malformed']} line(s) are not JSON objects"
    return str(result.get("problem", "no answer"))


def _close_download(future: cf.Future[Download]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _plan(args: Sequence[str]) -> tuple[Config, bool, list[Window]] | None:
    """What the reader will fetch first, from the files alone; None when this is not a plain `read`
    of files that also pass the CDK's checks (as far as these can tell without the CDK's models)."""
    parser = _QuietParser(add_help=False)
    parser.add_argument("command")
    parser.add_argument("--config")
    parser.add_argument("--catalog")
    parser.add_argument("--state")
    parsed, _ = parser.parse_known_args(list(args))
    if parsed.command != "read" or parsed.config is None or parsed.catalog is None:
        return None
    config = parse_config(_load(parsed.config))
    incremental = _incremental(_load(parsed.catalog))
    stream_state = _stream_state(_load(parsed.state)) if parsed.state else None
    if incremental is None or stream_state is False:
        return None
    state = parse_state(stream_state) if incremental else ExportState()
    today = config.today()
    _, windows = sync_windows(config, state, min(config.end_day or today, today))
    first = windows[: min(config.requests_per_second, config.requests_per_hour)]
    return (config, incremental, first) if first else None


class _QuietParser(argparse.ArgumentParser):
    """Arguments it cannot parse are the CDK's to report: raise instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def _incremental(catalog: Any) -> bool | None:
    """Whether a catalog of the export stream alone asks for incremental; None for any other catalog."""
    streams = catalog["streams"]
    if len(streams) != 1:
        return None
    configured = streams[0]
    stream = configured["stream"]
    valid = (
        stream["name"] == STREAM_NAME
        and not stream.get("namespace")
        and isinstance(stream["json_schema"], dict)
        and set(stream["supported_sync_modes"]) <= SYNC_MODES
        and configured["sync_mode"] in SYNC_MODES
        and configured["destination_sync_mode"] in DESTINATION_SYNC_MODES
    )
    return configured["sync_mode"] == "incremental" if valid else None


def _stream_state(messages: Any) -> Any:
    """The export stream's state blob from per-stream STATE messages (None if absent); False for any
    other form, which the CDK's state manager reads and the head start leaves to it."""
    if not isinstance(messages, list):
        return False
    found = None
    for message in messages:
        stream = message.get("stream") if message.get("type") == "STREAM" else None
        descriptor = stream.get("stream_descriptor") if isinstance(stream, dict) else None
        if not isinstance(descriptor, dict) or not isinstance(descriptor.get("name"), str):
            return False
        blob = stream.get("stream_state")
        if blob is not None and not isinstance(blob, dict):
            return False
        if descriptor["name"] == STREAM_NAME and not descriptor.get("namespace"):
            found = blob
    return found
