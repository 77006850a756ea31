"""Against the real Mixpanel, only on an explicit opt-in: MIXPANEL_REAL_CONFIG names the config file
(e.g. `MIXPANEL_REAL_CONFIG=secrets/config.json`, git-ignored); skipped without it, even when a
secrets/config.json is present, so no run spends the project's queries unasked.

These use 2 of the project's 60 hourly export queries: a check and a one-day read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import jsonschema
import pytest

from integration_tests.harness import ROOT, run_cli
from source_mixpanel_export.records import SCHEMA

OPT_IN = "MIXPANEL_REAL_CONFIG"
pytestmark = pytest.mark.skipif(
    not os.environ.get(OPT_IN), reason=f"{OPT_IN} not set (e.g. {OPT_IN}=secrets/config.json; see secrets.example/)"
)


def config_path() -> Path:
    """The file MIXPANEL_REAL_CONFIG names, relative to the repository when not absolute."""
    return ROOT / os.environ[OPT_IN]


@pytest.fixture
def real_config() -> dict:
    """The user's own config, narrowed to yesterday so the read stays one request."""
    config = json.loads(config_path().read_text())
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    return {**config, "start_date": yesterday, "end_date": yesterday}


def test_given_real_credentials_when_check_then_succeeded(tmp_path, real_config):
    """The configured project answers the export endpoint."""
    run = run_cli(tmp_path, "check", real_config)
    (status,) = run.of("CONNECTION_STATUS")
    assert status["connectionStatus"]["status"] == "SUCCEEDED", status


def test_given_real_credentials_when_read_one_day_then_records_match_the_schema(tmp_path, real_config):
    """A day of real events: exit 0 and every record valid against the declared schema."""
    run = run_cli(tmp_path, "read", real_config, timeout=900)
    assert run.returncode == 0, run.errors
    for record in run.records:
        jsonschema.validate(record, SCHEMA)
    credentials = real_config["credentials"]
    for key in ("secret", "api_secret"):
        if credentials.get(key):
            assert credentials[key] not in run.stdout + run.stderr
