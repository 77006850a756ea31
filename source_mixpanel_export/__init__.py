"""Airbyte source for Mixpanel's Raw Event Export API.

The source class is imported on first use, not here: encoding workers run modules of this package and
should not pay for the CDK (~0.7 s, ~50 MB) they never use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .source import SourceMixpanelExport

__all__ = ["SourceMixpanelExport"]


def __getattr__(name: str) -> Any:
    if name == "SourceMixpanelExport":
        from .source import SourceMixpanelExport

        return SourceMixpanelExport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
