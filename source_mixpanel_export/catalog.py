"""The configured catalog: which way to read the one stream, `export`, or a config error.

A catalog is input like the config. Listing `export` twice would emit every record twice (and, in
two modes, end with a state that contradicts the records); naming another stream asks for data this
source does not have. Both are refused before any request. An empty catalog is valid: nothing was
selected, so nothing is read (as the CDK's own sources do), and the sync succeeds with no records.
"""

from __future__ import annotations

from airbyte_cdk.models import ConfiguredAirbyteCatalog, ConfiguredAirbyteStream

from .errors import config_error
from .records import STREAM_NAME


def configured_export(catalog: ConfiguredAirbyteCatalog) -> ConfiguredAirbyteStream | None:
    """The catalog's one entry for `export`, or None for an empty catalog.

    Example: a catalog listing `export` once in incremental mode gives that entry; `export` twice, or
    any other stream name, raises a config error naming the problem.
    """
    streams = list(catalog.streams or ())
    for configured in streams:
        if configured.stream.name != STREAM_NAME:
            raise unknown_stream(configured.stream.name)
    if not streams:
        return None
    if len(streams) > 1:
        modes = sorted({_mode(configured) for configured in streams})
        also = f", as both {' and '.join(modes)}" if len(modes) > 1 else ""
        raise config_error(
            f"The catalog lists stream {STREAM_NAME!r} {len(streams)} times{also}; list it once, in one sync "
            "mode (every record would be emitted once per entry)."
        )
    return streams[0]


def unknown_stream(name: str) -> Exception:
    """A catalog that asks for a stream this source does not have."""
    return config_error(f"The catalog asks for stream {name!r}; this source offers only {STREAM_NAME!r}.")


def _mode(configured: ConfiguredAirbyteStream) -> str:
    mode = configured.sync_mode
    return str(getattr(mode, "value", mode))
