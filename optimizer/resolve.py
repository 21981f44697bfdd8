"""Which prompt version a unit gets right now, read from the database: the resolve that
the CLI, the demo and tests use.

Read-only (no write, so it stays fast and can never contend for a lock it does not need)
and sticky: while an experiment runs, `pick_arm` maps the unit to the same arm every time.

The answer:

    {"prompt": "support-bot", "version": 3, "version_id": 17, "content": "...",
     "experiment_id": 5 | null,
     "arm": {"id": 12, "role": "control" | "variant"} | null}

`experiment_id` and `arm` are set only while an experiment is `running`; the application
sends `experiment_id` and `version` back with each conversation it logs. A `paused`
experiment exposes nobody new: everyone gets the control version, with no experiment.

The HTTP route answers from the process's snapshot (optimizer.routing_refresh) without
touching the database; `resolve` here reads the same configuration from the database and
evaluates it the same way (optimizer.routing).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from optimizer.client_config import build
from optimizer.errors import InvalidInput
from optimizer.prompt_text import MAX_NAME_CHARS
from optimizer.routing import Routing
from optimizer.text_input import check_text, text_problem

MAX_UNIT_ID = 200


def check_unit_id(value: Any, field: str = "unit_id") -> str:
    problem = text_problem(value, MAX_UNIT_ID)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}; send the id of the user or session", field=field)
    return str(value)


def check_prompt_name(value: Any, field: str = "prompt") -> str:
    # NUL and lone surrogates are refused by name (400) before the lookup: PostgreSQL cannot
    # even compare with such text, so "no such prompt" (404) is not an answer it can give.
    return check_text(value, field, MAX_NAME_CHARS)


def resolve(source: Engine | Session, prompt_name: str, unit_id: str) -> dict[str, Any]:
    name = check_prompt_name(prompt_name)
    unit = check_unit_id(unit_id)
    if isinstance(source, Session):
        return Routing.from_config(build(source)).answer(name, unit)
    with Session(source) as session:
        return Routing.from_config(build(session)).answer(name, unit)
