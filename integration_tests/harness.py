"""Running the real CLI against the fake Mixpanel, and comparing what it emitted with the truth."""

from __future__ import annotations

import collections
import datetime as dt
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fake_mixpanel import FakeEvent, FakeMixpanel

ROOT = Path(__file__).resolve().parent.parent
SA_USER, SA_SECRET, PROJECT_ID, API_SECRET = "sa-user", "sa-secret-5f1e9c", 12345, "proj-secret-a7d2"
SECRETS = (SA_SECRET, API_SECRET)
FULL_REFRESH, INCREMENTAL = "full_refresh", "incremental"


def command(now_ms: int | None = None) -> list[str]:
    """The installed console script when there is one, else `python -m` on the package; with `now_ms`, the
    same entry point with the connector's calendar clock starting there (integration_tests/clocked.py)."""
    if now_ms is not None:
        return [sys.executable, "-m", "integration_tests.clocked", str(now_ms)]
    script = Path(sys.executable).parent / "source-mixpanel-export"
    if script.exists():
        return [str(script)]
    found = shutil.which("source-mixpanel-export")
    return [found] if found else [sys.executable, "-m", "source_mixpanel_export.run"]


_STARTED: weakref.WeakValueDictionary[str, FakeMixpanel] = weakref.WeakValueDictionary()  # base_url -> fake


def make_fake(events: list[FakeEvent], **kwargs: Any) -> FakeMixpanel:
    """A started fake with the test credentials."""
    fake = FakeMixpanel(
        events, username=SA_USER, secret=SA_SECRET, project_id=PROJECT_ID, api_secret=API_SECRET, **kwargs
    )
    fake.start()
    _STARTED[fake.base_url] = fake
    return fake


def connector_clock(config: dict[str, Any] | None, now_ms: int | None) -> int | None:
    """Where a run's calendar clock starts (None: the machine's). `now_ms` when given (a test of a skew
    between the two clocks); else the clock of the fake make_fake started at the config's api_base_url, as
    a project's clock and Mixpanel's agree: so no test's result depends on the hour it runs at, even when
    it moves the fake's clock hours ahead."""
    if now_ms is not None:
        return now_ms
    fake = _STARTED.get((config or {}).get("api_base_url", ""))
    return fake.current_ms() if fake is not None else None


def config_for(fake: FakeMixpanel, **overrides: Any) -> dict[str, Any]:
    """A service-account config aimed at the fake, with fast retries and a roomy per-second budget."""
    config: dict[str, Any] = {
        "credentials": {
            "option_title": "Service Account",
            "username": SA_USER,
            "secret": SA_SECRET,
            "project_id": PROJECT_ID,
        },
        "api_base_url": fake.base_url,
        "start_date": "2024-01-01",
        "date_window_size": 3,
        "requests_per_second": 100,
        "requests_per_hour": 10000,
        "retry_initial_backoff_seconds": 0.05,
        "max_retry_seconds": 30,
    }
    config.update(overrides)
    return config


def catalog(mode: str = FULL_REFRESH, name: str = "export") -> dict[str, Any]:
    """A configured catalog with the one stream in the given mode."""
    return {
        "streams": [
            {
                "stream": {
                    "name": name,
                    "json_schema": {},
                    "supported_sync_modes": [FULL_REFRESH, INCREMENTAL],
                    "source_defined_cursor": True,
                    "default_cursor_field": ["time"],
                },
                "sync_mode": mode,
                "destination_sync_mode": "append",
            }
        ]
    }


