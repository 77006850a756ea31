"""The settings as users see them: the spec's form (the JSON schema `spec` shows) and the guide's
configuration table, both made from the declarations in config.py, so neither can drift from the parser."""

from __future__ import annotations

from dataclasses import MISSING
from typing import Any

from airbyte_cdk.models import ConnectorSpecification

from .config import Config, Setting, declared

# The JSON type of a setting, from its field's annotation (or the `type` its schema names).
_JSON_TYPES = {
    "int": "integer", "float": "number", "bool": "boolean", "str": "string", "str | None": "string",
    "tuple[str, ...]": "array", "int | None": "integer",
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


def settings_table() -> str:
    """The configuration table of docs/mixpanel-export.md (unit_tests/test_config.py keeps the two equal)."""
    rows = ["| Field | Title | Default | Range | Meaning |", "| --- | --- | --- | --- | --- |"]
    for key, _, s in declared(Config):
        rows.append(_row(key, s))
        for title, option in s.options.items():
            rows += [_row(f"{key}.{sub}", declaration, f"**{title}**: ") for sub, _, declaration in declared(option)]
    return "\n".join(rows) + "\n"


def _row(key: str, s: Setting, prefix: str = "") -> str:
    default = s.shown or (_text(s.default) if s.default is not MISSING else "required")
    bounds = "–".join(_text(bound) for bound in s.bounds) if s.bounds else ""
    return f"| `{key}` | {s.title} | {default} | {bounds} | {prefix}{s.description} |"


def _text(value: Any) -> str:
    """A default or a bound as the guide writes it: on/off, `US`, 1,000,000."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return f"`{value}`"
    return f"{value:,}" if isinstance(value, int) or not value.is_integer() else f"{int(value):,}"
