"""The one strict JSON parser: every hostile body is refused with its status and reason, nothing else escapes."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.inbound_body import BodyRefused, JsonLimits, parse_json
from schemas.text import refused_character
from tests.support.hostile import HOSTILE, Hostile


def message(text: bytes) -> bytes:
    return b'{"channel": "api", "sender": "a", "text": ' + text + b"}"


@pytest.mark.parametrize("case", HOSTILE, ids=[h.name for h in HOSTILE])
def test_each_hostile_body_is_refused_with_its_status_and_reason(case: Hostile) -> None:
    with pytest.raises(BodyRefused) as refused:
        parse_json(case.body(message))
    assert refused.value.status == case.status
    assert case.says in refused.value.message


def test_an_oversized_body_is_413_and_a_body_at_the_limit_passes() -> None:
    with pytest.raises(BodyRefused) as refused:
        parse_json(b'"' + b"x" * 100 + b'"', JsonLimits(max_bytes=50))
    assert refused.value.status == 413 and "the limit is 50" in refused.value.message
    assert parse_json(b'"' + b"x" * 48 + b'"', JsonLimits(max_bytes=50)) == "x" * 48


def test_the_refusal_names_where_the_fault_is() -> None:
    with pytest.raises(BodyRefused) as refused:
        parse_json(b'{"payload": {"items": ["ok", "a\\u0000b"]}}')
    assert "'payload.items.1'" in refused.value.message


def test_ordinary_json_passes_unchanged() -> None:
    value = {"text": "tab\there\r\nnew line, é, 漢, 😀", "n": [0, -1, 2**63 - 1, 1.5e300, None, True]}
    assert parse_json(json.dumps(value).encode()) == value
    assert parse_json(json.dumps(value, ensure_ascii=False)) == value, "a text frame (str) reads the same"
    assert parse_json(b'{"s": "\\ud83d\\ude00"}') == {"s": "😀"}, "an escaped surrogate pair is one character"


def test_nesting_is_limited_by_the_limits_depth() -> None:
    assert parse_json(b"[" * 64 + b"]" * 64) is not None
    with pytest.raises(BodyRefused, match="more than 8 levels deep"):
        parse_json(b'{"a": ' + b"[" * 8 + b"]" * 8 + b"}", JsonLimits(max_depth=8))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(body=st.binary(max_size=400))
def test_any_bytes_are_parsed_or_refused_with_a_4xx_and_nothing_else_is_raised(body: bytes) -> None:
    try:
        value = parse_json(body)
    except BodyRefused as refused:
        assert 400 <= refused.status < 500
        return
    _walk_clean(value)


@settings(max_examples=400, deadline=None)
@given(value=json_values, ensure_ascii=st.booleans())
def test_any_json_value_is_returned_as_it_was_or_refused_with_a_4xx(value: object, ensure_ascii: bool) -> None:
    """Hypothesis writes lone surrogates, NUL, NaN, huge integers and infinities into ordinary JSON."""
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    try:
        parsed = parse_json(body)
    except BodyRefused as refused:
        assert 400 <= refused.status < 500
        return
    assert parsed == value
    _walk_clean(parsed)


def _walk_clean(value: object) -> None:
    json.dumps(value, allow_nan=False).encode("utf-8")  # strict: no NaN, no infinity
    for text in _strings(value):
        assert refused_character(text) is None, repr(text)
        text.encode("utf-8")  # no lone surrogate
    for number in _numbers(value):
        assert math.isfinite(number)
        assert isinstance(number, float) or -(2**63) <= number < 2**63, "integers fit 64 bits"


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, int | float):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    return [n for v in value for n in _numbers(v)]  # type: ignore[attr-defined]
