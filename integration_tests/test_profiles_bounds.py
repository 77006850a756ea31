"""The `profiles` stream's bounds under hostile input: the sweep's queries a sync when profiles are bunched or
pages carry no `total`, the syncs a quiet update waits, states that are not ours, and Engage answers that page
for ever, repeat, or inflate. Each was broken once (a hostile run); each test is the promise as the docs state it.

Runs go through the console script's `run` in this process, but the memory bound, which needs the CLI's RSS.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import math
import os
import random
import re
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fake_mixpanel.engage as fake_engage
from fake_mixpanel import ENGAGE_PATH, FakeMixpanel, Fault, generate_profiles
from fake_mixpanel.profiles import FakeProfile, mixpanel_time
from integration_tests.harness import (
    FULL_REFRESH,
    INCREMENTAL,
    ROOT,
    Run,
    assert_no_secrets,
    catalog,
    command,
    config_for,
    make_fake,
    parse_messages,
    run_in_process,
    state_input,
    write_json,
)
from integration_tests.test_hostile_server import PEAK_RSS_BOUND_MB, high_water_mb

NOW = int(dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC).timestamp() * 1000)
HOUR_MS = 3_600_000
PAGE = 100
PROFILE_PAGE_PEAK_RSS_MB = 500  # the bound docs/mixpanel-export.md states for pages within engage.py's caps


def sync(tmp_path: Path, fake: Any, mode: str, state: Any = None, **settings: Any) -> Run:
    config = config_for(fake, profile_requests_per_hour=100_000, **settings)
    return run_in_process(
        tmp_path, "read", config, state=state_input(state, "profiles") if state is not None else None,
        catalog_value=catalog(mode, "profiles"),
    )


def hourly_syncs(tmp_path: Path, fake: FakeMixpanel, count: int, **settings: Any) -> Iterator[tuple[Run, int]]:
    """A pass, then `count` hourly incremental syncs: each of those with the Engage requests it sent."""
    state = None
    for number in range(count + 1):
        fake.now_ms = NOW + number * HOUR_MS
        fake.reset_requests()
        run = sync(tmp_path, fake, INCREMENTAL, state, **settings)
        assert run.returncode == 0, run.logs()[-2000:]
        state = run.states[-1]
        if number:
            yield run, len(fake.engage_requests)


def sweep_bound(profiles: int, sweep: int) -> int:
    """Syncs in which every profile is read again (docs/mixpanel-export.md), for profiles spread over time."""
    return math.ceil(profiles / (PAGE * (sweep - 2))) + 1


# -- the sweep's queries a sync ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "one_second_pages"), [(200, 0), (2, 11)])
def test_given_profiles_bunched_in_seconds_when_swept_then_each_sync_keeps_the_sweeps_bound(
    tmp_path: Path, seconds: int, one_second_pages: int
) -> None:
    """2,000 profiles imported within `seconds`, 400 days ago, profile_sweep_requests 4. A dense range is
    narrowed, and a sweep out of queries keeps the narrower range for the next sync: no sync sends more than 1
    (the changes) + 4, but one that reads a single second holding more pages than that: read whole, first of
    its sync's sweep, after at most 4 - 2 queries that narrowed to it (the documented exception). Every
    bunched profile is swept again: here within twice the syncs of profiles spread over time."""
    start = NOW - 400 * 24 * HOUR_MS
    profiles = [
        FakeProfile(f"imported-{i}", {"$last_seen": mixpanel_time(start + (i % seconds) * 1000)}) for i in range(2000)
    ]
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        swept: set[str] = set()
        for number, (run, requests) in enumerate(hourly_syncs(tmp_path, fake, 40, profile_sweep_requests=4), 1):
            whole_second = one_second_pages and requests > 1 + 4
            assert requests <= (1 + 4 - 2 + one_second_pages if whole_second else 1 + 4), (number, requests)
            swept |= {r["distinct_id"] for r in run.records}
            if len(swept) == 2000:
                break
        assert len(swept) == 2000 and number <= 2 * sweep_bound(2000, 4), number


def active_project(count: int, seed: int = 1) -> list[FakeProfile]:
    """90% of the profiles last seen in the last 3 days (active users), 10% over the 2 years before, each at its
    own second, all before NOW - 2 h."""
    rng = random.Random(seed)
    ages = [rng.randrange(3 * 24 * HOUR_MS) if rng.random() < 0.9 else rng.randrange(730 * 24 * HOUR_MS)
            for _ in range(count)]
    seen = [mixpanel_time(NOW - 2 * HOUR_MS - age) for age in ages]
    return [FakeProfile(f"user-{i}", {"$last_seen": time}) for i, time in enumerate(seen)]


def in_order(profiles: list[FakeProfile], order: str) -> list[FakeProfile]:
    """The profiles as the fake stores, and so pages, them: as given, or by `$last_seen`."""
    if order == "as stored":
        return profiles
    return sorted(profiles, key=lambda p: p.properties["$last_seen"], reverse=order == "newest first")


@pytest.mark.parametrize("order", ["as stored", "oldest first", "newest first"])
def test_given_most_profiles_recently_active_when_swept_then_each_is_read_again_within_p_syncs(
    tmp_path: Path, order: str
) -> None:
    """Ranges sized by the sparse years reach into the dense last days: a range is narrowed where page 0's
    profiles show the share that fits, not by its average density (which read a few dozen profiles a sync and
    took 9 syncs here, P being 5). Mixpanel documents no order for a page: sorted by `$last_seen`, page 0
    holds the oldest or the newest, and the cut is counted from them (newest first, 1,615 profiles were not
    read again in P syncs when page 0 was taken as a fair sample)."""
    profiles = in_order(active_project(3000), order)
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        pending = {p.distinct_id for p in profiles}
        for number, (run, requests) in enumerate(hourly_syncs(tmp_path, fake, sweep_bound(3000, 10)), 1):
            assert requests <= 1 + 10, (number, requests)
            pending -= {r["distinct_id"] for r in run.records}
        assert not pending, f"{len(pending)} profiles not read again within P = {sweep_bound(3000, 10)} syncs"


def a_year_and_its_last_second() -> list[FakeProfile]:
    """1,500 profiles over the last year and 150 in one second just before the sync, newest first: page 0 of a
    range without a lower bound holds only that second."""
    last = NOW - 2 * HOUR_MS
    spread = [FakeProfile(f"year-{i}", {"$last_seen": mixpanel_time(last - 1000 - i * 21_000_000)})
              for i in range(1500)]
    burst = [FakeProfile(f"burst-{i}", {"$last_seen": mixpanel_time(last)}) for i in range(150)]
    return burst + spread


def test_given_page_0_holding_only_the_last_second_when_read_then_ranges_keep_their_size_and_the_sweep_its_bound(
    tmp_path: Path,
) -> None:
    """That second was taken as the lower bound of a range without one, which then could not be narrowed: a
    year was read as one range of 17 pages (`profile_range_pages` 2), and the sweep sent 18 queries (K 4)."""
    with make_fake([], profiles=a_year_and_its_last_second(), now_ms=NOW, engage_page_size=PAGE) as fake:
        fake.reset_requests()
        full = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=2)
        assert full.returncode == 0, full.logs()[-2000:]
        assert sorted(r["distinct_id"] for r in full.records) == sorted(p.distinct_id for p in fake.profiles)
        per_range: dict[str, int] = {}
        for request in fake.engage_requests:
            per_range[request.params["where"]] = per_range.get(request.params["where"], 0) + 1
        assert max(per_range.values()) <= 2 * 2, per_range  # at most twice `profile_range_pages`
        for number, (_, requests) in enumerate(hourly_syncs(tmp_path, fake, 6, profile_sweep_requests=4), 1):
            assert requests <= 1 + 4, (number, requests)


def test_given_pages_newest_first_when_a_pass_reads_them_then_about_one_first_page_per_range(tmp_path: Path) -> None:
    """Each range costs its page 0, and a narrowing one more: a pass of 4,000 profiles in ranges of a page of
    100 needs 40 ranges. Newest first, page 0 taken as a fair sample sent 5 times as many first pages."""
    profiles = in_order(active_project(4000, seed=4), "newest first")
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        fake.reset_requests()
        run = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=1)
        assert run.returncode == 0, run.logs()[-2000:]
        assert len(run.records) == 4000
        first_pages = sum(r.params.get("page") == "0" for r in fake.engage_requests)
        print(f"first pages: {first_pages}")
        assert first_pages <= 1.5 * 4000 / PAGE, first_pages


def test_given_many_profiles_whose_last_seen_is_no_date_when_read_then_two_narrowings_then_read_whole(
    tmp_path: Path,
) -> None:
    """Profiles whose `$last_seen` is no date lie in the first dated range, below every date. More of them than a
    range holds cost two narrowings, not one a halving of the years since 2009 (about 28 a sweep cycle)."""
    undated = [FakeProfile(f"undated-{i}", {"$last_seen": "unknown"}) for i in range(1000)]
    dated = [FakeProfile(f"dated-{i}", {"$last_seen": mixpanel_time(NOW - 3 * HOUR_MS - i * 600_000)})
             for i in range(300)]
    with make_fake([], profiles=undated + dated, now_ms=NOW, engage_page_size=PAGE) as fake:
        fake.reset_requests()
        full = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=2)
        assert full.returncode == 0, full.logs()[-2000:]
        assert sorted(r["distinct_id"] for r in full.records) == sorted(p.distinct_id for p in fake.profiles)
        first_pages = sum(r.params.get("page") == "0" for r in fake.engage_requests)
        assert first_pages <= 1 + 3 + 300 // (2 * PAGE) + 3, first_pages  # unseen, 2 narrowings and 1 read, dated
        for number, (_, requests) in enumerate(hourly_syncs(tmp_path, fake, 4, profile_sweep_requests=4), 1):
            # the documented exception: read whole, first of its sync's sweep, after at most K - 2 narrowings
            assert requests <= 1 + 4 or requests <= 1 + 2 + 1 + 1000 // PAGE, (number, requests)


def test_given_a_session_lost_at_the_sweeps_last_query_when_read_then_no_restart_past_its_bound(
    tmp_path: Path,
) -> None:
    """The page 0 of a restarted session is a query like any: the sweep does not send it past its K (4)."""
    day = NOW - 10 * 24 * HOUR_MS
    profiles = [FakeProfile(f"p{i}", {"$last_seen": mixpanel_time(day + i * 200_000)}) for i in range(350)]
    state = {
        "version": 1,
        "watermark": mixpanel_time(NOW - HOUR_MS),
        "sweep": {"from": mixpanel_time(day), "to": mixpanel_time(day + 24 * HOUR_MS), "unseen_done": True,
                  "span": None, "started": mixpanel_time(NOW - 2 * HOUR_MS), "until": mixpanel_time(NOW - HOUR_MS)},
    }
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        fake.reset_requests()

        def lose_session(request: Any) -> bool:
            if request.params.get("page") == "3":
                fake.expire_sessions()
            return False

        fake.inject_when(lose_session, Fault("status"), path=ENGAGE_PATH)
        run = sync(tmp_path, fake, INCREMENTAL, state, profile_sweep_requests=4)
        assert run.returncode == 0, run.logs()[-2000:]
        pages = [r.params.get("page") for r in fake.engage_requests]
        assert pages == ["0", "0", "1", "2", "3"], pages  # the changes, then the sweep's 4
        assert run.states[-1]["sweep"]["to"] < state["sweep"]["to"]  # stopped, and narrowed for the next sync


def test_given_a_sweep_setting_of_1_or_2_when_checked_then_a_config_error_names_it(tmp_path: Path) -> None:
    """A sweep range costs its page 0 and a page of slack: 1 or 2 queries would read nothing whole."""
    with make_fake([], profiles=generate_profiles(30, seed=5, now_ms=NOW), now_ms=NOW) as fake:
        for sweep in (1, 2):
            run = run_in_process(tmp_path, "check", config_for(fake, profile_sweep_requests=sweep))
            status = run.of("CONNECTION_STATUS")[0]["connectionStatus"]
            assert status["status"] == "FAILED" and "profile_sweep_requests" in status["message"], status


@pytest.fixture
def no_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake's Engage pages without `total`: Mixpanel's docs do not promise it."""
    answer = fake_engage.ProfileStore.answer

    def without_total(self: Any, *args: Any, **kwargs: Any) -> bytes:
        return re.sub(rb',"total":\d+\}$', b"}", answer(self, *args, **kwargs))

    monkeypatch.setattr(fake_engage.ProfileStore, "answer", without_total)


