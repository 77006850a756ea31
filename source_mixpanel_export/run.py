"""Console entry point: the CDK's `launch` loop (with entry.Entrypoint) for spec/check/discover, a faster
path for `read`.

`read` keeps every CDK step around the records (argument parsing, config and catalog reading, secret
masking, config validation, the uncaught exception handler, STATE counts) but writes RECORD messages
itself (writer.py), and has worker processes encode them (workers.py). The workers are started before
the CDK is imported, so they start up on another core while this process imports it (~0.7 s).
"""

from __future__ import annotations

import gc
import sys
import tempfile
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from .headstart import HeadStart
from .malloc import keep_heap_small
from .workers import EncoderPool, worker_count

if TYPE_CHECKING:
    from .source import SourceMixpanelExport


def read(
    source: SourceMixpanelExport,
    args: list[str],
    out: IO[bytes],
    encoder: EncoderPool | None = None,
    head_start: HeadStart | None = None,
) -> None:
    """The `read` command, as AirbyteEntrypoint.run does it, with MessageWriter for the output."""
    from airbyte_cdk.entrypoint import AirbyteEntrypoint

    from .bodies import ENCODED
    from .config import parse_config
    from .writer import MessageWriter

    entrypoint = AirbyteEntrypoint(source)
    parsed = entrypoint.parse_args(args)
    logger = entrypoint.logger
    if parsed.debug:
        logger.setLevel("DEBUG")
    spec = source.spec(logger)
    writer = MessageWriter(out)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as temp_dir:
        config = source.configure(_read_json(source.read_config, parsed.config, "config"), temp_dir)
        entrypoint.set_up_secret_filter(config, spec.connectionSpecification)
        parse_config(config)  # our own messages name the field; the CDK's schema check below does not
        if source.check_config_against_spec:
            entrypoint.validate_connection(spec, config)
        catalog = _read_json(source.read_catalog, parsed.catalog, "catalog")
        state = _read_json(source.read_state, parsed.state, "state") if parsed.state else []
        record, message = writer.record, writer.message
        try:
            for item in source.read_items(logger, config, catalog, state, encoder, head_start):
                if type(item) is dict:
                    record(item)  # type: ignore[arg-type]
                elif isinstance(item, ENCODED):
                    writer.encoded(item)
                else:
                    message(item)  # type: ignore[arg-type]
        finally:
            writer.flush()


def _read_json(reader: Any, path: str, what: str) -> Any:
    """Read an input file with the CDK's reader; an unreadable or invalid file is a config error."""
    from .errors import config_error

    try:
        return reader(path)
    except (OSError, ValueError, TypeError) as exc:
        raise config_error(f"Could not read the {what} file {path!r}: {_short(exc)}") from None
    except Exception as exc:  # e.g. a catalog that does not fit the protocol's model
        raise config_error(f"The {what} file {path!r} is not a valid Airbyte {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(line.strip(" -") for line in str(exc).splitlines() if line.strip())
    return text[:300] or type(exc).__name__


def _start_encoder() -> EncoderPool | None:
    """Encoding workers for `read`, or None (one core, or processes cannot be started): then the main
    thread encodes, as it does for `read` called through the CDK."""
    processes = worker_count()
    if not processes:
        return None
    try:
        return EncoderPool(processes)
    except OSError as exc:
        print(f"Encoding in this process: no worker processes ({exc}).", file=sys.stderr)
        return None


def run(argv: Iterable[str] | None = None) -> None:
    """`source-mixpanel-export <spec|check|discover|read> ...`"""
    args = list(sys.argv[1:] if argv is None else argv)
    reading = args[:1] == ["read"]
    if reading:
        keep_heap_small()
    encoder = _start_encoder() if reading else None
    head_start = HeadStart.begin(args, encoder) if reading else None
    try:
        # Importing the CDK creates ~100k objects and no garbage: collecting meanwhile only costs time
        # (~0.06 s). What it made lives until exit; frozen, out of the cyclic GC's reach, it costs
        # nothing at interpreter shutdown either (measured 0.15-0.2 s otherwise).
        gc.disable()
        from airbyte_cdk.logger import PRINT_BUFFER

        from .entry import Entrypoint
        from .source import SourceMixpanelExport

        gc.enable()
        gc.freeze()
        source = SourceMixpanelExport()
        if not reading:
            entrypoint = Entrypoint(source)  # the CDK's launch, with parse_config's messages for check/discover
            with PRINT_BUFFER:
                for message in entrypoint.run(entrypoint.parse_args(args)):
                    print(f"{message}\n", end="")
            return
        with PRINT_BUFFER:
            read(source, args, sys.__stdout__.buffer, encoder, head_start)  # type: ignore[union-attr]
    finally:
        if head_start is not None:
            head_start.cancel()
        if encoder is not None:
            encoder.close()


if __name__ == "__main__":
    run()
