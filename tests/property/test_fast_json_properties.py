"""Hypothesis against optimizer.http.fast_json: for any bytes, the fast decoder answers
exactly what optimizer.http.body.parse_json_document answers, the same value (types, -0.0,
key order) or the same 400 message.

Documents are valid JSON of any shape (any Unicode, lone surrogates escaped, integers up to
and past Python's 4,300-digit limit, floats of every size, nesting around the 64-level
limit), then sometimes spoiled: a key given twice, NaN, Infinity or an overflowing exponent
spliced in, a byte dropped or inserted, cut short, not UTF-8."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import InvalidInput
from optimizer.http import body, fast_json
from optimizer.strict_json import MAX_JSON_DEPTH

TEXT = st.text(st.characters(exclude_categories=()))  # lone surrogates too
KEYS = TEXT | st.sampled_from(["a", "prompt", "conversations"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**4299, -(10**4299), 2**64, -(2**63), 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 1e-320]),
    TEXT,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)


def nested(depth: int, leaf: Any) -> Any:
    for i in range(depth - 1):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["value", "deep", "conversations"]))
    if shape == "deep":
        depth = draw(st.integers(MAX_JSON_DEPTH - 2, MAX_JSON_DEPTH + 2))
        value = nested(depth, draw(SCALARS | st.just([]) | st.just({})))
    elif shape == "conversations":
        value = {"conversations": draw(st.lists(st.dictionaries(KEYS, VALUES), max_size=3))}
    else:
        value = draw(VALUES)
    text = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.none() | st.just(1)))
    spoil = draw(
        st.sampled_from(["none", "none", "duplicate", "token", "drop", "insert", "cut", "bytes"])
    )
    at = draw(st.integers(0, len(text)))
    if spoil == "duplicate":  # the last value wins, in the first one's place
        text = f'{{"k": 1, "j": {text}, "k": [{text}]}}'
    elif spoil == "token":
        token = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e999", "1e-999"]))
        text = f"[{token}, {text}]" if draw(st.booleans()) else text[:at] + token + text[at:]
    elif spoil == "drop":
        text = text[:at] + text[at + 1 :]
    elif spoil == "insert":
        text = text[:at] + draw(st.sampled_from(list('{}[],:"\\ \t\n\x00x0-.eE'))) + text[at:]
    elif spoil == "cut":
        text = text[:at]
    raw = text.encode("utf-8", "surrogatepass")
    if spoil == "bytes":
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf"]))
    return raw


def tagged(value: Any) -> Any:
    """`value` with every type spelt out: 1, 1.0 and True differ, and so do -0.0 and 0.0."""
    if isinstance(value, dict):
        return ("dict", [(key, tagged(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [tagged(item) for item in value])
    if isinstance(value, float):
        return ("float", value.hex())
    return (type(value).__name__, value)


def answer(parse: Any, raw: bytes) -> Any:
    try:
        return ("value", tagged(parse(raw)))
    except InvalidInput as exc:
        return ("refused", str(exc), exc.field)


@settings(max_examples=600, deadline=None, database=None)
@given(documents())
def test_fast_decoding_answers_what_the_strict_decoder_answers(raw: bytes) -> None:
    assert answer(fast_json.parse_json_document, raw) == answer(body.parse_json_document, raw)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_any_bytes_get_the_same_answer(raw: bytes) -> None:
    assert answer(fast_json.parse_json_document, raw) == answer(body.parse_json_document, raw)
