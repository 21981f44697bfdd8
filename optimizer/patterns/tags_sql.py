"""Tags in SQL. Tags are a JSON list in a text column; they are unnested in the database
(json_each on SQLite, jsonb_array_elements on PostgreSQL, via a text cast so a json or
jsonb column works too), each tag once per conversation even when listed twice, and a row
whose tags are not a JSON array contributes no tags instead of failing the statement.

PostgreSQL 16 tests that with pg_input_is_valid. Before 16 a regular expression admits
only arrays of well-formed JSON strings that jsonb accepts (what ingest writes): JSON
whitespace only, no \\u0000, surrogate escapes only in pairs. In a database whose encoding
is not UTF-8 jsonb also refuses escapes of characters the encoding lacks; should a value
still fail the cast there, the caller falls back to NO_ESCAPES_RE (see rollup).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text, bindparam, case, cast, func, join, literal, literal_column, select
from sqlalchemy import true as sql_true
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import FromClause

from models.conversations import Conversation as C

_HEX = "[0-9a-fA-F]"
_ESCAPE = (
    r'\\(["\\/bfnrt]'
    rf"|u[dD][89abAB]{_HEX}{{2}}\\u[dD][c-fC-F]{_HEX}{{2}}"  # a surrogate pair
    rf"|u(?!0000)(?![dD][89a-fA-F]){_HEX}{{4}})"  # any other character but NUL
)
_WS = r"[ \t\n\r]*"


def _array_re(escape: str) -> str:
    string = rf'"({escape}|[^"\\\x01-\x1f])*"'
    return rf"^{_WS}\[{_WS}({string}{_WS}(,{_WS}{string}{_WS})*)?\]{_WS}$"


TAGS_ARRAY_RE = _array_re(_ESCAPE)
NO_ESCAPES_RE = _array_re(r'\\["\\/bfnrt]')
TAGS_RE_PARAM = "tags_array_re"


def _pg16(server_version: tuple[int | str, ...] | None) -> bool:
    major = server_version[0] if server_version else None
    return isinstance(major, int) and major >= 16


def uses_pattern(dialect: Dialect) -> bool:
    """Whether the tags are tested with TAGS_ARRAY_RE (PostgreSQL before 16)."""
    return dialect.name == "postgresql" and not _pg16(dialect.server_version_info)


def pg_tags_array(server_version: tuple[int | str, ...] | None) -> ColumnElement[Any]:
    """The tags as a jsonb array, or NULL when they are not one. Binds TAGS_RE_PARAM
    before PostgreSQL 16 (TAGS_ARRAY_RE unless the caller binds another)."""
    raw = cast(C.tags, Text)
    as_jsonb = cast(raw, JSONB)
    if _pg16(server_version):
        valid = func.pg_input_is_valid(raw, literal_column("'jsonb'"))
        return case((valid, case((func.jsonb_typeof(as_jsonb) == "array", as_jsonb))))
    pattern = bindparam(TAGS_RE_PARAM, value=TAGS_ARRAY_RE, type_=Text())
    return case((raw.op("~")(pattern), as_jsonb))


def _sqlite_tags_array() -> ColumnElement[Any]:
    return case((func.json_valid(C.tags), case((func.json_type(C.tags) == "array", C.tags))))


def tagged_conversations(
    dialect: str, server_version: tuple[int | str, ...] | None
) -> tuple[FromClause, ColumnElement[Any], list[ColumnElement[bool]]]:
    """The conversations joined to their tags, one row per (conversation, distinct tag):
    the FROM clause, the tag's column and the conditions the WHERE clause must add."""
    if dialect == "postgresql":
        elements = func.jsonb_array_elements(pg_tags_array(server_version)).table_valued(
            "value", name="e"
        )
        tags = (
            select(elements.c.value.op("#>>")(literal_column("'{}'")).label("tag"))
            .where(func.jsonb_typeof(elements.c.value) == "string")
            .distinct()
            .lateral("t")
        )
        return join(C, tags, sql_true()), tags.c.tag, []
    each = func.json_each(_sqlite_tags_array()).table_valued("key", "value", "type", name="j")
    earlier = func.json_each(C.tags).table_valued("key", "value", "type", name="k")
    listed_before = (
        select(literal(1))
        .select_from(earlier)
        .where(
            earlier.c.key < each.c.key,
            earlier.c.type == "text",
            earlier.c.value == each.c.value,
        )
        .exists()
    )
    return join(C, each, sql_true()), each.c.value, [each.c.type == "text", ~listed_before]


def has_tag(dialect: str, server_version: tuple[int | str, ...] | None, tag: str) -> Any:
    """The conversation lists `tag` (as a string). The parameter is unique, so one
    statement may test several tags."""
    if dialect == "postgresql":
        wanted = func.jsonb_build_array(
            cast(bindparam("tag", tag, type_=Text(), unique=True), Text)
        )
        return pg_tags_array(server_version).op("@>")(wanted)
    each = func.json_each(_sqlite_tags_array()).table_valued("value", "type", name="k")
    return (
        select(literal(1))
        .select_from(each)
        .where(each.c.type == "text", each.c.value == bindparam("tag", tag, unique=True))
        .exists()
    )
