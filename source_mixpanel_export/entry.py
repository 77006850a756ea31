"""The CDK's entrypoint, with this connector's config validation for `check` and `discover` too.

airbyte-cdk 7's `AirbyteEntrypoint.check` always validates the config against the spec's JSON schema
before the source sees it, whatever `check_config_against_spec` says, and answers with jsonschema's
text ("'MARS' is not one of [...]", "'Project Secret' was expected" for a project_id typo). `read`
validates with `parse_config`, which names the field and accepts what older configs hold (a
project_id as a string, a lowercase region). So here both commands validate with `parse_config`,
and `check` and `read` give the same verdict in the same words. A config file that is missing, not
JSON or not an object is a FAILED status for `check` and a config error for `discover`, not a crash.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from typing import Any

from airbyte_cdk.entrypoint import AirbyteEntrypoint
from airbyte_cdk.models import AirbyteConnectionStatus, AirbyteMessage, ConnectorSpecification, Status, Type
from airbyte_cdk.utils.airbyte_secrets_utils import filter_secrets

from .errors import config_error
from .source import parsed_and_masked


class Entrypoint(AirbyteEntrypoint):
    """AirbyteEntrypoint whose config validation is parse_config, for every command."""

    def run(self, parsed_args: argparse.Namespace) -> Iterable[str]:
        """The CDK's run, after making sure `check` and `discover` have a config file they can read."""
        if parsed_args.command in ("check", "discover"):
            problem = _config_file_problem(parsed_args.config)
            if problem is not None:
                if parsed_args.command == "discover":
                    raise config_error(problem)
                status = AirbyteConnectionStatus(status=Status.FAILED, message=filter_secrets(problem))
                yield self.airbyte_message_to_string(
                    AirbyteMessage(type=Type.CONNECTION_STATUS, connectionStatus=status)
                )
                return
        yield from super().run(parsed_args)

    def validate_connection(  # type: ignore[override]
        self, source_spec: ConnectorSpecification, config: Mapping[str, Any]
    ) -> None:
        """parse_config instead of the spec's JSON schema: the same rules (the schema is built from the
        same tables) but messages that name the field, and the derived secret forms registered for masking."""
        parsed_and_masked(config)

    def discover(self, source_spec: ConnectorSpecification, config: Mapping[str, Any]) -> Iterable[AirbyteMessage]:
        """The CDK's discover, always after validating the config (the CDK only does when asked to)."""
        self.set_up_secret_filter(config, source_spec.connectionSpecification)
        self.validate_connection(source_spec, config)
        yield from super().discover(source_spec, config)


def _config_file_problem(path: str) -> str | None:
    """What is wrong with the config file (missing, unreadable, not JSON, not an object), or None.

    Read the way the CDK's `read_config` reads it, which raises a bare error the CDK reports as a crash.
    """
    try:
        with open(path, encoding="utf-8") as file:
            value = json.loads(file.read())
    except OSError as exc:
        return f"Could not read the config file {path!r}: {exc.strerror or type(exc).__name__}."
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or a number JSON cannot hold
        return f"The config file {path!r} is not valid JSON ({_first_line(exc)})."
    if not isinstance(value, Mapping):
        return f"The config file {path!r} holds a JSON {type(value).__name__}, not an object of settings."
    return None


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
