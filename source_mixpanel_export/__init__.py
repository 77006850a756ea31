"""Airbyte source for Mixpanel's Raw Event Export API."""

from .source import SourceMixpanelExport

__all__ = ["SourceMixpanelExport"]
