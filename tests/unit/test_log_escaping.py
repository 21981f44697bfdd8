"""Log lines cannot be forged: whatever text reaches a value, a key or the message, each
record is exactly one line of printable characters that parses back to the same fields."""

from __future__ import annotations

import json
import logging
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.logs import JsonFormatter, KeyValueFormatter, scrub
from tests.support.kv import parse_kv_strictly

# Characters that break or forge lines (CR, LF, NUL, ESC, DEL, C1 NEL and CSI, the Unicode
# line and paragraph separators, a bidi override), the kv syntax itself, and lone surrogates.
HOSTILE = (
    "\r",
    "\n",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
    "\u202e",
    "\x0b",
    "\x0c",
    "\x1c",
    "\t",
    " ",
    '"',
    "=",
    "\\",
    "\ud800",
    "\udfff",
    " ts=FAKE",
    '" level=error msg="forged',
    "\r\x1b[2Kts=FAKE",
)
TEXT = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=()), max_size=8), st.sampled_from(HOSTILE)),
    max_size=8,
).map("".join)
# Field names a caller would pass in `extra`; frame and LogRecord names are tested elsewhere.
_TAKEN = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "ts",
    "level",
    "logger",
    "exc",
}
NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda k: k not in _TAKEN)
FRAME = ["ts", "level", "logger", "msg"]


def make_record(msg: str, extra: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("prompt_worker.http", logging.WARNING, __file__, 1, msg, None, None)
    record.__dict__.update(extra)
    return record


def assert_one_clean_line(line: str) -> None:
    assert line.splitlines() == [line]
    # isprintable() is False for C0, DEL, C1, line/paragraph separators, format characters
    # and surrogates; the space is the only whitespace it allows.
    assert line.isprintable(), ascii(line)
    line.encode("utf-8")  # strict: no lone surrogate reaches the stream


PROPERTY = settings(max_examples=300, deadline=None, database=None)


@PROPERTY
@given(msg=TEXT, extra=st.dictionaries(NAMES, TEXT, max_size=4))
def test_kv_line_is_one_clean_line_with_the_same_fields(msg: str, extra: dict[str, str]):
    line = KeyValueFormatter().format(make_record(msg, extra))
    assert_one_clean_line(line)
    pairs = parse_kv_strictly(line)
    assert [key for key, _ in pairs] == FRAME + list(extra)
    fields = dict(pairs)
    assert fields["msg"] == scrub(msg)
    assert fields["level"] == "warning" and fields["logger"] == "prompt_worker.http"
    assert {key: fields[key] for key in extra} == {k: scrub(v) for k, v in extra.items()}


@PROPERTY
@given(
    extra=st.dictionaries(
        TEXT.filter(lambda k: k not in _TAKEN | {"msg"}), TEXT, min_size=1, max_size=4
    )
)
def test_kv_keys_of_any_text_cannot_forge_fields(extra: dict[str, str]):
    line = KeyValueFormatter().format(make_record("hello", extra))
    assert_one_clean_line(line)
    pairs = parse_kv_strictly(line)
    assert len(pairs) == len(FRAME) + len(extra)
    assert pairs[:4] == [
        ("ts", pairs[0][1]),
        ("level", "warning"),
        ("logger", "prompt_worker.http"),
        ("msg", "hello"),
    ]
    assert [value for _, value in pairs[4:]] == [scrub(v) for v in extra.values()]


@PROPERTY
@given(
    msg=TEXT,
    extra=st.dictionaries(TEXT.filter(lambda k: k not in _TAKEN | {"msg"}), TEXT, max_size=4),
)
def test_json_line_is_one_clean_line_with_the_same_fields(msg: str, extra: dict[str, str]):
    line = JsonFormatter().format(make_record(msg, extra))
    assert_one_clean_line(line)
    parsed = json.loads(line)
    assert list(parsed) == [*FRAME, *map(_as_json_reads_it, extra)]
    assert parsed["msg"] == _as_json_reads_it(scrub(msg))
    assert [parsed[_as_json_reads_it(k)] for k in extra] == [
        _as_json_reads_it(scrub(v)) for v in extra.values()
    ]


def _as_json_reads_it(text: str) -> str:
    # JSON has no lone surrogates of its own: a high one escaped next to a low one reads
    # back as the single character they encode together in UTF-16.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def test_kv_forged_pair_stays_inside_its_value():
    record = make_record("resolve failed", {"path": "/v1/prompts/x\r\x1b[2Kts=FAKE level=error"})
    line = KeyValueFormatter().format(record)
    assert line.endswith(r'path="/v1/prompts/x\r\x1b[2Kts=FAKE level=error"')
    assert [key for key, _ in parse_kv_strictly(line)] == [*FRAME, "path"]


def test_exception_text_is_escaped_too():
    try:
        raise ValueError("bad\x1b[31m\r\u2028input")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    for formatter in (KeyValueFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert_one_clean_line(line)
    exc = dict(parse_kv_strictly(KeyValueFormatter().format(record)))["exc"]
    assert "ValueError: bad\x1b[31m\r\u2028input" in exc
