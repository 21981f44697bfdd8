"""parse_decimal: a finite number typed as text, refused with a message naming the field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.errors import InvalidInput
from optimizer.text_input import parse_decimal


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0.95", 0.95),
        (" 24 ", 24.0),
        ("-1", -1.0),
        ("+.5", 0.5),
        ("7.", 7.0),
        ("1e-3", 0.001),
        ("2E2", 200.0),
    ],
)
def test_plain_decimal_notation_is_read(raw: str, value: float) -> None:
    assert parse_decimal(raw, "weights") == value


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "nan",
        "inf",
        "-Infinity",
        "1_000",
        "0x10",
        "0,9",
        "٣",
        "1e",
        ".",
        "1.2.3",
        "2%",
        "\x00",
    ],
)
def test_anything_else_is_refused_saying_what_was_expected(raw: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_decimal(raw, "confidence", what="a number like 0.95")
    assert str(info.value).startswith("confidence must be a number like 0.95; got ")
    assert info.value.field == "confidence"


@pytest.mark.parametrize("raw", ["1e999", "-1e400", "1" * 400])
def test_a_number_past_float_range_is_too_large(raw: str) -> None:
    with pytest.raises(InvalidInput, match="^weights is too large; got "):
        parse_decimal(raw, "weights")


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_float_reads_back_from_its_repr(value: float) -> None:
    assert parse_decimal(repr(value), "x") == value


@given(st.text(max_size=20))
def test_any_text_gives_a_finite_number_or_invalid_input(raw: str) -> None:
    try:
        value = parse_decimal(raw, "x")
    except InvalidInput as exc:
        assert exc.field == "x" and "\n" not in str(exc)
    else:
        assert math.isfinite(value)