@pytest.mark.usefixtures("no_total")
def test_given_pages_without_a_total_when_read_then_every_profile_with_checkpoints_and_the_sweeps_bound(
    tmp_path: Path,
) -> None:
    """A pass halves its first range until page 0 is not full, then sizes ranges by density: every profile
    once, with a checkpoint every few pages. The sweep stops a range when its queries run out."""
    profiles = generate_profiles(3000, seed=5, now_ms=NOW, missing_last_seen_fraction=0)
    with make_fake([], profiles=profiles, now_ms=NOW, engage_page_size=PAGE) as fake:
        full = sync(tmp_path, fake, FULL_REFRESH, profile_range_pages=2)
        ids = [r["distinct_id"] for r in full.records]
        assert sorted(ids) == sorted(str(p.distinct_id) for p in fake.profiles)
        assert len(full.states) >= 3000 // (PAGE * 2 * 2)  # ranges of about 2 pages, at most 4
        for number, (_, requests) in enumerate(hourly_syncs(tmp_path, fake, 3, profile_sweep_requests=4), 1):
            assert requests <= 1 + 4, (number, requests)


# -- the syncs a quiet update waits ------------------------------------------------------------------------------


def test_given_a_quiet_update_of_a_profile_seen_after_the_sweep_began_then_it_arrives_within_twice_the_bound(
    tmp_path: Path,
) -> None:
    """The sweep under way ends where the watermark was when it began. A profile seen later, then changed with
    `$ignore_time` once the changes have passed it, waits for the next sweep: within twice the bound."""
    sweep = 8
    with make_fake([], profiles=generate_profiles(2500, seed=8, now_ms=NOW), now_ms=NOW, engage_page_size=PAGE) as fake:
        state = sync(tmp_path, fake, INCREMENTAL, profile_sweep_requests=sweep).states[-1]
        target = str(fake.profiles[100].distinct_id)
        bound = 2 * sweep_bound(2500, sweep)
        for hour in range(1, bound + 4):
            fake.now_ms = NOW + hour * HOUR_MS
            if hour == 2:  # seen at NOW + 1.5 h, after the sweep that began in sync 1 (until NOW - 1 h)
                fake.now_ms = NOW + 3 * HOUR_MS // 2
                fake.update_profile(target, {"plan": "moved"})
                fake.now_ms = NOW + hour * HOUR_MS
            if hour == 4:  # the changes walks no longer reach NOW + 1.5 h
                fake.update_profile(target, {"plan": "quiet"}, ignore_time=True)
            run = sync(tmp_path, fake, INCREMENTAL, state, profile_sweep_requests=sweep)
            state = run.states[-1]
            if any(r["properties"].get("plan") == "quiet" for r in run.records if r["distinct_id"] == target):
                assert hour >= 4 and hour - 4 + 1 <= bound, f"arrived after {hour - 4 + 1} syncs"
                return
        raise AssertionError("the quiet update never arrived")


