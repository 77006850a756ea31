"""A fake Mixpanel Raw Event Export API and Engage API, so the connector can be tested end to end offline."""

from .data import FakeEvent, generate_events
from .engage import ENGAGE_PATH
from .profiles import FakeProfile, generate_profiles
from .server import FakeMixpanel, Fault, RequestRecord
from .where import WhereError, compile_where

__all__ = [
    "ENGAGE_PATH",
    "FakeEvent",
    "FakeMixpanel",
    "FakeProfile",
    "Fault",
    "RequestRecord",
    "WhereError",
    "compile_where",
    "generate_events",
    "generate_profiles",
]
