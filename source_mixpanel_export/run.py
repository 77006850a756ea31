"""Console entry point: the CDK's `launch` loop (with entry.Entrypoint, whose config validation is
parse_config) for spec/check/discover; for `read`, the same entrypoint's inputs and our writer.

`read` takes every CDK step around the records (argument parsing, config, catalog and state reading,
secret masking, the uncaught exception handler, STATE counts) and the same items as
`SourceMixpanelExport.read`; only the RECORD messages are written by writer.py instead of one
AirbyteMessage each (see writer.py for why).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Iterable
from typing import IO, Any, cast

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.logger import PRINT_BUFFER
from airbyte_cdk.models import AirbyteMessage, FailureType, Type
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .clock import Stop
from .entry import Entrypoint
from .errors import config_error
from .records import Batch
from .source import SourceMixpanelExport
from .waits import Cancelled
from .writer import MessageWriter


def read(source: SourceMixpanelExport, args: list[str], out: IO[bytes]) -> None:
    """The `read` command, as AirbyteEntrypoint.run does it, with MessageWriter for the output."""
    entrypoint = Entrypoint(source)
    parsed = entrypoint.parse_args(args)
    logger = entrypoint.logger
    if parsed.debug:
        logger.setLevel("DEBUG")
    spec = source.spec(logger)
    writer = MessageWriter(out)
    raw_config = _read_json(source.read_config, parsed.config, "config")
    entrypoint.set_up_secret_filter(raw_config, spec.connectionSpecification)
    config = source.parse(raw_config)  # our own messages name the field; the CDK's schema check does not
    catalog = _read_json(source.read_catalog, parsed.catalog, "catalog")
    state = _read_json(source.read_state, parsed.state, "state") if parsed.state else []
    stop, terminated = Stop(), threading.Event()
    last_state: list[AirbyteMessage] = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.set()
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        for item in source.read_items(logger, config, catalog, state, stop):
            if type(item) is Batch:
                writer.records(item)
            else:
                writer.message(item)  # type: ignore[arg-type]
                if item.type == Type.STATE:  # type: ignore[union-attr]
                    last_state[:] = [item]  # type: ignore[list-item]
    except Cancelled:
        if not terminated.is_set():
            raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        writer.flush()
    if terminated.is_set():
        logger.warning(_stopped(last_state[0] if last_state else None))
        writer.flush()
        sys.exit(128 + signal.SIGTERM)


def _stopped(state: AirbyteMessage | None) -> str:
    """The last line of a sync stopped by SIGTERM (the platform's cancel): what the next sync starts from."""
    head = "Stopped on SIGTERM; the downloads under way were abandoned and their files removed. "
    if state is None or state.state is None or state.state.stream is None:
        return head + "This sync wrote no checkpoint: the next one starts from the state this one was given."
    blob = state.state.stream.stream_state
    data = dict(blob.__dict__) if blob is not None else {}
    progress = data.get("in_progress")
    through = progress.get("through") if isinstance(progress, dict) else data.get("synced_through")
    if through is None:
        return head + "The last checkpoint is a full refresh's: the next sync reads everything again."
    return head + f"The last checkpoint covers event dates through {through}; the next sync resumes from it."


def _read_json(reader: Any, path: str, what: str) -> Any:
    """Read an input file with the CDK's reader; an unreadable or invalid file is a config error."""
    try:
        return reader(path)
    except (OSError, ValueError, TypeError) as exc:
        raise config_error(f"Could not read the {what} file {path!r}: {_short(exc)}") from None
    except Exception as exc:  # e.g. a catalog that does not fit the protocol's model
        raise config_error(f"The {what} file {path!r} is not a valid Airbyte {what}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(line.strip(" -") for line in str(exc).splitlines() if line.strip())
    return text[:300] or type(exc).__name__


def run(argv: Iterable[str] | None = None) -> None:
    """`source-mixpanel-export <spec|check|discover|read> ...`"""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _run(args)
    except AirbyteTracedException as exc:
        if exc.failure_type != FailureType.config_error:
            raise  # the CDK's handler: a FATAL line with the traceback, and the TRACE ERROR
        _config_failure(exc)
        sys.exit(1)


def _config_failure(exc: AirbyteTracedException) -> None:
    """A config error as the CDK's handler reports any error (a FATAL line, a TRACE ERROR), without the
    traceback: it names the field and says what to do, and the code that found it is no help to a user."""
    logging.getLogger("airbyte").fatal(exc.message)
    message = exc.as_airbyte_message()
    if message.trace is not None and message.trace.error is not None:
        message.trace.error.stack_trace = None
    print(filter_secrets(AirbyteEntrypoint.airbyte_message_to_string(message)), flush=True)


def _run(args: list[str]) -> None:
    source = SourceMixpanelExport()
    if args[:1] != ["read"]:
        entrypoint = Entrypoint(source)  # launch's loop, with parse_config's messages for check/discover
        with PRINT_BUFFER:
            for message in entrypoint.run(entrypoint.parse_args(args)):
                print(f"{message}\n", end="")
        return
    with PRINT_BUFFER:
        read(source, args, cast(IO[bytes], sys.__stdout__.buffer))  # type: ignore[union-attr]  # PRINT_BUFFER is sys.stdout


if __name__ == "__main__":
    run()