def test_given_a_quiet_update_of_a_profile_seen_in_the_hour_before_the_sweep_began_then_it_arrives_within_the_bound(
    tmp_path: Path,
) -> None:
    """The sweep reads every profile last seen before it began, so such a profile's quiet change waits at most P
    syncs (it waited 10 here, P being 6, when the sweep ended at the watermark, an hour before it began)."""
    sweep = 8
    with make_fake([], profiles=generate_profiles(2500, seed=8, now_ms=NOW), now_ms=NOW, engage_page_size=PAGE) as fake:
        state = sync(tmp_path, fake, INCREMENTAL, profile_sweep_requests=sweep).states[-1]
        target = fake.profiles[100].distinct_id
        fake.now_ms = NOW + HOUR_MS // 2
        fake.update_profile(target, {"plan": "seen"})  # last seen at NOW + 30 min
        for hour in range(1, 3):  # NOW + 1 h: the sweep begins; NOW + 2 h: the changes read it
            fake.now_ms = NOW + hour * HOUR_MS
            state = sync(tmp_path, fake, INCREMENTAL, state, profile_sweep_requests=sweep).states[-1]
        fake.now_ms = NOW + 5 * HOUR_MS // 2
        fake.update_profile(target, {"plan": "quiet"}, ignore_time=True)
        bound = sweep_bound(2500, sweep)
        for number in range(1, bound + 1):
            fake.now_ms = NOW + (2 + number) * HOUR_MS
            run = sync(tmp_path, fake, INCREMENTAL, state, profile_sweep_requests=sweep)
            state = run.states[-1]
            if any(r["properties"].get("plan") == "quiet" for r in run.records if r["distinct_id"] == str(target)):
                return
        raise AssertionError(f"the quiet change did not arrive within P = {bound} syncs")


