"""The ways a sync could lose events while exiting 0, each tried through the real CLI: a state of another
project, a server clock that is wrong, a state from the future, a body whose end nothing proves, a full disk,
a sync stopped by SIGTERM or kill -9 (and the secret it must not leave on the disk)."""

from __future__ import annotations

import datetime as dt
import functools
import gzip
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_mixpanel import Fault
from integration_tests.conftest import TODAY
from integration_tests.harness import (
    INCREMENTAL,
    ROOT,
    SA_SECRET,
    SECRETS,
    Run,
    assert_no_secrets,
    catalog,
    command,
    nth_state,
    parse_messages,
    read_and_kill,
    record_keys,
    run_cli,
    run_in_process,
    state_input,
    write_json,
)
from integration_tests.test_hostile_server import hostile_config
from integration_tests.test_incremental_lossless import World, make_world
from source_mixpanel_export.state import parse_state

MINUTE_MS = 60_000


@pytest.fixture
def world() -> Iterator[World]:
    """A fake at t1 whose late events are processed in (t1, t2): see test_incremental_lossless."""
    made = make_world()
    yield made
    made.fake.stop()


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Run]]:
    """One incremental sync of the late-arrival world at t1, shared by the tests that only read its state."""
    made = make_world()
    yield made, read(tmp_path_factory.mktemp("synced"), made.config())
    made.fake.stop()


def read(tmp_path: Path, config: dict[str, Any], state: dict[str, Any] | None = None) -> Run:
    """One incremental read that must succeed and leak no secret, in this process (harness.run_in_process):
    what these tests check does not depend on the process; the SIGTERM, disk and kill tests run the CLI."""
    run = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(state) if state else None)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert_no_secrets(run.stdout, run.stderr)
    return run


def failed(run: Run) -> str:
    """The one error message of a failed run, after checking it failed cleanly."""
    assert run.returncode != 0 and len(run.errors) == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Traceback" not in run.errors[0]["message"]
    return run.errors[0]["message"]


# -- a state is bound to its project ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,named",
    [
        ({"project_id": 54321}, "credentials.project_id"),
        ({"region": "EU"}, "region"),
        ({"legacy_local_time": True, "project_timezone": "America/Los_Angeles"}, "project_timezone"),
    ],
    ids=["project_id", "region", "day_zone"],
)
def test_given_a_state_of_another_project_when_read_then_config_error_names_what_changed(
    tmp_path, world, change, named
):
    """A state written for project A, used with project B's settings, is refused before any request."""
    first = read(tmp_path, world.config())
    assert first.states[-1]["binding"] == {"region": "US", "project_id": 12345, "day_zone": "UTC"}
    config = world.config(**{k: v for k, v in change.items() if k != "project_id"})
    if "project_id" in change:
        config["credentials"] = {**config["credentials"], "project_id": change["project_id"]}
    sent = len(world.fake.export_requests)
    second = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, state=state_input(first.states[-1]))
    message = failed(second)
    assert named in message and "Reset the stream" in message
    assert second.errors[0]["failure_type"] == "config_error"
    assert not second.records and len(world.fake.export_requests) == sent


def test_given_a_state_written_before_states_were_bound_when_read_then_accepted_and_bound(tmp_path, synced):
    """A state with no binding (older builds, the official connector's) is read as before, and the next
    STATE carries the binding."""
    world, first = synced
    unbound = {k: v for k, v in first.states[-1].items() if k != "binding"}
    second = read(tmp_path, world.config(), unbound)
    assert second.states[-1]["binding"]["project_id"] == 12345