@dataclass
class Run:
    """What one CLI run printed, parsed."""

    returncode: int
    stdout: str
    stderr: str
    messages: list[dict[str, Any]] = field(default_factory=list)

    def of(self, kind: str) -> list[dict[str, Any]]:
        """Messages of one type (RECORD, STATE, TRACE, LOG, ...)."""
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def records(self) -> list[dict[str, Any]]:
        """The data of every RECORD message."""
        return [m["record"]["data"] for m in self.of("RECORD")]

    @property
    def states(self) -> list[dict[str, Any]]:
        """The stream_state of every STATE message."""
        return [m["state"]["stream"]["stream_state"] for m in self.of("STATE")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        """The error of every TRACE ERROR message."""
        return [m["trace"]["error"] for m in self.of("TRACE") if m["trace"]["type"] == "ERROR"]

    @property
    def statuses(self) -> list[str]:
        """STREAM_STATUS values in order."""
        return [
            m["trace"]["stream_status"]["status"]
            for m in self.of("TRACE")
            if m["trace"]["type"] == "STREAM_STATUS"
        ]

    def logs(self) -> str:
        """Every LOG message's text, one per line."""
        return "\n".join(m["log"]["message"] for m in self.of("LOG"))


def write_json(path: Path, value: Any) -> Path:
    """Write a JSON file and return its path."""
    path.write_text(json.dumps(value))
    return path


def run_cli(
    tmp_path: Path,
    verb: str,
    config: dict[str, Any] | None = None,
    mode: str = FULL_REFRESH,
    state: Any = None,
    extra: list[str] | None = None,
    timeout: float = 120,
    catalog_value: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    now_ms: int | None = None,
) -> Run:
    """Run `source-mixpanel-export <verb>` as a subprocess and parse its stdout (exact integers kept);
    `env` is added to the environment; the connector's calendar clock starts at connector_clock's."""
    program = command(connector_clock(config, now_ms))
    args = program + cli_args(tmp_path, verb, config, mode, state, extra, catalog_value)
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(args, capture_output=True, timeout=timeout, env=environment, cwd=ROOT)
    stdout, stderr = done.stdout.decode(), done.stderr.decode(errors="replace")
    return Run(done.returncode, stdout, stderr, parse_messages(stdout))


def cli_args(
    tmp_path: Path,
    verb: str,
    config: dict[str, Any] | None,
    mode: str,
    state: Any,
    extra: list[str] | None,
    catalog_value: dict[str, Any] | None,
) -> list[str]:
    """The command line after the program: the verb and its input files, written under tmp_path."""
    args = [verb]
    if config is not None:
        args += ["--config", str(write_json(tmp_path / "config.json", config))]
    if verb == "read":
        args += ["--catalog", str(write_json(tmp_path / "catalog.json", catalog_value or catalog(mode)))]
        if state is not None:
            args += ["--state", str(write_json(tmp_path / "state.json", state))]
    return args + (extra or [])


def run_in_process(
    tmp_path: Path,
    verb: str,
    config: dict[str, Any] | None = None,
    mode: str = FULL_REFRESH,
    state: Any = None,
    extra: list[str] | None = None,
    catalog_value: dict[str, Any] | None = None,
    now_ms: int | None = None,
) -> Run:
    """What run_cli does, without the subprocess (2-3 s of imports each): the console script's `run` in
    this process, at connector_clock's clock, with the process-wide state a CLI run starts without (the
    secret filter's list, the logger levels, the excepthook, the calendar clock) set and put back.

    stdout and stderr (and sys.__stdout__, where the CDK's print buffer and the writer go) are captured;
    an uncaught exception goes to the excepthook the CDK installed, as at the end of a CLI run, and
    the exit code is what the interpreter would have returned."""
    from airbyte_cdk.logger import PRINT_BUFFER
    from airbyte_cdk.utils.airbyte_secrets_utils import update_secrets

    from source_mixpanel_export import clock
    from source_mixpanel_export.run import run

    args = cli_args(tmp_path, verb, config, mode, state, extra, catalog_value)
    out, err = io.BytesIO(), io.StringIO()
    text = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    saved_streams = sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__
    saved_hook, saved_now = sys.excepthook, clock.utc_now
    saved_levels = {name: logging.getLogger(name).level for name in _airbyte_loggers()}
    start = connector_clock(config, now_ms)
    if start is not None:
        offset = start / 1000 - time.time()
        clock.utc_now = lambda: dt.datetime.fromtimestamp(time.time() + offset, dt.UTC)
    update_secrets([])
    sys.stdout = sys.__stdout__ = text
    sys.stderr = sys.__stderr__ = err
    returncode = 0
    try:
        run(args)
    except SystemExit as exc:
        returncode = _exit_code(exc.code, err)
    except Exception as exc:
        sys.excepthook(type(exc), exc, exc.__traceback__)
        returncode = 1
    finally:
        PRINT_BUFFER.flush()
        text.flush()
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved_streams
        sys.excepthook, clock.utc_now = saved_hook, saved_now
        for name in _airbyte_loggers():
            logging.getLogger(name).setLevel(saved_levels.get(name, logging.NOTSET))
        update_secrets([])
    stdout = out.getvalue().decode()
    return Run(returncode, stdout, err.getvalue(), parse_messages(stdout))


def _airbyte_loggers() -> list[str]:
    """The CDK's and the connector's loggers, whose levels `--debug` changes."""
    return ["airbyte", *(name for name in logging.root.manager.loggerDict if name.startswith("airbyte."))]


def _exit_code(code: object, stderr: io.StringIO) -> int:
    """The interpreter's exit status for sys.exit(code): None is 0, an int itself, anything else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=stderr)
    return 1


def parse_messages(stdout: str) -> list[dict[str, Any]]:
    """One JSON message per line (split on \\n only); the stdlib parser keeps big integers exact."""
    return [json.loads(line) for line in stdout.split("\n") if line.strip()]


def state_input(stream_state: dict[str, Any], name: str = "export") -> list[dict[str, Any]]:
    """The --state file content for a per-stream state."""
    return [{"type": "STREAM", "stream": {"stream_descriptor": {"name": name}, "stream_state": stream_state}}]


def event_key(name: str, properties: dict[str, Any]) -> str:
    """A canonical text for an event: name and every property, so set comparison is exact."""
    return name + "\x00" + json.dumps(properties, sort_keys=True, ensure_ascii=False)


def record_keys(records: list[dict[str, Any]]) -> collections.Counter[str]:
    """Multiset of emitted events."""
    return collections.Counter(event_key(r["event"], r["properties"]) for r in records)


def truth(
    fake: FakeMixpanel,
    first: dt.date,
    last: dt.date,
    visible_at_ms: int | None = None,
    legacy_tz: str | None = None,
) -> collections.Counter[str]:
    """Multiset of the events the export should hold for [first, last] (days in the request timezone)."""
    zone = dt.UTC if legacy_tz is None else _zone(legacy_tz)
    out: collections.Counter[str] = collections.Counter()
    for event in fake.events:
        day = dt.datetime.fromtimestamp(event.time_ms / 1000, zone).date()
        if not first <= day <= last:
            continue
        if visible_at_ms is not None and event.processing_ms is not None and event.processing_ms > visible_at_ms:
            continue
        out[event_key(event.name, event.export_properties(time_in_ms=True, legacy_tz=legacy_tz))] += 1
    return out


def _zone(name: str) -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


def assert_no_secrets(*texts: str) -> None:
    """No test secret, nor its Basic-auth token, appears in any output."""
    import base64

    forms = list(SECRETS) + [
        base64.b64encode(f"{SA_USER}:{SA_SECRET}".encode()).decode(),
        base64.b64encode(f"{API_SECRET}:".encode()).decode(),
    ]
    for text in texts:
        for form in forms:
            assert form not in text, "a secret leaked into the output"


# -- kill -9 ------------------------------------------------------------------------------------------

Stop = Callable[[list[dict[str, Any]]], bool]


def read_and_kill(
    tmp_path: Path,
    config: dict[str, Any],
    state: dict[str, Any] | None,
    stop: Stop,
    sig: int = signal.SIGKILL,
    env: dict[str, str] | None = None,
    name: str = "export",
) -> Run:
    """Run `read`, and send it `sig` (SIGKILL) as soon as `stop(messages so far)` holds; return everything
    it printed until it ended. `env` is added to its environment; `name` is the stream read (incremental).

    stdout is read one line at a time and no further once `stop` holds, so a sync busy emitting records
    blocks on the full pipe right there. A torn last line (the kill landed mid-write) is dropped, as a
    platform would have to.
    """
    args = [*command(connector_clock(config, None)), "read"]
    args += ["--config", str(write_json(tmp_path / "kill_config.json", config))]
    args += ["--catalog", str(write_json(tmp_path / "kill_catalog.json", catalog(INCREMENTAL, name)))]
    if state is not None:
        args += ["--state", str(write_json(tmp_path / "kill_state.json", state_input(state, name)))]
    messages: list[dict[str, Any]] = []
    out = bytearray()
    with open(tmp_path / "kill_stderr.txt", "wb") as stderr:
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                out += line
                messages.append(json.loads(line))
                if stop(messages):
                    break
            proc.send_signal(sig)
            rest = proc.stdout.read()
        finally:
            proc.kill()
            proc.wait(timeout=60)
    whole, _, torn = rest.rpartition(b"\n")
    assert sig == signal.SIGKILL or not torn, f"a line torn by {signal.Signals(sig).name}: {torn[:200]!r}"
    for line in whole.split(b"\n") if whole else []:
        out += line + b"\n"
        messages.append(json.loads(line))
    stderr_text = (tmp_path / "kill_stderr.txt").read_text(errors="replace")
    assert_no_secrets(out.decode(errors="replace"), stderr_text)
    return Run(proc.returncode, out.decode(errors="replace"), stderr_text, messages)


def nth_state(n: int) -> Stop:
    """Stop once the n-th STATE is printed."""
    return lambda messages: sum(m["type"] == "STATE" for m in messages) == n


def reread_from(stream_state: dict[str, Any]) -> dt.date:
    """The first day the next sync re-reads for late arrivals: the day after the state's history
    (the days before it are left to the history sweep)."""
    history = stream_state["history"]
    checked = history["checked"]
    if not checked:
        return dt.date.fromisoformat(history["from"])
    return dt.date.fromisoformat(checked[-1]["through"]) + dt.timedelta(days=1)
