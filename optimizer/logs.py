"""Structured log lines: key=value (LOG_FORMAT=kv) or one JSON object per line (json).

Every line carries ts, level, logger and msg, then the fields passed in `extra`. Lines
emitted while a job runs also carry job_id, job_type and attempt: the worker binds them in
a context variable around the job, and asyncio tasks and `asyncio.to_thread` copy the
context, so lines from inside handlers (and the threads they start) get them without
passing them along.

Lines never carry secrets: anything shaped like an Anthropic key or a bearer token is
replaced, and long values (a transcript passed by mistake) are cut.

Each record is exactly one line whatever text it carries (a request path, a database error):
characters that are not printable (controls, line separators, format characters, lone
surrogates) are written as escapes in both formats, and a kv value that is not plain is
quoted, so no value can end the line or start a `key=` pair of its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from optimizer.clock import iso

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
_FRAME = frozenset({"ts", "level", "logger", "msg", "exc"})
MAX_VALUE_CHARS = 2000
MAX_EXC_CHARS = 10_000
_SECRETS = (
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]+"), "sk-ant-[redacted]"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}"), "Bearer [redacted]"),
)


@dataclass(frozen=True)
class JobLogContext:
    job_id: int
    job_type: str
    attempt: int


_job: ContextVar[JobLogContext | None] = ContextVar("prompt_worker_log_job", default=None)


@contextlib.contextmanager
def job_context(job_id: int, job_type: str, attempt: int) -> Iterator[None]:
    """Tag every line logged in this task (and what it starts) with the job."""
    token = _job.set(JobLogContext(job_id, job_type, attempt))
    try:
        yield
    finally:
        _job.reset(token)


def current_job() -> JobLogContext | None:
    return _job.get()


class JobContextFilter(logging.Filter):
    """Adds job_id, job_type and attempt from the context; explicit `extra` values win."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = _job.get()
        if job is not None:
            for name, value in (
                ("job_id", job.job_id),
                ("job_type", job.job_type),
                ("attempt", job.attempt),
            ):
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True


def scrub(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    if len(text) > limit:
        text = f"{text[:limit]}...(+{len(text) - limit} chars)"
    return text


def _timestamp(record: logging.LogRecord) -> str:
    return iso(datetime.fromtimestamp(record.created, UTC), "microseconds")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    # An extra named like a frame field is kept under another name, never allowed to
    # replace the frame or to appear twice on a kv line.
    return {
        (f"x_{k}" if k in _FRAME else k): v for k, v in vars(record).items() if k not in _STANDARD
    }


_KV_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_KV_BARE_FORBIDDEN = frozenset(' "=\\')
_UNSAFE_KEY_CHAR = re.compile(r"[^A-Za-z0-9_]")


def _code_point(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _kv_escape(text: str) -> str:
    # Everything str.isprintable() rejects (C0, DEL, C1, line and paragraph separators,
    # bidi and other format characters, lone surrogates) becomes a visible escape, so a
    # value can neither end the line nor rewrite it on a terminal.
    return "".join(_KV_ESCAPES.get(c) or (c if c.isprintable() else _code_point(c)) for c in text)


def _quote(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    text = scrub(str(value), limit)
    if text and text.isprintable() and _KV_BARE_FORBIDDEN.isdisjoint(text):
        return text
    return f'"{_kv_escape(text)}"'


def _key(name: object) -> str:
    # Names come from `extra`, which may hold any string: keep keys to one token of word
    # characters, so no key can carry a space, an "=" or a line break.
    return _UNSAFE_KEY_CHAR.sub("_", str(name)) or "_"


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"ts={_timestamp(record)}",
            f"level={_quote(record.levelname.lower())}",
            f"logger={_quote(record.name)}",
            f"msg={_quote(record.getMessage())}",
        ]
        parts += [f"{_key(k)}={_quote(v)}" for k, v in _fields(record).items()]
        if record.exc_info and record.exc_info[1] is not None:
            exc = self.formatException(record.exc_info)
            parts.append(f"exc={_quote(exc, MAX_EXC_CHARS)}")
        return " ".join(parts)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        line.update((str(key), _json_value(value)) for key, value in _fields(record).items())
        if record.exc_info and record.exc_info[1] is not None:
            line["exc"] = scrub(self.formatException(record.exc_info), MAX_EXC_CHARS)
        # allow_nan=False would raise on a float('nan') field; NaN is rare and not worth a
        # lost line, so non-finite numbers are written as strings instead.
        try:
            text = json.dumps(line, ensure_ascii=False, allow_nan=False)
        except ValueError:
            text = json.dumps(
                {k: (str(v) if isinstance(v, float) else v) for k, v in line.items()},
                ensure_ascii=False,
            )
        return text if text.isprintable() else _json_escape(text)


def _json_escape(text: str) -> str:
    # json.dumps escapes only C0 controls; DEL, C1, U+2028/U+2029 (line breaks to many
    # readers), format characters and lone surrogates (unwritable as UTF-8) would pass
    # through. They can occur only inside strings, where a \u escape means the same.
    return "".join(c if c.isprintable() else _json_code_units(c) for c in text)


def _json_code_units(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


FORMATTERS: dict[str, type[logging.Formatter]] = {"kv": KeyValueFormatter, "json": JsonFormatter}


def make_handler(fmt: str = "kv", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing `fmt` lines (kv or json) to `stream` (default stderr)."""
    if fmt not in FORMATTERS:
        raise ValueError(f"log format must be one of {', '.join(FORMATTERS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(FORMATTERS[fmt]())
    handler.addFilter(JobContextFilter())
    return handler


def setup_logging(level: str, fmt: str = "kv", stream: IO[str] | None = None) -> None:
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt, stream)]
    root.setLevel(level)
    # Warnings (numpy's RuntimeWarning, deprecations) become log records in the same format,
    # instead of raw multi-line text on stderr.
    logging.captureWarnings(True)
    # Libraries are quiet unless something is wrong.
    for noisy in ("apscheduler", "aiohttp.access", "httpx", "anthropic", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