# -- our own clock is the judge -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "skew_ms,header",
    [(50 * MINUTE_MS, None), (120 * MINUTE_MS, None), (0, "Thu, 01 Jan 1970 00:00:00 GMT"), (0, "soon, maybe")],
    ids=["50min-ahead", "2h-ahead", "1970", "unparseable"],
)
def test_given_a_wrong_date_header_when_synced_twice_around_late_arrivals_then_nothing_is_lost(
    tmp_path, world, skew_ms, header
):
    """A server whose Date is off (or not a date) cannot move the watermark past our clock: the two syncs
    hold every event, and every state they write is one the next sync accepts."""
    world.fake.date_skew_ms, world.fake.date_header = skew_ms, header
    first = read(tmp_path, world.config())
    assert first.states[-1]["watermark_ms"] < world.t1 + 1000  # our clock at its first request (no late event)
    world.fake.now_ms = world.t2
    second = read(tmp_path, world.config(), first.states[-1])
    assert set(record_keys(first.records)) | set(record_keys(second.records)) == set(world.truth())
    for state in first.states + second.states:
        parse_state(state, now=dt.datetime.fromtimestamp(world.t2 / 1000, dt.UTC))
    if skew_ms or header.startswith("Thu"):
        assert "it is not used for the watermark" in first.logs()
    assert "Traceback" not in first.stderr


def test_given_a_state_watermark_written_59_minutes_ahead_when_read_30_minutes_later_then_nothing_is_lost(
    tmp_path, synced
):
    """A watermark of t1 + 59 min, written at t1 by a clock set ahead and read at t2 (about t1 + 30 min) by a
    right one, is read as an hour before now: the late events processed since t1, which it claims, come."""
    world, first = synced
    ahead = dict(first.states[-1], watermark_ms=world.t1 + 59 * MINUTE_MS)
    world.fake.now_ms = world.t2  # every late event processed
    try:
        second = run_in_process(tmp_path, "read", world.config(), mode=INCREMENTAL, state=state_input(ahead))
    finally:
        world.fake.now_ms = world.t1
    assert second.returncode == 0, second.stdout[-2000:]
    assert "lies after now" in second.logs()
    assert set(record_keys(first.records)) | set(record_keys(second.records)) == set(world.truth())


def test_given_this_machine_s_clock_10_minutes_ahead_when_synced_twice_then_mixpanel_s_date_counts(tmp_path, world):
    """Our clock 10 minutes fast, Mixpanel's Date right: the watermark follows the Date (the earlier), so
    the late events Mixpanel processes in those 10 minutes are not skipped by the next sync."""
    first = run_in_process(tmp_path, "read", world.config(), mode=INCREMENTAL, now_ms=world.t1 + 10 * MINUTE_MS)
    assert first.returncode == 0 and first.states[-1]["watermark_ms"] <= world.t1
    assert "behind this machine's clock" in first.logs()
    world.fake.now_ms = world.t2
    second = read(tmp_path, world.config(), first.states[-1])
    assert set(record_keys(first.records)) | set(record_keys(second.records)) == set(world.truth())


def test_given_an_official_state_a_day_ahead_when_read_then_its_days_count_from_today(tmp_path, synced):
    """The official connector's `time` 23 h ahead is read as today: the attribution window before today is
    read whole, so no event of those days is lost."""
    world, _ = synced
    ahead = dt.datetime.fromtimestamp((world.t1 + 23 * 3_600_000) / 1000, dt.UTC)
    run = read(tmp_path, world.config(), {"time": ahead.isoformat()})
    recent = TODAY - dt.timedelta(days=4)
    assert set(record_keys(run.records)) == set(world.truth(visible_at_ms=world.t1)) - set(
        world.truth(last=recent - dt.timedelta(days=1), visible_at_ms=world.t1)
    )


# -- only verifiable bodies count as complete -------------------------------------------------------------------

EVENT = b'{"event":"E","properties":{"time":%d,"$insert_id":"i%d","mp_processing_time_ms":1}}\n'


def events_of(day: dt.date, count: int) -> bytes:
    start = int(dt.datetime.combine(day, dt.time(1), dt.UTC).timestamp() * 1000)
    return b"".join(EVENT % (start + i, i) for i in range(count))


def unframed(body: bytes, gzipped: bool) -> Callable[[Any], None]:
    """An HTTP/1.0 answer that ends when the connection closes: no Content-Length, not chunked."""

    def respond(handler: Any) -> None:
        handler.protocol_version = "HTTP/1.0"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        if gzipped:
            handler.send_header("Content-Encoding", "gzip")
        handler.end_headers()
        handler.wfile.write(gzip.compress(body, 1) if gzipped else body)
        handler.close_connection = True

    return respond


