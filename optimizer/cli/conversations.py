"""`prompt-worker conversations import FILE.jsonl`: backfill logged conversations.

One JSON record per line, checked exactly as POST /v1/conversations checks them. The whole
file goes in one transaction, so it is imported completely or not at all; lines are read
and inserted in chunks, so memory stays bounded however large the file is.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import Engine

from optimizer import strict_json
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.errors import InvalidInput
from optimizer.ingest import Ingestion, RowError, RowsInvalid
from optimizer.ingest_record import MAX_MESSAGES, MAX_MESSAGES_CHARS, MAX_TRANSCRIPT
from optimizer.text_input import parse_whole

DEFAULT_BATCH, MAX_BATCH = 1000, 10_000
# A line holds one record: a full transcript and full messages escaped as JSON (each message
# with its keys, or its blocks' keys), plus the other fields.
MAX_LINE_BYTES = 8 * (MAX_TRANSCRIPT + MAX_MESSAGES_CHARS) + 256 * MAX_MESSAGES + 64 * 1024
_READ_CHUNK = 1 << 20


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = subparsers.add_parser("conversations", help="import logged conversations")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = actions.add_parser(
        "import", help="import a JSONL file (one conversation per line), all or nothing"
    )
    imp.add_argument("file", metavar="FILE.jsonl", help="one JSON record per line")
    imp.add_argument(
        "--batch",
        metavar="N",
        default=str(DEFAULT_BATCH),
        help=f"rows per insert, 1..{MAX_BATCH} (default {DEFAULT_BATCH})",
    )
    imp.set_defaults(func=cmd_conversations_import)


def parse_batch(raw: str) -> int:
    return parse_whole(raw, "batch", 1, MAX_BATCH)


def cmd_conversations_import(args: argparse.Namespace, settings: Settings, engine: Engine) -> int:
    batch = parse_batch(args.batch)
    path = Path(args.file)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidInput(
            f"cannot read {args.file}: {exc.strerror or exc}", field="file"
        ) from None
    try:
        with handle, engine.begin() as conn:
            ingestion = Ingestion(conn, utcnow())
            chunk: list[tuple[int, Any]] = []
            for number, record in _records(handle, ingestion):
                chunk.append((number, record))
                if len(chunk) >= batch:
                    ingestion.add(chunk)
                    chunk = []
            if chunk:
                ingestion.add(chunk)
            if ingestion.total_rows == 0:
                raise InvalidInput(f"{args.file} holds no conversations", field="file")
            accepted = ingestion.finish()
    except RowsInvalid as exc:
        _report(exc)
        return 1
    print(f"imported {accepted} conversations")
    return 0


def _records(handle: IO[bytes], ingestion: Ingestion) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) for each non-blank line; unreadable lines are
    reported to `ingestion` and skipped."""
    for number, raw in enumerate(_lines(handle), start=1):
        if raw is None:
            ingestion.reject(number, f"line is longer than {MAX_LINE_BYTES:,} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            ingestion.reject(number, f"not UTF-8 (byte {exc.start})")
            continue
        if not text.strip():
            continue
        try:
            yield number, strict_json.loads(text)
        except strict_json.JsonRejected as exc:
            ingestion.reject(number, str(exc))


def _lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """Lines without their end; None for a line too long to hold (its rest is skipped)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(_READ_CHUNK)
            yield None
            continue
        yield line.rstrip(b"\r\n")


def format_error(error: RowError) -> str:
    where = f"{error.field}: " if error.field else ""
    return f"line {error.index}: {where}{error.problem}"


def _report(exc: RowsInvalid) -> None:
    for error in exc.errors:
        print(format_error(error), file=sys.stderr)
    if exc.omitted:
        print(f"... and {exc.omitted} more problems", file=sys.stderr)
    print(f"error: {exc}", file=sys.stderr)