# -- states that are not ours ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["profiles", "export"])
def test_given_the_no_state_marker_beside_other_keys_when_read_then_a_config_error(
    tmp_path: Path, stream: str
) -> None:
    """The marker a full refresh leaves means "no state" alone; beside other keys the state is not ours."""
    state = {"__ab_no_cursor_state_message": True, "version": 99, "bogus": 1}
    with make_fake([], profiles=generate_profiles(30, seed=5, now_ms=NOW), now_ms=NOW) as fake:
        run = run_in_process(
            tmp_path, "read", config_for(fake, start_date="2024-05-30"), state=state_input(state, stream),
            catalog_value=catalog(INCREMENTAL, stream),
        )
        assert run.returncode != 0 and run.errors[0]["failure_type"] == "config_error", run.logs()[-2000:]
        assert fake.engage_requests == []


# -- hostile Engage answers --------------------------------------------------------------------------------------


class _Engage(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: 40 ms each request otherwise
    respond: Callable[[Any, int], None] = staticmethod(lambda handler, count: None)
    count = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).count += 1
        try:
            self.respond(self, type(self).count)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def engage() -> Iterator[Callable[[Callable[[Any, int], None]], Any]]:
    """Starts a server on 127.0.0.1 whose every Engage answer is `respond(handler, request number)`."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(respond: Callable[[Any, int], None]) -> Any:
        handler = type("Handler", (_Engage,), {"respond": staticmethod(respond), "count": 0})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()

        class Base:
            base_url = f"http://127.0.0.1:{server.server_address[1]}"
            requests = handler

        return Base

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def answer(handler: Any, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def engage_page(ids: list[str], total: int | None, page_size: int = 2) -> bytes:
    results = [{"$distinct_id": i, "$properties": {"$last_seen": "2024-05-01T10:00:00"}} for i in ids]
    page = {"page": 0, "page_size": page_size, "session_id": "s", "status": "ok", "total": total, "results": results}
    return json.dumps({k: v for k, v in page.items() if v is not None}).encode()


@pytest.mark.parametrize(
    ("pages", "words"),
    [
        (lambda n: engage_page(["a", "b"], 2), "sent already"),  # the same full page for ever
        (lambda n: engage_page([f"id{2 * n}", f"id{2 * n + 1}"], 2), "page 0 counted 2 profiles"),  # new ids for ever
        (lambda n: engage_page([f"id{2 * n}", f"id{2 * n + 1}"], None), "gave no total"),  # ...and no total
    ],
)
def test_given_paging_that_never_ends_when_read_then_it_stops_with_a_clear_error(
    tmp_path: Path, engage: Any, pages: Callable[[int], bytes], words: str
) -> None:
    """A full page asks for the next: the reader stops when a full page brings nothing new, or goes past what
    page 0's total makes."""
    server = engage(lambda handler, n: answer(handler, 200, pages(n)))
    run = sync(tmp_path, server, FULL_REFRESH, max_retry_seconds=3)
    assert run.returncode != 0 and words in run.errors[-1]["message"], run.errors
    assert "Traceback" not in run.errors[-1]["message"] and server.requests.count <= 500