def test_given_a_plain_body_cut_at_a_line_boundary_without_framing_when_read_then_never_complete(tmp_path, hostile):
    """501 of 1,000 lines, then the connection closes: nothing proves the end, so no record is emitted;
    after three such answers the sync fails naming the cause."""
    day = TODAY - dt.timedelta(days=1)
    lines = events_of(day, 1000).split(b"\n")
    url = hostile(unframed(b"\n".join(lines[:501]) + b"\n", gzipped=False))
    run = run_cli(tmp_path, "read", hostile_config(url))
    message = failed(run)
    assert "neither gzip nor framed" in message and "proxy" in message and "3 attempts in a row" in message
    assert not run.records


def test_given_a_whole_gzip_body_without_framing_when_read_then_its_trailer_proves_it_complete(tmp_path, hostile):
    """gzip's trailer proves the end of a body that ends with its connection."""
    day = TODAY - dt.timedelta(days=1)
    url = hostile(unframed(events_of(day, 1000), gzipped=True))
    run = run_cli(tmp_path, "read", hostile_config(url))
    assert run.returncode == 0, run.stdout[-2000:]
    assert sorted(r["insert_id"] for r in run.records) == sorted(f"i{i}" for i in range(1000))


# -- a full disk is named, and leaves nothing behind -------------------------------------------------------------


def chunked_plain(body: bytes) -> Callable[[Any], None]:
    def respond(handler: Any) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for at in range(0, len(body), 1 << 16):
            piece = body[at : at + (1 << 16)]
            handler.wfile.write(b"%X\r\n%b\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\n\r\n")

    return respond


