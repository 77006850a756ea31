"""The `--state` file in every form a person saves from a sync's output.

The syncs run the console script's `run` in this process (harness.run_in_process), with the same
command line and files; the README recipe's second sync and the empty state file are real CLI runs.

Each form must make the second sync re-read only the recent days (for events processed since the
first sync), exactly as the CDK's own list of state entries does. The README's shell recipe for
saving the state is taken from the README itself and run with bash.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fake_mixpanel import FakeMixpanel
from integration_tests.conftest import FIRST_DAY
from integration_tests.harness import (
    INCREMENTAL,
    ROOT,
    Run,
    config_for,
    reread_from,
    run_cli,
    run_in_process,
    state_input,
)


def state_lines(run: Run) -> list[str]:
    """The STATE lines of a sync's stdout, as printed."""
    return [line for line in run.stdout.split("\n") if line.startswith('{"type":"STATE"')]


FORMS = {
    "the last STATE line as printed": lambda run: state_lines(run)[-1],
    "a list of every STATE message of the sync": lambda run: "[" + ",".join(state_lines(run)) + "]",
    "the state object of the last STATE message": lambda run: json.dumps(json.loads(state_lines(run)[-1])["state"]),
    "the CDK's list of state entries": lambda run: json.dumps(state_input(run.states[-1])),
}


def first_sync(tmp_path: Path, fake: FakeMixpanel) -> tuple[dict[str, Any], Run]:
    """A complete first incremental sync; then an hour passes and late events arrive."""
    config = config_for(fake, start_date=FIRST_DAY.isoformat(), history_sweep_requests=0)
    first = run_in_process(tmp_path, "read", config, mode=INCREMENTAL)
    assert first.returncode == 0 and len(state_lines(first)) == len(first.states) > 1
    fake.now_ms += 3_600_000
    late = [
        type(e)(e.name, e.time_ms, {**e.properties, "$insert_id": f"late-{i}"}, fake.now_ms - 1000)
        for i, e in enumerate(fake.events[-20:])
    ]
    fake.add_events(late)
    fake.reset_requests()
    return config, first


def assert_resumed(second: Run, first: Run, fake: FakeMixpanel) -> None:
    """The second sync read only the recent days, for events processed since the first: the late ones."""
    assert second.returncode == 0, second.stderr[-2000:] + second.stdout[-2000:]
    final = first.states[-1]
    assert reread_from(final) > FIRST_DAY
    assert min(r.params["from_date"] for r in fake.export_requests) == reread_from(final).isoformat()
    assert all("mp_processing_time_ms" in r.params["where"] for r in fake.export_requests)
    assert sorted(r["insert_id"] for r in second.records) == sorted(f"late-{i}" for i in range(20))
    assert second.states[-1]["watermark_ms"] > final["watermark_ms"]


@pytest.mark.parametrize("form", FORMS)
def test_given_state_saved_in_any_form_when_read_then_only_recent_days_are_reread(tmp_path, fake, form):
    """A whole STATE message, a list of them, its `state` object, or the CDK's list: the same second sync."""
    config, first = first_sync(tmp_path, fake)
    state_file = tmp_path / "saved_state.json"
    state_file.write_text(FORMS[form](first))

    second = run_in_process(tmp_path, "read", config, mode=INCREMENTAL, extra=["--state", str(state_file)])

    assert_resumed(second, first, fake)


def readme_state_recipe() -> str:
    """The README's one command that writes state.json from read1.jsonl."""
    readme = (ROOT / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if "read1.jsonl" in line and "> state.json" in line]
    return line.strip()


def test_given_readme_state_recipe_when_run_with_bash_then_the_next_sync_resumes(tmp_path, fake):
    """The README's shell line, run as written on a real sync's output, gives a state file `read` takes."""
    config, first = first_sync(tmp_path, fake)
    (tmp_path / "read1.jsonl").write_text(first.stdout)
    recipe = readme_state_recipe()
    assert re.search(r"\bstate\.json\b", recipe)

    subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=tmp_path, check=True, timeout=30)
    second = run_cli(tmp_path, "read", config, mode=INCREMENTAL,
                     extra=["--state", str(tmp_path / "state.json")])

    assert json.loads((tmp_path / "state.json").read_text())["type"] == "STATE"
    assert_resumed(second, first, fake)


def test_given_empty_state_file_when_read_then_first_sync_from_start_date(tmp_path, fake):
    """An empty list or object is no state: every day from start_date is read whole."""
    state_file = tmp_path / "empty.json"
    state_file.write_text("[]")
    config = config_for(fake, start_date=FIRST_DAY.isoformat(), history_sweep_requests=0)
    run = run_cli(tmp_path, "read", config, mode=INCREMENTAL, extra=["--state", str(state_file)])
    assert run.returncode == 0
    assert min(r.params["from_date"] for r in fake.export_requests) == FIRST_DAY.isoformat()
    assert not any("mp_processing_time_ms" in r.params.get("where", "") for r in fake.export_requests)


def test_given_state_message_of_another_shape_when_read_then_config_error_naming_the_file(tmp_path, fake):
    """A STATE message whose state is not an object is still refused, naming the state file."""
    state_file = tmp_path / "odd.json"
    state_file.write_text(json.dumps({"type": "STATE", "state": "x"}))
    run = run_in_process(tmp_path, "read", config_for(fake), mode=INCREMENTAL, extra=["--state", str(state_file)])
    assert run.returncode != 0 and run.errors[-1]["failure_type"] == "config_error"
    assert "state file" in run.errors[-1]["message"] and fake.export_requests == []

