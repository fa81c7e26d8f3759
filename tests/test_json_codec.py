"""parse_json gives what json.loads gives: the same values and the same errors (integers beyond
64 bits become floats, as in the browser's JSON.parse)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyzer.json_codec import parse_json

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(value=JSON_VALUES, as_bytes=st.booleans(), ascii_only=st.booleans())
def test_same_values_as_the_standard_library(value, as_bytes, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    data = text.encode("utf-8", "surrogatepass") if as_bytes else text
    try:
        expected = json.loads(data)
    except ValueError as exc:
        with pytest.raises(type(exc)):
            parse_json(data)
        return
    # repr compares NaN, -0.0 and int-vs-float exactly
    assert repr(parse_json(data)) == repr(expected)


@pytest.mark.parametrize("text", [
    "NaN", "-Infinity", "18446744073709551615", "-9223372036854775808", '"\\ud800"',
    '{"a": 1, "a": 2}', "[" * 2000 + "]" * 2000,
])
def test_what_orjson_would_read_differently(text):
    assert repr(parse_json(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ["{bad", "", "[1,]", "[1] x"])
def test_same_error_message(text):
    with pytest.raises(json.JSONDecodeError) as ours:
        parse_json(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("text", ["123456789012345678901234567890", "-9223372036854775809", "18446744073709551616"])
def test_integers_beyond_64_bits_become_floats_like_in_javascript(text):
    assert parse_json(text) == float(int(text))
    assert isinstance(parse_json(text), float)
