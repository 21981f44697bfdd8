"""The job type reference of docs/jobs.md, written from the job specs: each type's summary,
schedule, retries and payload fields (type, default, bounds, meaning) as the payload models'
JSON schema gives them. tests/unit/test_job_specs.py checks that the committed page holds
exactly this text; after changing a spec, refresh it with

    .venv/bin/python -m optimizer.jobs.reference --write docs/jobs.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optimizer.jobs.registry import SPECS
from optimizer.jobs.spec import JobSpec

BEGIN = (
    "<!-- job types: generated from the job specs by "
    "`python -m optimizer.jobs.reference --write docs/jobs.md`; do not edit by hand -->"
)
END = "<!-- end of the generated job types -->"

Schema = Mapping[str, Any]


def reference() -> str:
    """The generated section, markers included."""
    parts = [BEGIN, ""]
    for spec in SPECS.values():
        parts += _job_type(spec)
    parts.append(END)
    return "\n".join(parts) + "\n"


def _job_type(spec: JobSpec) -> list[str]:
    schema = spec.payload.model_json_schema()
    lines = [f"### `{spec.name}`", "", f"{spec.summary[:1].upper()}{spec.summary[1:]}.", ""]
    if spec.schedule is not None:
        lines += [
            f"Scheduled by `{spec.schedule.cron_setting.upper()}`; a tick that fires "
            f"late still enqueues within {spec.schedule.misfire_grace_seconds} seconds.",
            "",
        ]
    attempts = spec.retry.max_attempts
    lines += [f"Attempts: {attempts if attempts is not None else '`MAX_ATTEMPTS`'}.", ""]
    lines += _fields(schema, schema.get("$defs", {}))
    for name, nested in sorted(schema.get("$defs", {}).items()):
        lines += [f"Each `{name}` object:", "", *_fields(nested, schema["$defs"])]
    return lines


def _fields(schema: Schema, defs: Schema) -> list[str]:
    required = set(schema.get("required", ()))
    rows = [
        f"| `{name}` | {_text(_type(field, defs))} | {_default(name, field, required)} | "
        f"{_text(field.get('description', ''))} |"
        for name, field in schema.get("properties", {}).items()
    ]
    if not rows:
        return ["No fields.", ""]
    return ["| Field | Type | Default | Meaning |", "|---|---|---|---|", *rows, ""]


def _default(name: str, field: Schema, required: set[str]) -> str:
    if name in required:
        return "required"
    if "default" in field:
        return f"`{json.dumps(field['default'])}`"
    return "see meaning"


def _type(field: Schema, defs: Schema, plural: bool = False) -> str:
    """In words: "whole number from 1 to 10", "array of at most 50 whole numbers ..."."""
    if "anyOf" in field:
        choices: Sequence[Schema] = field["anyOf"]
        named = [_type(choice, defs, plural) for choice in choices if choice.get("type") != "null"]
        nullable = len(named) < len(choices)
        return " or ".join(named) + (", or null" if nullable else "")
    s = "s" if plural else ""
    if "$ref" in field:
        return f"`{field['$ref'].rsplit('/', 1)[-1]}` object{s}"
    kind = field.get("type")
    if kind == "array":
        count = _count(field.get("minItems"), field.get("maxItems"))
        return f"array of {count}{_type(field.get('items', {}), defs, plural=True)}"
    if kind in ("integer", "number"):
        noun = "whole number" if kind == "integer" else "number"
        return f"{noun}{s}{_numeric_bounds(field)}"
    if kind == "string":
        if "enum" in field:
            return "one of " + ", ".join(f"`{value}`" for value in field["enum"])
        pattern = f" matching `{field['pattern']}`" if "pattern" in field else ""
        return f"string{s}{pattern}"
    if kind == "boolean":
        return "true or false"
    if kind == "object":
        return f"object{s}"
    return "any JSON value"


def _count(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"{low} to {high} "
    if high is not None:
        return f"at most {high} "
    return f"at least {low} " if low is not None else ""


def _numeric_bounds(field: Schema) -> str:
    if "minimum" in field and "maximum" in field:
        return f" from {_number(field['minimum'])} to {_number(field['maximum'])}"
    parts = [
        f"{words} {_number(field[key])}"
        for key, words in (
            ("minimum", "at least"),
            ("exclusiveMinimum", "more than"),
            ("maximum", "at most"),
            ("exclusiveMaximum", "less than"),
        )
        if key in field
    ]
    return " " + " and ".join(parts) if parts else ""


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.10g}"


def _text(description: str) -> str:
    """One table cell: on one line, with the pipes that would split it escaped."""
    return " ".join(description.split()).replace("|", "\\|")


def splice(document: str, section: str) -> str:
    """`document` with its generated section replaced by `section`."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        raise ValueError(
            "the document has no generated job types section (its markers are missing)"
        )
    stop = end + len(END)
    stop += document[stop : stop + 1] == "\n"
    return document[:start] + section + document[stop:]


def main(argv: Sequence[str]) -> int:
    if len(argv) == 2 and argv[0] == "--write":
        page = Path(argv[1])
        page.write_text(splice(page.read_text(encoding="utf-8"), reference()), encoding="utf-8")
        return 0
    sys.stdout.write(reference())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
