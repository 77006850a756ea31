"""Airbyte source for Mixpanel's Raw Event Export API."""

import gc as _gc

# Importing the CDK creates ~100k objects and no garbage: collecting meanwhile only costs time (~0.06 s).
_gc_was_enabled = _gc.isenabled()
_gc.disable()
try:
    from .source import SourceMixpanelExport
finally:
    if _gc_was_enabled:
        _gc.enable()

__all__ = ["SourceMixpanelExport"]
