"""What the CLI prints: JSON documents and plain-text tables."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence


def print_json(value: object, *, ensure_ascii: bool = True) -> int:
    """Print `value` as indented JSON; the command's exit status (0)."""
    print(json.dumps(value, indent=2, ensure_ascii=ensure_ascii))
    return 0


def table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing spaces."""
    lines = [tuple(header), *(tuple(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        indent
        + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
