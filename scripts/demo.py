"""A demo sync against the bundled fake Mixpanel: spec → check → discover → read → incremental read.

No Mixpanel account needed. Everything it writes goes to .demo/ (config, catalog, outputs, state).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".demo"


def command() -> list[str]:
    """The console script installed beside this interpreter."""
    script = Path(sys.executable).parent / "source-mixpanel-export"
    return [str(script)] if script.exists() else [shutil.which("source-mixpanel-export") or "source-mixpanel-export"]


def start_fake() -> tuple[subprocess.Popen[str], str]:
    """Start `python -m fake_mixpanel` on a free port and return it with its base URL."""
    fake = subprocess.Popen(
        [sys.executable, "-m", "fake_mixpanel", "--port", "0", "--events", "5000", "--days", "14",
         "--late-fraction", "0.05", "--profiles", "3000"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert fake.stdout is not None
    first = fake.stdout.readline().strip()
    print(f"$ python -m fake_mixpanel ...\n  {first}")
    return fake, first.rsplit(" ", 1)[-1]


def cli(verb: str, *args: str, save_as: str | None = None) -> list[dict]:
    """Run the connector like the Airbyte platform does and keep its stdout."""
    shown = " ".join(["source-mixpanel-export", verb, *(a.replace(str(ROOT) + "/", "") for a in args)])
    print(f"\n$ {shown}")
    done = subprocess.run([*command(), verb, *args], capture_output=True, cwd=ROOT)
    text = done.stdout.decode()
    if save_as:
        (OUT / save_as).write_text(text)
    messages = [json.loads(line) for line in text.split("\n") if line.strip()]
    if done.returncode != 0:
        print(text[-3000:], done.stderr.decode()[-3000:])
        raise SystemExit(f"{verb} failed with exit code {done.returncode}")
    return messages


def summarize_read(messages: list[dict]) -> dict[str, dict]:
    """Print what a person wants to see of a read; return the last state of each stream."""
    records = [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "export"]
    profiles = [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == "profiles"]
    states = {m["state"]["stream"]["stream_descriptor"]["name"]: m["state"]["stream"]["stream_state"]
              for m in messages if m["type"] == "STATE"}
    logs = [m["log"]["message"] for m in messages if m["type"] == "LOG"
            and m["log"]["message"].startswith(("Window", "Profiles"))]
    for line in logs[-4:]:
        print(f"  log: {line}")
    print(f"  export: {len(records)} records; events: "
          + ", ".join(f"{k} {v}" for k, v in Counter(r["event"] for r in records).most_common(4)))
    print(f"  profiles: {len(profiles)} records")
    for sample in (records[:1] + profiles[:1]):
        sample = dict(sample)
        sample["properties"] = {k: sample["properties"][k] for k in list(sample["properties"])[:6]}
        print("  a record (properties shortened):\n    "
              + json.dumps(sample, ensure_ascii=False, indent=2).replace("\n", "\n    "))
    for name, state in states.items():
        print(f"  last state of {name}: {json.dumps(state)}")
    return states


def main() -> None:
    """Run the whole demo."""
    OUT.mkdir(exist_ok=True)
    fake, url = start_fake()
    try:
        config = {
            "credentials": {"option_title": "Service Account", "username": "sa-user", "secret": "sa-secret",
                            "project_id": 12345},
            "api_base_url": url,
            "start_date": (datetime.now(UTC).date() - timedelta(days=13)).isoformat(),
            "date_window_size": 7,
        }
        (OUT / "config.json").write_text(json.dumps(config, indent=2))
        spec = cli("spec")[-1]["spec"]["connectionSpecification"]
        print(f"  SPEC with settings: {', '.join(spec['properties'])}")
        status = cli("check", "--config", str(OUT / "config.json"))[-1]["connectionStatus"]
        print(f"  CONNECTION_STATUS: {status}")
        catalog = cli("discover", "--config", str(OUT / "config.json"))[-1]["catalog"]
        for stream in catalog["streams"]:
            print(f"  stream {stream['name']!r}: modes {stream['supported_sync_modes']}, "
                  f"primary key {stream['source_defined_primary_key']}, cursor {stream['default_cursor_field']}")
        configured = {"streams": [{"stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append"}
                                  for stream in catalog["streams"]]}
        (OUT / "catalog.json").write_text(json.dumps(configured, indent=2))
        first = cli("read", "--config", str(OUT / "config.json"), "--catalog", str(OUT / "catalog.json"),
                    save_as="read1.jsonl")
        states = summarize_read(first)
        state_file = OUT / "state.json"
        state_file.write_text(json.dumps([{"type": "STREAM", "stream": {
            "stream_descriptor": {"name": name}, "stream_state": state}} for name, state in states.items()], indent=2))
        advanced = urllib.request.urlopen(f"{url}/_fake/clock?advance_seconds={2 * 86400}", timeout=10)
        now_ms = json.loads(advanced.read())["now_ms"]
        print(f"\n$ # two days pass at the fake Mixpanel (clock {now_ms}): new events and late ones (offline devices)")
        second = cli("read", "--config", str(OUT / "config.json"), "--catalog", str(OUT / "catalog.json"),
                     "--state", str(state_file), save_as="read2.jsonl")
        summarize_read(second)
        before = {m["record"]["data"]["event_id"] for m in first if m["type"] == "RECORD"
                  and m["record"]["stream"] == "export"}
        late = [m["record"]["data"] for m in second if m["type"] == "RECORD" and m["record"]["stream"] == "export"]
        print(f"\nThe second read re-read the recent days late events could belong to, and swept two blocks "
              f"of older days, keeping only events Mixpanel processed since the first read: {len(late)} new or "
              "late events, "
              f"{sum(r['event_id'] in before for r in late)} of them already delivered by the first read. The "
              "profiles read the changes since the first read, then the sweep re-read a part of all profiles "
              "(profile_sweep_requests).\n"
              "Outputs are in .demo/.")
    finally:
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
