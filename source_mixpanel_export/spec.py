"""The spec's form (the JSON schema `spec` shows), made from the declarations in config.py, so it cannot
drift from the parser."""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any

from airbyte_cdk.models import ConnectorSpecification

from .config import Config, declared

# The JSON type of a setting, from its field's annotation (or the `type` its schema names).
_JSON_TYPES = {
    "int": "integer", "float": "number", "bool": "boolean", "str": "string", "str | None": "string",
    "tuple[str, ...]": "array",
}


def _properties(cls: type, first_order: int = 0) -> dict[str, Any]:
    """The JSON schema of each key `cls` declares, numbered in the order of the form."""
    properties = {}
    for order, (key, f, s) in enumerate(declared(cls), start=first_order):
        schema: dict[str, Any] = {"title": s.title, "type": s.schema.get("type") or _JSON_TYPES[str(f.type)]}
        if s.bounds is not None:
            schema["minimum"], schema["maximum"] = s.bounds
        if s.default is not MISSING and s.shown is None:
            schema["default"] = s.default
        schema["description"] = s.description + (f" Default: {s.shown}." if s.shown else "")
        schema.update(order=order, **s.schema)
        if s.options:
            schema["oneOf"] = [_option(title, option) for title, option in s.options.items()]
        properties[key] = schema
    return properties


def _option(title: str, cls: type) -> dict[str, Any]:
    """One shape of an object setting (one way to authenticate), picked by its `option_title`."""
    option_title = {"type": "string", "const": title, "order": 0}
    properties = {"option_title": option_title, **_properties(cls, first_order=1)}
    return {"title": title, "type": "object", "required": _required(cls), "properties": properties}


def _required(cls: type) -> list[str]:
    """The keys with neither a default nor a default in words."""
    return [key for key, _, s in declared(cls) if s.default is MISSING and s.shown is None]


CONNECTION_SPECIFICATION: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Mixpanel Raw Event Export",
    "type": "object",
    "required": _required(Config),
    "additionalProperties": True,
    "properties": _properties(Config),
}


def connector_specification() -> ConnectorSpecification:
    """The SPEC message body."""
    return ConnectorSpecification(
        documentationUrl="https://github.com/source-mixpanel-export/source-mixpanel-export/blob/main/docs/mixpanel-export.md",
        connectionSpecification=CONNECTION_SPECIFICATION,
        supportsIncremental=True,
    )

