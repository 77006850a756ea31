"""The connector's error kinds, so every failure reaches the user as a TRACE ERROR of the right type."""

from __future__ import annotations

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException


def _traced(message: str, internal: str | None, kind: FailureType) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, internal_message=internal or message, failure_type=kind)


def config_error(message: str, internal: str | None = None) -> AirbyteTracedException:
    """A problem the user fixes in the config, catalog or state: retrying the same sync would not help."""
    return _traced(message, internal, FailureType.config_error)


def transient_error(message: str, internal: str | None = None) -> AirbyteTracedException:
    """A problem that may go away by itself (rate limits, outages): the platform may retry the sync."""
    return _traced(message, internal, FailureType.transient_error)


def system_error(message: str, internal: str | None = None) -> AirbyteTracedException:
    """A problem neither the user nor a retry is likely to fix (unexpected answers from Mixpanel)."""
    return _traced(message, internal, FailureType.system_error)
