"""A small parser and evaluator for Mixpanel segmentation expressions, enough for the `where` filters exporters send.

Grammar (precedence low to high: or, and, not, comparison)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | comparison
    comparison := primary (("==" | "!=" | ">" | ">=" | "<" | "<=" | "in") primary)?
    primary    := STRING | NUMBER | "-" NUMBER | "true" | "false" | 'properties' "[" STRING "]"
                | FUNC "(" expr ")" | "(" expr ")"
    FUNC       := "number" | "string" | "defined" | "datetime" | "boolean"

Semantics: a missing property is UNDEFINED (null counts as not defined); every comparison involving UNDEFINED
is false, `!=` included. Values of different types are never equal and never ordered. `x in list` tests
membership, `"sub" in string` a substring.

With `string_dates=True` (profiles, whose `$created` and `$last_seen` are strings like "2008-12-12T11:20:47",
naive meaning UTC) a string compared with a datetime is read as a datetime; event filters keep the default.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Self

Lookup = Callable[[str], Any]
Predicate = Callable[[Lookup], bool]
_Node = Callable[[Lookup], Any]


class WhereError(ValueError):
    """Raised for an expression the fake cannot parse, so the server can answer 400 with the reason."""


class _Undefined:
    """Singleton for a missing value; falsy and unequal to everything."""

    _instance: _Undefined | None = None

    def __new__(cls) -> Self:
        """Keep one instance so identity checks work."""
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        """Print readably in test failures."""
        return "UNDEFINED"

    def __bool__(self) -> bool:
        """Make a missing value false in boolean context."""
        return False


UNDEFINED: Any = _Undefined()

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|>=|<=|>|<|\(|\)|\[|\]|-)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<unterminated>["'])
    """,
    re.VERBOSE | re.DOTALL,
)
_COMPARISONS = ("==", "!=", ">", ">=", "<", "<=")
_FUNCTIONS = ("number", "string", "defined", "datetime", "boolean")
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "properties", *_FUNCTIONS}


@dataclass(frozen=True, slots=True)
class _Token:
    """One lexical token with its offset, for error messages."""

    kind: str
    text: str
    pos: int


