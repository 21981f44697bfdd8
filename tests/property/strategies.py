"""Hostile values shared by the property tests: what broke the server once or might.

Strings with lone surrogates, NUL and other control characters; integers of hundreds of
digits (too large to convert to float); the edges of float and of 64-bit columns; NaN and
Infinity as text and as bare JSON tokens. And a way to put any of them anywhere in a valid
document, nested values included.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Every character: lone surrogates, NUL and the other control characters included.
ANY_CHAR = st.characters(exclude_categories=())
TEXT = st.text(alphabet=ANY_CHAR, max_size=40)
# Strings that broke the server once (a lone surrogate in a stop reason, NUL on PostgreSQL)
# or might: control characters, direction overrides, a byte-order mark, line separators.
HOSTILE_STRINGS = [
    "\x00",
    "a\x00b",
    "support-bot\x00",
    "\ud800",
    "\udfff",
    "x\ud83d",
    "support-bot\ud800",
    "\x01\x1b[2K\r\n",
    "\x7f\x85\x9b",
    "\u202etxt",
    "\ufeff",
    "\u2028\u2029",
    "\t",
    " ",
    "",
]
# Integers of hundreds of digits (int too large to convert to float), the edges of float
# and of the 64-bit columns, negative zero. JSON has no NaN or Infinity: those go as text
# here, and as bare tokens in RAW_NUMBERS.
HUGE_INTEGERS = st.integers(10**200, 10**600) | st.integers(-(10**600), -(10**200))
HOSTILE_NUMBERS = (
    st.sampled_from(
        [
            int("9" * 400),
            -int("9" * 400),
            2**63,
            2**64,
            -(2**63) - 1,
            2**1000,
            1e308,
            -1e308,
            1.7976931348623157e308,
            5e-324,
            -5e-324,
            2.2250738585072014e-308,
            -0.0,
            0.0,
        ]
    )
    | HUGE_INTEGERS
)
NAN_AS_TEXT = st.sampled_from(
    [
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "1e400",
        "-0.0",
        "1e308",
        "9" * 400,
        "0x10",
        "1_000",
    ]
)
HOSTILE = (
    st.sampled_from(HOSTILE_STRINGS)
    | st.text(ANY_CHAR, min_size=1, max_size=12)
    | HOSTILE_NUMBERS
    | NAN_AS_TEXT
)
# Number tokens as they appear in the raw JSON text (not all of them are JSON).
RAW_NUMBERS = [
    "NaN",
    "-NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E+999",
    "-0.0",
    "-0",
    "1e308",
    "4.9e-324",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "1" + "0" * 4301,
]

# An experiment's settings with every field set, nested ones included, as POST /experiments
# and experiment_creation payloads take them: replacing any one value reaches its check.
EXPERIMENT_SETTINGS: dict[str, Any] = {
    "primary_metric": "success",
    "confidence": 0.9,
    "min_conversations_per_arm": 100,
    "min_runtime_hours": 1.5,
    "max_runtime_hours": 48,
    "guardrails": [
        {"metric": "rating", "higher_is_better": True, "tolerance": 0.05, "required": False},
        {"metric": "latency_ms", "tolerance": 10.0, "cap": 60000},
        {"metric": "cost_usd", "higher_is_better": False, "tolerance": 0.01, "cap": 1},
    ],
}

Path = tuple[str | int, ...]


def places(document: Any, at: Path = ()) -> list[Path]:
    """Every position in a document (each value and each item, however deep)."""
    found: list[Path] = [at] if at else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += places(value, (*at, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += places(value, (*at, index))
    return found


def replaced(document: Any, at: Path, value: Any, *, delete: bool = False) -> Any:
    """A copy of `document` with the value at `at` replaced (or deleted)."""
    if not at:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    head, rest = at[0], at[1:]
    if rest:
        copy[head] = replaced(copy[head], rest, value, delete=delete)  # type: ignore[index]
    elif delete:
        del copy[head]  # type: ignore[arg-type]
    else:
        copy[head] = value  # type: ignore[index]
    return copy


def like(original: Any) -> st.SearchStrategy[Any]:
    """Hostile values of the original's own kind, which get past the type check and reach
    the checks behind it: a huge integer for a number, a NUL or a surrogate in a string."""
    if isinstance(original, bool) or original is None:
        return HOSTILE
    if isinstance(original, int | float):
        return st.one_of(HOSTILE_NUMBERS, HOSTILE_NUMBERS, NAN_AS_TEXT)
    if isinstance(original, str):
        bad = st.sampled_from(HOSTILE_STRINGS)
        return st.one_of(bad, bad.map(lambda b: original + b), bad.map(lambda b: b + original))
    return HOSTILE


@st.composite
def spoiled(draw: st.DrawFn, base: Any, values: st.SearchStrategy[Any]) -> Any:
    """`base` with one or two values anywhere in it (nested ones too) replaced, or deleted:
    half the time by a hostile value of the same kind, otherwise by one from `values`."""
    document = base
    for at in draw(st.lists(st.sampled_from(places(base)), min_size=1, max_size=2, unique=True)):
        try:
            # The simplest choices (what hypothesis tries first and shrinks towards) are the
            # hostile values of the field's own kind; deleting a field comes last.
            how = draw(st.integers(0, 5))
            if how == 5:
                document = replaced(document, at, None, delete=True)
            else:
                original = _value_at(base, at)
                value = draw(values if how % 2 else like(original))
                document = replaced(document, at, value)
        except (KeyError, IndexError, TypeError, ValueError):  # the first change moved it
            pass
    return document


def _value_at(document: Any, at: Path) -> Any:
    for step in at:
        document = document[step]
    return document