def test_given_a_page_size_that_shrinks_within_a_session_when_read_then_paging_stops_at_page_0s_count(
    tmp_path: Path, engage: Any
) -> None:
    """Page 0 counts 200 profiles in pages of 100; later pages say pages of 1, each full and new. The paging cap
    is page 0's: 200 // 100 + 2 pages (it took each page's own size: 204 requests)."""

    def pages(handler: Any, n: int) -> None:
        first = n == 1  # requests count from 1
        ids = [f"id{i}" for i in range(100)] if first else [f"more{n}"]
        answer(handler, 200, engage_page(ids, 200 if first else None, page_size=100 if first else 1))

    server = engage(pages)
    run = sync(tmp_path, server, FULL_REFRESH, max_retry_seconds=3)
    assert run.returncode != 0 and "page 0 counted 200 profiles" in run.errors[-1]["message"], run.errors
    assert server.requests.count <= 200 // 100 + 3, server.requests.count


def test_given_a_400_naming_a_session_at_page_0_when_read_then_a_clear_error(tmp_path: Path, engage: Any) -> None:
    """Page 0 opens a session, so Mixpanel cannot have lost it: an error, not a restart and not a traceback."""
    server = engage(lambda handler, n: answer(handler, 400, b'{"error": "invalid session token", "status": "error"}'))
    run = sync(tmp_path, server, FULL_REFRESH, max_retry_seconds=3)
    assert run.returncode != 0 and "Something went wrong" not in run.errors[-1]["message"], run.errors
    assert server.requests.count == 1


