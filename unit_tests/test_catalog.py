"""The configured catalog: an entry per stream the source defines, an empty catalog, or a config error
naming the problem; `export` as one definition among possibly several."""

import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer, FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_mixpanel_export.api import ENGAGE_ENDPOINT, EXPORT_ENDPOINT
from source_mixpanel_export.catalog import EXPORT, PROFILES, STREAMS, StreamDef, configured_export, configured_streams
from source_mixpanel_export.records import CURSOR_FIELD, PRIMARY_KEY, SCHEMA

# A second stream, defined here only: the catalog's logic must not depend on which streams exist.
PEOPLE = StreamDef("people", {"type": "object"}, [["distinct_id"]], [], ENGAGE_ENDPOINT)
TWO = (EXPORT, PEOPLE)


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


def streams_error_of(value, offered=TWO) -> str:
    with pytest.raises(AirbyteTracedException) as info:
        configured_streams(value, offered)
    assert info.value.failure_type == FailureType.config_error
    return info.value.message


def test_given_the_source_when_its_streams_are_listed_then_each_carries_its_records_shape_and_endpoint():
    """`export` and `profiles` are definitions: the name, the records' schema, keys and cursor, the API."""
    assert STREAMS == (EXPORT, PROFILES)
    assert (EXPORT.name, EXPORT.schema, EXPORT.primary_key, EXPORT.cursor_field, EXPORT.api) == (
        "export", SCHEMA, PRIMARY_KEY, CURSOR_FIELD, EXPORT_ENDPOINT
    )
    assert (PROFILES.name, PROFILES.primary_key, PROFILES.cursor_field, PROFILES.api) == (
        "profiles", [["distinct_id"]], ["last_seen"], ENGAGE_ENDPOINT
    )


def test_given_two_streams_offered_when_both_configured_then_each_entry_with_its_definition_in_catalog_order():
    """The source dispatches on the definitions it gets back, in the catalog's order, modes kept."""
    pairs = configured_streams(catalog(entry("people"), entry("export", "incremental")), TWO)
    assert [(d, c.stream.name, c.sync_mode.value) for d, c in pairs] == [
        (PEOPLE, "people", "full_refresh"), (EXPORT, "export", "incremental")
    ]


def test_given_two_streams_offered_when_one_configured_then_only_that_one():
    """A stream left out of the catalog is not read."""
    assert [d for d, _ in configured_streams(catalog(entry("people")), TWO)] == [PEOPLE]
    assert configured_streams(catalog(), TWO) == []


def test_given_two_streams_offered_when_an_unknown_one_is_asked_for_then_the_error_names_it_and_the_offer():
    """Another name is refused, naming what the source offers."""
    message = streams_error_of(catalog(entry(), entry("cohorts")))
    assert "'cohorts'" in message and "'export' and 'people'" in message


def test_given_two_streams_offered_when_one_is_listed_twice_then_refused_naming_it():
    """A second stream listed twice is refused as `export` is: every record would come twice."""
    message = streams_error_of(catalog(entry(), entry("people"), entry("people", "incremental")))
    assert "'people' 2 times" in message and "both full_refresh and incremental" in message


def test_given_export_only_offered_when_unknown_stream_then_the_error_says_it_is_the_only_one():
    """With one stream, the message says it is the only one."""
    assert "offers only 'export'" in streams_error_of(catalog(entry("cohorts")), (EXPORT,))
