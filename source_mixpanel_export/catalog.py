"""The source's streams as data, and the configured catalog: which of them to read, how, or a config error.

A stream is a `StreamDef`: its name, schema, primary key, cursor field and API endpoint travel together.
`STREAMS` lists the source's, in the order discover shows them; `export` is one entry. The functions
below take the streams offered as an argument and name none.

A catalog is input like the config. Listing a stream twice would emit every record of it twice (and,
in two modes, end with a state that contradicts the records); naming another stream asks for data this
source does not have. Both are refused before any request. An empty catalog is valid: nothing was
selected, so nothing is read (as the CDK's own sources do), and the sync succeeds with no records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airbyte_cdk.models import ConfiguredAirbyteCatalog, ConfiguredAirbyteStream

from . import profiles
from .api import ENGAGE_ENDPOINT, EXPORT_ENDPOINT, Endpoint
from .errors import config_error
from .records import CURSOR_FIELD, PRIMARY_KEY, SCHEMA


@dataclass(frozen=True)
class StreamDef:
    """What the catalog, discover, the records and the state messages need to know of one stream.

    `cursor_field` is empty for a stream read in full only; `api` is the endpoint its records come from.
    """

    name: str
    schema: Mapping[str, Any]
    primary_key: list[list[str]]
    cursor_field: list[str]
    api: Endpoint


# Mixpanel's raw events (records.py builds them): one record per exported event.
EXPORT = StreamDef("export", SCHEMA, PRIMARY_KEY, CURSOR_FIELD, EXPORT_ENDPOINT)
# Mixpanel's people profiles (profiles.py builds them): one record per profile, from the Query API.
PROFILES = StreamDef("profiles", profiles.SCHEMA, profiles.PRIMARY_KEY, profiles.CURSOR_FIELD, ENGAGE_ENDPOINT)
STREAMS: tuple[StreamDef, ...] = (EXPORT, PROFILES)


def configured_streams(
    catalog: ConfiguredAirbyteCatalog, offered: Sequence[StreamDef] = STREAMS
) -> list[tuple[StreamDef, ConfiguredAirbyteStream]]:
    """The catalog's entries, each with its stream's definition, in the catalog's order (empty for an
    empty catalog).

    Example: with `export` and `people` offered, a catalog listing `people` then `export` gives both
    pairs in that order; a stream listed twice, or a name not offered, raises a config error naming it.
    """
    by_name = {definition.name: definition for definition in offered}
    entries = list(catalog.streams or ())
    for configured in entries:
        if configured.stream.name not in by_name:
            raise unknown_stream(configured.stream.name, offered)
    times = Counter(configured.stream.name for configured in entries)
    for name, count in times.items():
        if count > 1:
            modes = sorted({_mode(configured) for configured in entries if configured.stream.name == name})
            also = f", as both {' and '.join(modes)}" if len(modes) > 1 else ""
            raise config_error(
                f"The catalog lists stream {name!r} {count} times{also}; list it once, in one sync "
                "mode (every record would be emitted once per entry)."
            )
    return [(by_name[configured.stream.name], configured) for configured in entries]


def configured_export(catalog: ConfiguredAirbyteCatalog) -> ConfiguredAirbyteStream | None:
    """The catalog's one entry for `export`, or None when it selects none; refused as `configured_streams`.

    Example: a catalog listing `export` once in incremental mode gives that entry; `export` twice, or
    any stream the source does not define, raises a config error naming the problem.
    """
    return next((configured for definition, configured in configured_streams(catalog) if definition is EXPORT), None)


def unknown_stream(name: str, offered: Sequence[StreamDef] = STREAMS) -> Exception:
    """A catalog that asks for a stream this source does not have."""
    names = [repr(definition.name) for definition in offered]
    if len(names) == 1:
        offer = f"only {names[0]}"
    else:
        offer = " and ".join([", ".join(names[:-1]), names[-1]]) if names else "no stream"
    return config_error(f"The catalog asks for stream {name!r}; this source offers {offer}.")


def _mode(configured: ConfiguredAirbyteStream) -> str:
    mode = configured.sync_mode
    return str(getattr(mode, "value", mode))
