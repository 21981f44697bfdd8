"""A strict reader of key=value log lines, for tests that check what a line says."""

from __future__ import annotations

import re

_PAIR = r'([A-Za-z0-9_]+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)'
_LINE = re.compile(rf"{_PAIR}(?: {_PAIR})*")
_ESCAPE = re.compile(r'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt"\\])')
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _unescape(quoted: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        return _SIMPLE.get(code) or chr(int(code[1:], 16))

    return _ESCAPE.sub(one, quoted[1:-1])


def parse_kv_strictly(line: str) -> list[tuple[str, str]]:
    """The (key, value) pairs of a line, in order; quoted values unescaped. Fails unless
    every character of the line belongs to one pair."""
    assert _LINE.fullmatch(line), ascii(line)
    return [
        (key, _unescape(value) if value.startswith('"') else value)
        for key, value in re.findall(_PAIR, line)
    ]