@pytest.fixture
def small_tmpdir(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB filesystem (tmpfs, mounted as root, as CI runs)."""
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_given_a_full_tmpdir_when_a_window_spills_then_a_clear_error_names_it_and_nothing_is_left(
    tmp_path, hostile, small_tmpdir
):
    """ENOSPC while spilling a 4 MB plain body: an error naming TMPDIR and its free space, no record of the
    window, and no file left in TMPDIR."""
    url = hostile(chunked_plain(events_of(TODAY - dt.timedelta(days=1), 40_000)))
    run = run_cli(tmp_path, "read", hostile_config(url), env={"TMPDIR": str(small_tmpdir)})
    message = failed(run)
    assert str(small_tmpdir) in message and "TMPDIR" in message and "MB free" in message
    assert "No space left on device" in message
    assert not run.records and os.listdir(small_tmpdir) == []


def test_given_a_file_size_limit_when_a_window_spills_then_the_error_names_the_disk_not_mixpanel(tmp_path, hostile):
    """EFBIG (RLIMIT_FSIZE) while spilling is the same clear error, not "the response was cut off"."""
    url = hostile(chunked_plain(events_of(TODAY - dt.timedelta(days=1), 40_000)))
    args = [*command(), "read", "--config", str(write_json(tmp_path / "c.json", hostile_config(url)))]
    args += ["--catalog", str(write_json(tmp_path / "cat.json", catalog()))]
    limit = functools.partial(resource.setrlimit, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    done = subprocess.run(args, capture_output=True, preexec_fn=limit, timeout=120, cwd=ROOT,
                          env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)})
    run = Run(done.returncode, done.stdout.decode(), done.stderr.decode(), parse_messages(done.stdout.decode()))
    message = failed(run)
    assert "TMPDIR" in message and "File too large" in message and "cut off" not in message


# -- SIGTERM and kill -9 -----------------------------------------------------------------------------------------


def files_holding_a_secret(root: Path) -> list[str]:
    """Every file under `root` that holds a test secret."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and any(secret.encode() in path.read_bytes() for secret in SECRETS):
            found.append(str(path))
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_given_a_sync_stopped_mid_read_when_it_ends_then_no_secret_is_on_disk_and_the_next_sync_resumes(
    tmp_path, world, sig
):
    """Stopped after its first checkpoint while the next window is being fetched: nothing under TMPDIR holds
    the secret; after SIGTERM a last line says what was checkpointed and the exit is non-zero; the next sync
    from the last STATE delivers the rest."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    base = len(world.fake.export_requests)
    world.fake.inject_when(lambda r: r.number == base + 2, Fault("slow", delay_s=30))
    config = world.config()
    stopped = read_and_kill(tmp_path, config, None, nth_state(1), sig=sig, env={"TMPDIR": str(temp)})
    world.fake.clear_faults()
    world.fake.release_slow()
    assert files_holding_a_secret(temp) == [] and SA_SECRET not in stopped.stdout
    if sig == signal.SIGTERM:
        assert stopped.returncode == 128 + signal.SIGTERM
        assert "Stopped on SIGTERM" in stopped.logs() and "the next sync resumes from it" in stopped.logs()
        assert stopped.statuses[-1] == "INCOMPLETE"
    else:
        assert stopped.returncode == -signal.SIGKILL
    resumed = read(tmp_path, config, stopped.states[-1])
    assert_no_secrets(resumed.stdout, resumed.stderr)
    assert set(record_keys(stopped.records)) | set(record_keys(resumed.records)) == set(
        world.truth(visible_at_ms=world.t1)
    )


def test_given_check_killed_while_waiting_for_mixpanel_when_it_ends_then_no_config_file_is_left(tmp_path, world):
    """The CDK's `configure` would write the config, secret included, to TMPDIR/tmpXXXX/config.json, which
    kill -9 leaves behind: nothing of the kind is written."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    world.fake.inject_when(lambda r: True, Fault("slow", delay_s=30), times=2)
    args = [*command(), "check", "--config", str(write_json(tmp_path / "config.json", world.config()))]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
                               env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(600):
            if world.fake.export_requests:
                break
            time.sleep(0.05)
        assert world.fake.export_requests, "check never asked Mixpanel"
        assert files_holding_a_secret(temp) == []
    finally:
        process.kill()
        process.communicate(timeout=60)
        world.fake.release_slow()
    assert files_holding_a_secret(temp) == []


# -- a namespace is ignored consistently ------------------------------------------------------------------------


def test_given_a_catalog_with_a_namespace_when_synced_twice_then_the_second_sync_uses_the_state(tmp_path, synced):
    """The state is written without a namespace and found again by the stream's name alone: the second sync
    re-reads the recent days only, not everything from start_date."""
    world, _ = synced
    namespaced = catalog(INCREMENTAL)
    namespaced["streams"][0]["stream"]["namespace"] = "mixpanel"
    first = run_in_process(tmp_path, "read", world.config(), catalog_value=namespaced)
    assert first.returncode == 0
    sent = len(world.fake.export_requests)
    second = run_in_process(tmp_path, "read", world.config(), catalog_value=namespaced,
                            state=state_input(first.states[-1]))
    assert second.returncode == 0
    statuses = [m["trace"]["stream_status"] for m in first.of("TRACE") if m["trace"]["type"] == "STREAM_STATUS"]
    assert statuses and all("namespace" not in s["stream_descriptor"] for s in statuses)
    assert all("namespace" not in m["record"] for m in first.of("RECORD"))
    assert all("namespace" not in m["state"]["stream"]["stream_descriptor"] for m in first.of("STATE"))
    start = world.config()["start_date"]
    assert all(r.params["from_date"] > start for r in world.fake.export_requests[sent:])


# -- a server that ignores the time filter -------------------------------------------------------------------


def test_given_a_server_that_ignores_the_time_filter_when_a_day_is_split_then_the_sync_fails_saying_so(
    tmp_path, hostile
):
    """Every piece answered with the whole day's 5,000 events: once two pieces of one window begin as the
    window did, the sync fails naming the cause, after a handful of requests instead of one per hour of the
    day, each emitting the whole day (45 requests and exit 0 before)."""
    requests: list[str] = []
    whole = chunked_plain(events_of(TODAY - dt.timedelta(days=1), 5000))

    def respond(handler: Any) -> None:
        requests.append(handler.path)
        whole(handler)

    run = run_cli(tmp_path, "read", hostile_config(hostile(respond), window_target_events=1000))
    message = failed(run)
    assert "ignores the time filter" in message and "api_base_url" in message
    assert len(requests) <= 12 and len(run.records) <= 5000
