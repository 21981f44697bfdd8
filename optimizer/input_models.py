"""Typed input: the base of every model that validates what a person or a program sends
(request bodies, query strings, job payloads), and the one adapter that turns pydantic's
validation errors into InvalidInput with a message that names the field.

The messages keep the project's style: `<field> must be <what>; got <value>`, with the field
as a path (`payload.n`, `guardrails[0].metric`), so the HTTP API answers
{"error": ..., "field": ...} and the CLI prints one line, as before the models existed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from optimizer.errors import InvalidInput
from optimizer.text_input import kind_of, shown


class InputModel(BaseModel):
    """Strict: no "3" for 3, no true for 1, no NaN or infinity, no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)
    # What a key of this model is called in messages: "unknown query parameter 'x'".
    noun: ClassVar[str] = "field"


@dataclass(frozen=True)
class MustBe:
    """What a field must be, in its own words, for its type and range errors:
    `Annotated[int, MustBe("1..5 (a whole number)")]` says "rating must be 1..5 (a whole
    number); got 7"."""

    what: str


Model = TypeVar("Model", bound=BaseModel)

_KINDS = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "datetime_type": "an ISO 8601 date-time",
    "datetime_parsing": "an ISO 8601 date-time",
}


_RANGES = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def validate(model: type[Model], data: Any, root: str = "") -> Model:
    """`data` as `model`, or InvalidInput about the first problem found."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise as_invalid_input(exc, model, root) from None


def as_invalid_input(exc: ValidationError, model: type[BaseModel], root: str = "") -> InvalidInput:
    field, message = describe_error(exc.errors(include_url=False)[0], model, root)
    return InvalidInput(message, field=field or None)


def describe_error(
    error: Mapping[str, Any], model: type[BaseModel], root: str = ""
) -> tuple[str, str]:
    """One of pydantic's errors about `model` as (the field's path, a message naming it)."""
    loc = tuple(error["loc"])
    field = field_path(loc, root)
    return field, _message(error, field, _field_info(model, loc), model, loc, root)


def field_path(loc: Sequence[str | int], root: str = "") -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _message(
    error: Mapping[str, Any],
    field: str,
    info: FieldInfo | None,
    model: type[BaseModel],
    loc: tuple[str | int, ...],
    root: str,
) -> str:
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    name = field or "request body"
    if kind == "missing":
        about = f": {info.description}" if info is not None and info.description else ""
        return f"{name} is required{about}"
    if kind == "extra_forbidden":
        parent = _field_info_owner(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else ""
        allowed = allowed or "none"
        noun = parent.noun if parent is not None and issubclass(parent, InputModel) else "field"
        where = f" in {field_path(loc[:-1], root)}" if field_path(loc[:-1], root) else ""
        return f"unknown {noun} {loc[-1]!r}{where}; allowed: {allowed}"
    wrong = _wrong_value(kind, name, value, info, ctx)
    if wrong is not None:
        return wrong
    if kind in ("string_too_short", "too_short"):
        least = ctx.get("min_length", 1)
        return (
            f"{name} must not be empty"
            if least == 1
            else f"{name} must hold at least {least} items; got {_size(value)}"
        )
    if kind in ("string_too_long", "too_long"):
        unit = "characters" if kind == "string_too_long" else "items"
        return f"{name} is {_size(value):,} {unit}; at most {ctx.get('max_length'):,}"
    if kind in ("literal_error", "enum"):
        return (
            f"{name} must be {ctx.get('expected', 'one of the allowed values')}; got {shown(value)}"
        )
    if kind == "value_error":
        return f"{name} {ctx.get('error', error['msg'])}"
    return f"{name}: {error['msg']}"


def _wrong_value(
    kind: str, name: str, value: Any, info: FieldInfo | None, ctx: Mapping[str, Any]
) -> str | None:
    """A value of the wrong type or out of range: "<name> must be <what>; got <value>"."""
    must = (
        next((item for item in info.metadata if isinstance(item, MustBe)), None) if info else None
    )
    huge = kind in ("float_type", "finite_number") and isinstance(value, int)
    if must is not None and (kind in _KINDS or kind in _RANGES):
        wrong_type = kind in _KINDS and not huge
        return f"{name} must be {must.what}; got {_got(value) if wrong_type else shown(value)}"
    if huge and not isinstance(value, bool) and _range(info, ctx):
        # An integer too large for a float: say which range it is outside of.
        return f"{name} must be {_range(info, ctx)}; got {shown(value)}"
    if kind in _KINDS:
        return f"{name} must be {_KINDS[kind]}; got {_got(value)}"
    if kind in _RANGES:
        return f"{name} must be {_range(info, ctx)}; got {shown(value)}"
    return None


def rule(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A check that raises InvalidInput naming its field (prompts.validate_name, a parser of
    text parameters), as a model field validator: its words are kept, and the field is named
    by its place in the model (so a nested one gets its whole path)."""

    def run(value: Any) -> Any:
        try:
            return check(value)
        except InvalidInput as exc:
            text = str(exc)
            if exc.field and text.startswith(f"{exc.field} "):
                text = text[len(exc.field) + 1 :]
            raise ValueError(text) from None

    return run


def one_of(choices: Sequence[str]) -> Callable[[Any], str]:
    """A field validator: the value is one of `choices` (for a set that is only known at run
    time, such as the job types, where a Literal cannot be written)."""

    allowed = tuple(choices)

    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}; got {shown(value)}")
        return str(value)

    return check


def plus_zero(value: float) -> float:
    """-0.0 as 0.0: a stored or echoed -0.0 only confuses."""
    return value + 0.0


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


def _got(value: Any) -> str:
    return (
        shown(value)
        if isinstance(value, str | int | float | bool) or value is None
        else kind_of(value)
    )


def _range(info: FieldInfo | None, ctx: Mapping[str, Any]) -> str:
    bounds = {
        key: getattr(item, key)
        for item in (info.metadata if info else ())
        for key in ("ge", "le", "gt", "lt")
        if getattr(item, key, None) is not None
    }
    bounds = {**bounds, **ctx}
    if "ge" in bounds and "le" in bounds:
        return f"from {_bound(bounds['ge'])} to {_bound(bounds['le'])}"
    words = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}
    return " and ".join(f"{words[key]} {_bound(bounds[key])}" for key in words if key in bounds)


def _bound(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _field_info_owner(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model class that the fields at `loc` belong to (lists and optionals looked through)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        info = current.model_fields.get(part)
        current = _model_in(info.annotation) if info is not None else None
    return current


def _field_info(model: type[BaseModel], loc: tuple[str | int, ...]) -> FieldInfo | None:
    if not loc:
        return None
    names = [part for part in loc if not isinstance(part, int)]
    if not names:
        return None
    owner = _field_info_owner(model, tuple(names[:-1]))
    return owner.model_fields.get(names[-1]) if owner is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
