"""Unit tests of the fake's segmentation-expression evaluator, so where-filter tests rest on a checked base."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_mixpanel.where import UNDEFINED, WhereError, compile_where, evaluate
from integration_tests.depth import examples

PROPS: dict[str, Any] = {
    "mp_processing_time_ms": 1_700_000_000_500,
    "plan": "pro",
    "time": 1_700_000_000,
    "$time": dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC),
    "count": "42",
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "tags": ["a", "b", 3],
    '$weird name.with "quotes"': "yes",
    "text": "hello world",
}


@pytest.mark.parametrize(
    ("expression", "result"),
    [
        ('number(properties["mp_processing_time_ms"]) > 1700000000000', True),
        ('number(properties["mp_processing_time_ms"]) > 1700000000500', False),
        ('number(properties["mp_processing_time_ms"]) >= 1700000000500', True),
        ('(properties["plan"] == "pro") and (number(properties["mp_processing_time_ms"]) > 1700000000000)', True),
        ('(properties["plan"] == "free") and (number(properties["mp_processing_time_ms"]) > 1700000000000)', False),
        ('properties["$time"] >= datetime(1700000000) and properties["$time"] < datetime(1700003600)', True),
        ('properties["$time"] >= datetime(1700000001) and properties["$time"] < datetime(1700003600)', False),
        ('properties["$time"] == datetime("2023-11-14T22:13:20")', True),
        ('properties["$time"] < datetime("2023-11-15")', True),
        ('properties["time"] == 1700000000', True),
        ('number(properties["count"]) == 42', True),
        ('properties["count"] == 42', False),
        ('string(properties["ratio"]) == "0.5"', True),
        ('string(properties["flag"]) == "true"', True),
        ('properties["flag"] == true', True),
        ('properties["flag"] != false', True),
        ('properties["ratio"] > 0.25 and properties["ratio"] < 1', True),
        ('properties["ratio"] > -1', True),
        ('defined(properties["plan"])', True),
        ('defined(properties["missing"])', False),
        ('not defined(properties["missing"])', True),
        ('defined(properties["nothing"])', False),
        ('properties["$weird name.with \\"quotes\\""] == "yes"', True),
        ("properties['plan'] == 'pro'", True),
        ('"a" in properties["tags"]', True),
        ('"c" in properties["tags"]', False),
        ('3 in properties["tags"]', True),
        ('"world" in properties["text"]', True),
        ('"x" in properties["missing"]', False),
        ('not properties["plan"] == "free"', True),
        ('properties["plan"] == "free" or properties["plan"] == "pro"', True),
        ("true", True),
        ("false or (true and not false)", True),
    ],
)
def test_given_expression_when_evaluated_then_expected(expression: str, result: bool) -> None:
    """Each supported construct evaluates as Mixpanel users expect."""
    assert evaluate(expression, PROPS) is result


@pytest.mark.parametrize("op", ["==", "!=", ">", ">=", "<", "<="])
def test_given_missing_property_when_compared_then_always_false(op: str) -> None:
    """Any comparison with an undefined value is false, != included."""
    assert evaluate(f'properties["missing"] {op} 1', PROPS) is False
    assert evaluate(f'number(properties["plan"]) {op} 1', PROPS) is False  # unparseable number is undefined


def test_given_mixed_types_when_ordered_then_false() -> None:
    """Values of different types are never ordered, and a string never equals a number."""
    assert evaluate('properties["plan"] > 1', PROPS) is False
    assert evaluate('properties["$time"] > 1700000000', PROPS) is False
    assert evaluate('properties["plan"] != 1', PROPS) is True


def test_given_precedence_then_not_binds_tighter_than_and_tighter_than_or() -> None:
    """not > and > or, like Python."""
    assert evaluate("true or false and false", {}) is True
    assert evaluate("not true and false", {}) is False
    assert evaluate("not (true and false)", {}) is True
    assert evaluate("false and false or true", {}) is True


def test_given_compiled_predicate_when_lookup_callable_then_used() -> None:
    """compile_where works over any lookup function, so the server need not build dicts."""
    predicate = compile_where('properties["a"] == "b"')
    assert predicate(lambda name: "b" if name == "a" else UNDEFINED) is True
    assert predicate(lambda name: UNDEFINED) is False


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "empty expression"),
        ('properties["plan" == "pro"', "expected ']'"),
        ('properties["plan"] == "pro', "unterminated string"),
        ('properties[plan] == "pro"', "quoted property name"),
        ('number(properties["x"]', "expected ')'"),
        ('frobnicate(properties["x"])', "unknown name 'frobnicate'"),
        ('properties["x"] === 1', "unexpected character '='"),
        ('properties["x"] == ', "expected a value at position 19, found end of expression"),
        ('properties["x"] == 1 2', "unexpected '2'"),
        ('datetime("not a date")', "invalid datetime literal"),
        ("number()", "needs an argument"),
        ('properties["x"] & 1', "unexpected character '&'"),
        ("and true", "unexpected keyword 'and'"),
        ('"bad \\q escape"', "invalid escape"),
    ],
)
def test_given_malformed_expression_when_compiled_then_where_error(expression: str, fragment: str) -> None:
    """Malformed expressions raise WhereError with a message naming the problem."""
    with pytest.raises(WhereError) as caught:
        compile_where(expression)
    assert fragment in str(caught.value)


@settings(max_examples=examples(150), deadline=None, database=None)
@given(st.integers(), st.integers())
def test_given_any_integers_when_compared_then_matches_python(value: int, bound: int) -> None:
    """Integer comparisons are exact at any size, including beyond 2**53."""
    for op, expected in ((">", value > bound), ("<=", value <= bound), ("==", value == bound)):
        assert evaluate(f'number(properties["v"]) {op} {bound}', {"v": value}) is expected


@settings(max_examples=examples(150), deadline=None, database=None)
@given(st.text(), st.text())
def test_given_any_text_when_quoted_as_json_then_matches_itself(name: str, value: str) -> None:
    """Any property name and value survive quoting with JSON escapes."""
    assert evaluate(f"properties[{json.dumps(name)}] == {json.dumps(value)}", {name: value}) is True
    assert evaluate(f"properties[{json.dumps(name)}] == {json.dumps(value + 'x')}", {name: value}) is False


_LEAVES = ["a > 3", "a <= 7", "b == 1", "b != 2", "True", "False"]
_MIXPANEL_LEAF = {
    "a > 3": 'properties["a"] > 3',
    "a <= 7": 'properties["a"] <= 7',
    "b == 1": 'properties["b"] == 1',
    "b != 2": 'properties["b"] != 2',
    "True": "true",
    "False": "false",
}


def _trees() -> st.SearchStrategy[list[str]]:
    """Random boolean expressions as token lists, written without redundant parentheses."""
    leaf = st.sampled_from(_LEAVES).map(lambda s: [s])

    def extend(children: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
        """Combine subtrees with and/or/not, sometimes parenthesised."""
        return st.one_of(
            st.tuples(children, st.sampled_from(["and", "or"]), children).map(lambda t: [*t[0], t[1], *t[2]]),
            children.map(lambda c: ["not", *c]),
            children.map(lambda c: ["(", *c, ")"]),
        )

    return st.recursive(leaf, extend, max_leaves=8)


@settings(max_examples=examples(200), deadline=None, database=None)
@given(_trees(), st.integers(0, 10), st.integers(0, 3))
def test_given_random_boolean_expression_then_same_result_as_python(tokens: list[str], a: int, b: int) -> None:
    """Precedence and short-circuiting agree with Python's (not > and > or) on random expressions."""
    python = " ".join(tokens)
    mixpanel = " ".join(_MIXPANEL_LEAF.get(t, t) for t in tokens)
    assert evaluate(mixpanel, {"a": a, "b": b}) is bool(eval(python, {"__builtins__": {}}, {"a": a, "b": b}))
