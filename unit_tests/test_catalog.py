"""The configured catalog: one `export` entry, an empty catalog, or a config error naming the problem."""

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer, FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export.catalog import configured_export


def entry(name="export", mode="full_refresh"):
    return {
        "stream": {"name": name, "json_schema": {}, "supported_sync_modes": ["full_refresh", "incremental"]},
        "sync_mode": mode,
        "destination_sync_mode": "append",
    }


def catalog(*entries):
    return ConfiguredAirbyteCatalogSerializer.load({"streams": list(entries)})


def error_of(value) -> str:
    with pytest.raises(AirbyteTracedException) as info:
        configured_export(value)
    assert info.value.failure_type == FailureType.config_error
    return info.value.message


@pytest.mark.parametrize("mode", ["full_refresh", "incremental"])
def test_given_export_once_when_configured_then_that_entry(mode):
    """The one entry comes back as it is, its sync mode included."""
    configured = configured_export(catalog(entry(mode=mode)))
    assert configured is not None and configured.stream.name == "export" and configured.sync_mode.value == mode


def test_given_empty_catalog_when_configured_then_nothing_to_read():
    """Nothing selected is valid: None, and the read reads nothing."""
    assert configured_export(catalog()) is None


def test_given_unknown_stream_when_configured_then_config_error_names_it():
    """Another stream name, alone or beside export."""
    assert "'cohorts'" in error_of(catalog(entry("cohorts")))
    assert "'cohorts'" in error_of(catalog(entry(), entry("cohorts")))


def test_given_export_twice_when_configured_then_config_error():
    """Twice in one mode would emit every record twice."""
    assert "2 times" in error_of(catalog(entry(), entry()))


def test_given_export_in_both_modes_when_configured_then_config_error_names_both():
    """Full refresh and incremental at once: refused, naming both modes."""
    assert "both full_refresh and incremental" in error_of(catalog(entry(), entry(mode="incremental")))