def nested_page(megabytes: float, depth: int = 150) -> bytes:
    """One profile whose property holds lists nested `depth` deep: a value a byte, a comma per `depth`."""
    element = b"[" * depth + b"]" * depth
    count = int(megabytes * (1 << 20)) // (len(element) + 1)
    head = b'{"page":0,"page_size":1000,"session_id":"s","status":"ok","total":1,"results":[{"$distinct_id":"a",'
    return head + b'"$properties":{"$last_seen":"2024-05-01T10:00:00","x":[' + b",".join([element] * count) + b"]}}]}"


def test_given_a_page_of_millions_of_nested_values_when_read_then_refused_before_parsing(
    tmp_path: Path, engage: Any
) -> None:
    """Values are counted by what opens them (a comma, a list, an object): 1.2 million of them in 2.3 MB with 8,000
    commas were parsed (about 55 bytes each) until lists were counted too."""
    body = nested_page(2.3)
    assert body.count(b"[") > 1_200_000 and body.count(b",") < 10_000
    server = engage(lambda handler, n: answer(handler, 200, body))
    run = sync(tmp_path, server, FULL_REFRESH, max_retry_seconds=3)
    assert run.returncode != 0 and "1,000,000 values" in run.errors[-1]["message"], run.errors
    assert run.records == [] and server.requests.count == 1


def read_by_the_cli(tmp_path: Path, server: Any) -> tuple[Run, float]:
    """A full refresh of profiles through the real CLI against `server`: the run, and its peak RSS in MB."""
    config = config_for(server, max_retry_seconds=3)
    args = [*command(), "read", "--config", str(write_json(tmp_path / "config.json", config))]
    args += ["--catalog", str(write_json(tmp_path / "catalog.json", catalog(FULL_REFRESH, "profiles")))]
    with open(tmp_path / "out", "wb") as out:
        process = subprocess.Popen(args, stdout=out, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, high_water_mb(process.pid))
            time.sleep(0.02)
    stdout = (tmp_path / "out").read_text()
    assert_no_secrets(stdout)
    return Run(process.returncode, stdout, "", parse_messages(stdout)), peak


def test_given_a_gzip_bomb_page_when_read_by_the_cli_then_memory_stays_bounded(tmp_path: Path, engage: Any) -> None:
    """1 GB of spaces, gzipped to about 1 MB: read up to engage.MAX_PAGE_BYTES, then a clear error, within the
    bound of a hostile body (test_hostile_server.py)."""

    def bomb(handler: Any, number: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)
        for _ in range(1024):
            out = packer.compress(b" " * (1 << 20))
            if out:
                handler.wfile.write(b"%X\r\n%b\r\n" % (len(out), out))
        out = packer.flush()
        handler.wfile.write(b"%X\r\n%b\r\n0\r\n\r\n" % (len(out), out))

    run, peak = read_by_the_cli(tmp_path, engage(bomb))
    assert run.returncode != 0 and "larger than" in run.errors[-1]["message"], run.errors
    assert peak <= PEAK_RSS_BOUND_MB, f"peak RSS {peak:.0f} MB"


def test_given_pages_just_within_the_caps_when_read_by_the_cli_then_memory_stays_within_the_documented_bound(
    tmp_path: Path, engage: Any
) -> None:
    """The most a page may hold: 1,000 profiles of 880 properties (31 MB, 882,000 values). Parsed, it weighs
    ten times its JSON; docs/mixpanel-export.md states the bound (415 MB measured)."""
    properties = {f"p{k}": "abcdefghijklmnopqrstuvwxy" for k in range(880)}
    results = [{"$distinct_id": f"id{i}", "$properties": {"$last_seen": "2024-05-01T10:00:00", **properties}}
               for i in range(1000)]
    full = json.dumps({"page": 0, "page_size": 1000, "session_id": "s", "status": "ok", "total": 1001,
                       "results": results}).encode()
    assert 30 << 20 < len(full) < 32 << 20
    pages = {1: engage_page([], 0, page_size=1000), 2: full}  # the profiles without $last_seen: none
    last = engage_page(["last"], None, page_size=1000)
    run, peak = read_by_the_cli(tmp_path, engage(lambda handler, n: answer(handler, 200, pages.get(n, last))))
    assert run.returncode == 0 and len(run.records) == 1001, run.errors
    assert peak <= PROFILE_PAGE_PEAK_RSS_MB, f"peak RSS {peak:.0f} MB"
