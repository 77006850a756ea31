"""metadata.yaml is valid for Airbyte's registry and agrees with the Dockerfile, setup.py and the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from airbyte_cdk.models.connector_metadata import MetadataFile

from integration_tests.test_packaging import instruction_values, setup_keyword
from source_mixpanel_export.budget import HOUR_SECONDS
from source_mixpanel_export.config import REGION_HOSTS
from source_mixpanel_export.retry import backoff_seconds
from source_mixpanel_export.spec import connector_specification

ROOT = Path(__file__).resolve().parent.parent
METADATA = ROOT / "metadata.yaml"


def metadata() -> dict[str, Any]:
    """The `data` section of metadata.yaml."""
    return yaml.safe_load(METADATA.read_text())["data"]


def test_metadata_validates_against_airbytes_own_model():
    """Airbyte's published metadata model accepts the file (unknown keys would be rejected)."""
    models = pytest.importorskip(
        "airbyte_connector_models.metadata.v0.connector_metadata_definition_v0",
        reason="airbyte-connector-models is missing: install the package with its `tests` extra",
    )
    parsed = models.ConnectorMetadataDefinitionV0.model_validate(yaml.safe_load(METADATA.read_text()))
    data = parsed.data
    assert data.connector_type.value == "source" and data.connector_subtype.value == "api"
    assert data.release_stage.value == "alpha" and data.support_level.value == "community"
    assert data.definition_id.version == 4
    assert set(data.tags) >= {"language:python", "cdk:python"}


def test_metadata_is_readable_by_the_cdks_image_builder():
    """The CDK's own metadata model (used by `airbyte-cdk image build`) reads it too."""
    parsed = MetadataFile.from_file(METADATA)
    assert parsed.data.dockerRepository == "airbyte/source-mixpanel-export"
    assert parsed.data.connectorBuildOptions.baseImage == metadata()["connectorBuildOptions"]["baseImage"]


def test_metadata_base_image_is_the_dockerfiles_from_digest_and_all():
    """connectorBuildOptions.baseImage names exactly the image (and digest) the Dockerfile starts from."""
    (from_image,) = instruction_values("FROM")
    assert metadata()["connectorBuildOptions"]["baseImage"] == from_image
    assert "@sha256:" in from_image


def test_metadata_version_and_names_match_the_package():
    """dockerImageTag is setup.py's version; repository and issue label follow the package name."""
    data = metadata()
    assert data["dockerImageTag"] == setup_keyword("version")
    assert data["dockerRepository"] == "airbyte/" + setup_keyword("name")
    assert data["githubIssueLabel"] == setup_keyword("name")
    assert data["license"] == setup_keyword("license")


def test_metadata_allowed_hosts_are_exactly_the_regions_the_connector_calls():
    """allowedHosts lists the host of every region in config.REGION_HOSTS and nothing else."""
    assert sorted(metadata()["allowedHosts"]["hosts"]) == sorted(urlsplit(u).hostname for u in REGION_HOSTS.values())


def test_metadata_documentation_url_is_the_specs_and_points_at_the_docs_page():
    """The registry and the SPEC message link the same page, the one in docs/."""
    url = metadata()["documentationUrl"]
    assert url == connector_specification().documentationUrl
    assert (ROOT / "docs" / Path(urlsplit(url).path).name).is_file()


def test_metadata_max_seconds_between_messages_outlasts_the_longest_silent_wait():
    """The platform must not kill a sync waiting out the hourly budget or an hour-long Retry-After."""
    longest_wait = max(HOUR_SECONDS, backoff_seconds(1, retry_after=10**9, base=1.0))
    assert longest_wait == 3600
    assert metadata()["maxSecondsBetweenMessages"] >= 2 * longest_wait
