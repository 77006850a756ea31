"""The head start: what it plans from the files alone, when it stays out, and how it hands over."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time

import pytest

from fake_mixpanel import FakeMixpanel, Fault, generate_events
from source_mixpanel_export.budget import RateBudget
from source_mixpanel_export.client import ExportClient, first_attempt_of, remote_spec
from source_mixpanel_export.config import parse_config
from source_mixpanel_export.headstart import HeadStart, HeadStartMissed, _plan
from source_mixpanel_export.state import ExportState, parse_state, sync_windows
from source_mixpanel_export.workers import EncoderPool

SECRET = "sa-secret-7d1e"
TODAY = dt.datetime.now(dt.UTC).date()


def config_dict(base_url: str = "http://127.0.0.1:9", **overrides) -> dict:
    return {
        "credentials": {"username": "sa-user", "secret": SECRET, "project_id": 12345},
        "api_base_url": base_url,
        "start_date": (TODAY - dt.timedelta(days=9)).isoformat(),
        "date_window_size": 2,
        "max_concurrent_requests": 3,
        **overrides,
    }


def catalog_dict(sync_mode: str = "incremental", **stream_overrides) -> dict:
    stream = {"name": "export", "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]}
    return {"streams": [{"stream": {**stream, **stream_overrides}, "sync_mode": sync_mode,
                         "destination_sync_mode": "append"}]}


def state_list(blob: dict) -> list:
    return [{"type": "STREAM", "stream": {"stream_descriptor": {"name": "export"}, "stream_state": blob}}]


def files(tmp_path, config=None, catalog=None, state=None) -> list[str]:
    """`read` arguments for the given file contents (dicts are written as JSON, strings as they are)."""
    args = ["read"]
    for name, value in (("config", config or config_dict()), ("catalog", catalog or catalog_dict()), ("state", state)):
        if value is None:
            continue
        path = tmp_path / f"{name}.json"
        path.write_text(value if isinstance(value, str) else json.dumps(value))
        args += [f"--{name}", str(path)]
    return args


def test_given_plain_read_when_planned_then_the_readers_first_windows_up_to_the_concurrency(tmp_path):
    """The head start fetches what the reader would fetch first, no more than max_concurrent_requests."""
    config, incremental, windows = _plan(files(tmp_path))
    parsed = parse_config(config_dict())
    _, expected = sync_windows(parsed, ExportState(), parsed.today())
    assert config == parsed and incremental and windows == expected[:3] and len(expected) == 5


def test_given_state_when_planned_then_windows_start_where_the_state_says(tmp_path):
    """An incremental read resumes from the state, as the reader does."""
    blob = {"version": 2, "synced_through": (TODAY - dt.timedelta(days=3)).isoformat()}
    _, _, windows = _plan(files(tmp_path, state=state_list(blob)))
    parsed = parse_config(config_dict())
    _, expected = sync_windows(parsed, parse_state(blob), parsed.today())
    assert windows == expected[:3] and windows[0].first_day > TODAY - dt.timedelta(days=9)


def test_given_full_refresh_when_planned_then_the_state_is_ignored_but_still_checked(tmp_path):
    blob = {"version": 2, "synced_through": (TODAY - dt.timedelta(days=3)).isoformat()}
    _, incremental, windows = _plan(files(tmp_path, catalog=catalog_dict("full_refresh"), state=state_list(blob)))
    assert not incremental and windows[0].first_day == TODAY - dt.timedelta(days=9)
    assert _plan(files(tmp_path, catalog=catalog_dict("full_refresh"), state='[{"type": "STREAM"}]')) is None


@pytest.mark.parametrize(
    "inputs",
    [
        dict(config="{not json"),
        dict(config=config_dict(date_window_size=0)),
        dict(catalog=catalog_dict("sideways")),
        dict(catalog=catalog_dict(name="other")),
        dict(catalog=catalog_dict(namespace="ns")),
        dict(catalog={"streams": catalog_dict()["streams"] * 2}),
        dict(catalog={"stream": "export"}),
        dict(state='[{"type": "STREAM"}]'),
        dict(state=json.dumps({"export": {"time": 1}})),  # the legacy form: left to the CDK's state manager
        dict(state=json.dumps([{"type": "GLOBAL", "global": {}}])),
        dict(config=config_dict(start_date=(TODAY + dt.timedelta(days=2)).isoformat())),  # nothing to read
    ],
)
def test_given_input_it_does_not_read_the_simple_way_when_planned_then_no_head_start(tmp_path, inputs):
    """Anything unusual is left to the CDK path, which reports it; the head start sends nothing."""
    args = files(tmp_path, **inputs)
    try:
        plan = _plan(args)
    except Exception:
        plan = None
    assert plan is None


def test_given_other_command_or_no_workers_or_a_proxy_when_begun_then_no_head_start(tmp_path, pool, monkeypatch):
    """Only a `read` with encoding workers, and no proxy (the workers' urllib3 would not use it)."""
    args = files(tmp_path)
    assert HeadStart.begin(["check", "--config", args[2]], pool) is None
    assert HeadStart.begin(args, None) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert HeadStart.begin(args, pool) is None


@pytest.fixture(scope="module")
def pool():
    with EncoderPool(2) as encoder:
        yield encoder


@pytest.fixture
def fake():
    events = generate_events(400, TODAY - dt.timedelta(days=9), 10, seed=5)
    server = FakeMixpanel(events, secret=SECRET, now_ms=int(time.time() * 1000))
    server.start()
    yield server
    server.stop()


def begun(tmp_path, fake, pool, **overrides) -> HeadStart:
    head_start = HeadStart.begin(files(tmp_path, config=config_dict(fake.base_url, **overrides)), pool)
    assert head_start is not None
    return head_start


def reader_plan(fake, **overrides):
    parsed = parse_config(config_dict(fake.base_url, **overrides))
    return parsed, sync_windows(parsed, ExportState(), parsed.today())[1]


def without_emitted_at(lines: bytes) -> bytes:
    return re.sub(rb'"emitted_at":\d+', b'"emitted_at":0', lines)


def test_given_same_plan_when_adopted_then_the_workers_records_equal_the_readers_own(tmp_path, fake, pool):
    """Windows fetched by the workers give the RECORD lines the reader's own download gives, and only
    the head start's requests are sent; the reader's budget counts them."""
    head_start = begun(tmp_path, fake, pool)
    assert len(head_start.windows) == 3  # requests_per_second (3) before 2 per worker (4)
    budget = RateBudget(10, 100)
    head_start.connect(budget)
    parsed, windows = reader_plan(fake)
    adopted = head_start.adopt(parsed, True, windows)
    assert list(adopted) == windows[:3] and budget.left_this_hour() == 97
    own = ExportClient(parsed, RateBudget(10, 100), encoder=pool)
    for window, future in adopted.items():
        download = future.result(timeout=30)
        mine = download.body
        assert mine.wait().bad == 0 and download.attempts == 1 and download.size > 0
        theirs = own.fetch(window)
        assert theirs.body.wait().count == mine.count > 0
        assert without_emitted_at(b"".join(mine.chunks())) == without_emitted_at(b"".join(theirs.body.chunks()))
        download.close()
        theirs.close()
    assert len(fake.export_requests) == 6  # 3 by the head start, 3 by the comparison above


@pytest.mark.parametrize("change", ["config", "mode", "windows"])
def test_given_other_plan_when_adopted_then_nothing_is_handed_over(tmp_path, fake, pool, change):
    """A different config, sync mode or plan gets nothing: the reader fetches every window itself."""
    head_start = begun(tmp_path, fake, pool)
    parsed, windows = reader_plan(fake)
    if change == "config":
        parsed = dataclasses.replace(parsed, skip_bad_lines=not parsed.skip_bad_lines)
    elif change == "windows":
        windows = windows[1:]
    assert head_start.adopt(parsed, change != "mode", windows) == {}
    for future in head_start._futures:  # each ends, and its file is freed
        with pytest.raises(HeadStartMissed):
            future.result(timeout=30)


def test_given_a_failed_attempt_when_adopted_then_that_window_raises_missed_with_how_it_failed(tmp_path, fake, pool):
    """A worker makes one attempt: a 429 reaches the reader as its client's first attempt would have; that
    worker sends no more requests (the reader fetches its windows afresh); the other worker's window arrives."""
    first_day = (TODAY - dt.timedelta(days=9)).isoformat()
    fault = Fault("status", status=429, body='{"error": "slow down"}', headers={"Retry-After": "7"})
    fake.inject_when(lambda r: r.params.get("from_date") == first_day, fault)
    head_start = begun(tmp_path, fake, pool)
    parsed, windows = reader_plan(fake)
    adopted = head_start.adopt(parsed, True, windows)
    with pytest.raises(HeadStartMissed, match="429") as missed:
        adopted[windows[0]].result(timeout=30)
    result = missed.value.result
    assert (result["kind"], result["status"], result["retry_after"]) == ("status", 429, "7")
    first = first_attempt_of(parsed, result)
    assert first.error.rate_limited and first.error.retry_after == 7.0 and "slow down" in str(first.error)
    adopted[windows[1]].result(timeout=30).close()  # the other worker's window
    with pytest.raises(HeadStartMissed, match="not sent") as skipped:  # after the 429, the same worker sends nothing
        adopted[windows[2]].result(timeout=30)
    assert first_attempt_of(parsed, skipped.value.result) is None
    assert len(fake.export_requests) == 2


def test_given_a_worker_fetching_when_blocks_are_submitted_then_they_go_to_the_other_and_do_not_wait(
    tmp_path, fake, pool
):
    """A block queued behind a whole window's fetch would hold up its body (and the blocks after it)."""
    fake.inject_when(lambda r: True, Fault("slow", delay_s=1.5))
    parsed, windows = reader_plan(fake)
    lines = tmp_path / "lines"
    lines.touch()
    fetching = pool.fetch({**remote_spec(parsed, windows[0], str(lines)), "batch": 1}, 0)
    started = time.monotonic()
    blocks = [pool.submit(b'{"event": "E", "properties": {"time": 1}}\n', None, None) for _ in range(6)]
    for block in blocks:
        assert block.result(timeout=30)[1].count == 1
    assert time.monotonic() - started < 1.0 and not fetching.done()
    assert fetching.result(timeout=30)["ok"]