def _unquote(raw: str, pos: int) -> str:
    """Decode a quoted literal with JSON-style escapes (\\" \\\\ \\n \\t \\uXXXX, and \\' inside '...')."""
    body = raw[1:-1]
    if raw[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    try:
        return json.loads(f'"{body}"', strict=False)
    except json.JSONDecodeError as exc:
        raise WhereError(f"invalid escape in string literal at position {pos}") from exc


def _tokenize(text: str) -> list[_Token]:
    """Split the expression into tokens, rejecting any character the grammar does not know."""
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise WhereError(f"unexpected character {text[pos]!r} at position {pos}")
        kind = match.lastgroup or ""
        if kind == "unterminated":
            raise WhereError(f"unterminated string literal at position {pos}")
        if kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _is_number(value: Any) -> bool:
    """Tell numbers from booleans, which Python counts as ints."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_kind(a: Any, b: Any) -> bool:
    """Decide whether two values may be compared at all."""
    if _is_number(a) and _is_number(b):
        return True
    return type(a) is type(b) and not isinstance(a, _Undefined)


def _equal(a: Any, b: Any) -> bool:
    """Mixpanel-ish equality: undefined never equals anything, nor do values of different types."""
    return _same_kind(a, b) and a == b


def _compare(op: str, a: Any, b: Any) -> bool:
    """Apply one comparison operator with the undefined/type rules of this module."""
    if a is UNDEFINED or b is UNDEFINED or a is None or b is None:
        return False
    if op == "==":
        return _equal(a, b)
    if op == "!=":
        return not _equal(a, b)
    if not _same_kind(a, b) or not isinstance(a, int | float | str | dt.datetime) or isinstance(a, bool):
        return False
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "<":
        return a < b
    return a <= b


def _compare_string_dates(op: str, a: Any, b: Any) -> bool:
    """_compare, but a string beside a datetime is read as one (an unparseable string compares false)."""
    if isinstance(a, dt.datetime) and isinstance(b, str):
        b = _to_datetime(b)
    elif isinstance(b, dt.datetime) and isinstance(a, str):
        a = _to_datetime(a)
    return _compare(op, a, b)


def _contains(needle: Any, haystack: Any) -> bool:
    """Implement `in`: list membership or substring."""
    if needle is UNDEFINED or haystack is UNDEFINED:
        return False
    if isinstance(haystack, list):
        return any(_equal(needle, item) for item in haystack)
    if isinstance(haystack, str) and isinstance(needle, str):
        return needle in haystack
    if isinstance(haystack, dict) and isinstance(needle, str):
        return needle in haystack
    return False


def _truthy(value: Any) -> bool:
    """Turn any value into a condition; undefined and null are false."""
    if value is UNDEFINED or value is None:
        return False
    return bool(value)


def _to_number(value: Any) -> Any:
    """Implement number(): numeric strings parse, anything else unparseable is undefined."""
    if isinstance(value, bool):
        return int(value)
    if _is_number(value):
        return value
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return UNDEFINED
    return UNDEFINED


def _to_string(value: Any) -> Any:
    """Implement string(): render numbers, booleans and datetimes the way a JavaScript-minded user expects."""
    if value is UNDEFINED or value is None:
        return UNDEFINED
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _to_boolean(value: Any) -> Any:
    """Implement boolean(): undefined stays undefined, the rest uses truthiness."""
    if value is UNDEFINED:
        return UNDEFINED
    return _truthy(value)


def _to_datetime(value: Any) -> Any:
    """Implement datetime(): epoch seconds or an ISO date/time (naive means UTC)."""
    if _is_number(value):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return UNDEFINED
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return UNDEFINED
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.datetime):
        return value
    return UNDEFINED


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "number": _to_number,
    "string": _to_string,
    "defined": lambda v: v is not UNDEFINED and v is not None,
    "datetime": _to_datetime,
    "boolean": _to_boolean,
}


class _Parser:
    """Recursive-descent parser that compiles straight to closures, so evaluation per event is cheap."""

    def __init__(self, text: str, string_dates: bool = False) -> None:
        """Tokenize up front so errors point at positions."""
        self.tokens = _tokenize(text)
        self.index = 0
        self.compare = _compare_string_dates if string_dates else _compare

    @property
    def token(self) -> _Token:
        """Return the current token."""
        return self.tokens[self.index]

    def _advance(self) -> _Token:
        """Consume and return the current token."""
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _accept(self, text: str) -> bool:
        """Consume the current token if it is the given operator or keyword."""
        if self.token.kind in ("op", "name") and self.token.text == text:
            self.index += 1
            return True
        return False

    def _expect(self, text: str, after: str) -> None:
        """Consume a required token or explain what is missing."""
        if not self._accept(text):
            raise WhereError(f"expected {text!r} after {after} at position {self.token.pos}, found {self._shown()}")

    def _shown(self) -> str:
        """Describe the current token for an error message."""
        return "end of expression" if self.token.kind == "end" else repr(self.token.text)

    def parse(self) -> _Node:
        """Parse a whole expression and require nothing after it."""
        if self.token.kind == "end":
            raise WhereError("empty expression")
        node = self._or()
        if self.token.kind != "end":
            raise WhereError(f"unexpected {self._shown()} at position {self.token.pos}")
        return node

    def _or(self) -> _Node:
        """Parse `a or b or ...`."""
        node = self._and()
        while self._accept("or"):
            node = _either(node, self._and())
        return node

    def _and(self) -> _Node:
        """Parse `a and b and ...`."""
        node = self._not()
        while self._accept("and"):
            node = _both(node, self._not())
        return node

    def _not(self) -> _Node:
        """Parse `not x`, which binds tighter than and/or but looser than comparisons."""
        if self._accept("not"):
            inner = self._not()
            return lambda get: not _truthy(inner(get))
        return self._comparison()

    def _comparison(self) -> _Node:
        """Parse an optional comparison or `in` between two primaries."""
        left = self._primary()
        token = self.token
        if token.kind == "op" and token.text in _COMPARISONS:
            self._advance()
            right = self._primary()
            op, compare = token.text, self.compare
            return lambda get: compare(op, left(get), right(get))
        if self._accept("in"):
            right = self._primary()
            return lambda get: _contains(left(get), right(get))
        return left

    def _primary(self) -> _Node:
        """Parse a literal, property reference, function call or parenthesised expression."""
        token = self._advance()
        if token.kind == "string":
            return _constant(_unquote(token.text, token.pos))
        if token.kind == "number":
            return _constant(_parse_number(token.text))
        if token.kind == "op" and token.text == "-" and self.token.kind == "number":
            return _constant(-_parse_number(self._advance().text))
        if token.kind == "op" and token.text == "(":
            inner = self._or()
            self._expect(")", "parenthesised expression")
            return inner
        if token.kind == "name":
            return self._named(token)
        shown = "end of expression" if token.kind == "end" else repr(token.text)
        raise WhereError(f"expected a value at position {token.pos}, found {shown}")

    def _named(self, token: _Token) -> _Node:
        """Parse true/false, properties[...] and function calls."""
        if token.text in ("true", "false"):
            return _constant(token.text == "true")
        if token.text == "properties":
            self._expect("[", "'properties'")
            name_token = self._advance()
            if name_token.kind != "string":
                raise WhereError(f"expected a quoted property name at position {name_token.pos}")
            name = _unquote(name_token.text, name_token.pos)
            self._expect("]", "property name")
            return lambda get: get(name)
        if token.text in _FUNCTIONS:
            self._expect("(", f"{token.text!r}")
            if self.token.kind == "op" and self.token.text == ")":
                raise WhereError(f"{token.text}() needs an argument at position {self.token.pos}")
            argument = self._or()
            self._expect(")", f"argument of {token.text}()")
            convert = _CONVERTERS[token.text]
            literal = getattr(argument, "constant", UNDEFINED)
            if token.text == "datetime" and literal is not UNDEFINED:
                converted = convert(literal)
                if converted is UNDEFINED:
                    raise WhereError(f"invalid datetime literal {literal!r} at position {token.pos}")
                return _constant(converted)
            return lambda get: convert(argument(get))
        if token.text in _KEYWORDS:
            raise WhereError(f"unexpected keyword {token.text!r} at position {token.pos}")
        raise WhereError(f"unknown name {token.text!r} at position {token.pos}")


def _either(left: _Node, right: _Node) -> _Node:
    """Build `left or right` with short-circuiting."""
    return lambda get: _truthy(left(get)) or _truthy(right(get))


def _both(left: _Node, right: _Node) -> _Node:
    """Build `left and right` with short-circuiting."""
    return lambda get: _truthy(left(get)) and _truthy(right(get))


def _parse_number(text: str) -> int | float:
    """Keep integer literals exact; only literals with '.' or an exponent become floats."""
    if any(c in text for c in ".eE"):
        return float(text)
    return int(text)


def _constant(value: Any) -> _Node:
    """Wrap a literal as a node and remember it for constant folding."""

    def node(get: Lookup) -> Any:
        """Return the literal."""
        return value

    node.constant = value  # type: ignore[attr-defined]
    return node


@lru_cache(maxsize=256)
def compile_where(text: str, string_dates: bool = False) -> Predicate:
    """Parse an expression once into a predicate over a property lookup (name -> value or UNDEFINED)."""
    node = _Parser(text, string_dates).parse()
    return lambda get: _truthy(node(get))


def evaluate(text: str, properties: Mapping[str, Any], string_dates: bool = False) -> bool:
    """Evaluate an expression against a plain mapping; missing keys are undefined. Handy in tests."""
    return compile_where(text, string_dates)(lambda name: properties.get(name, UNDEFINED))
