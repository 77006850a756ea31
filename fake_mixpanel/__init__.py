"""A fake Mixpanel Raw Event Export API, so the connector can be tested end to end without the real service."""

from .data import FakeEvent, generate_events
from .server import FakeMixpanel, Fault, RequestRecord
from .where import WhereError, compile_where

__all__ = ["FakeEvent", "FakeMixpanel", "Fault", "RequestRecord", "WhereError", "compile_where", "generate_events"]
