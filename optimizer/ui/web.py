"""What the dashboard's handlers share: the context every template gets as `ui`, the page
and action helpers, and the fixed texts of notices.

A page is ONE worker-thread call that reads in a read-only session and renders there (the
event loop never waits on the database or on Jinja). An action runs its write in a thread
and answers 303 (Post/Redirect/Get); its errors become HTML pages in the guard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from yarl import URL

from optimizer import db
from optimizer.clock import utcnow
from optimizer.errors import InvalidInput
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.text_input import refuse_unstorable_in
from optimizer.ui.access import can_write
from optimizer.ui.csrf import csrf_for
from optimizer.ui.render import render

PREFIX = "/ui/"
# The actor recorded for every write made from the dashboard.
ACTOR = "admin (UI)"
# ?notice=<code> shows one of these fixed texts (never text from the URL); unknown codes
# show nothing.
NOTICES: dict[str, str] = {
    "logged-out": "You have been logged out.",
    "rolled-back": "Done: the version you chose is now the active one (see the history).",
    "experiment-stopped": "The experiment has been stopped.",
    "experiment-approved": "Approved: the proposed winner is now the active version.",
    "experiment-rejected": "Rejected: the control version stays active; the experiment is over.",
    "arm-promoted": "Done: the arm you chose is now the active version; the experiment is over.",
    "job-cancelled": "The job has been cancelled (a running job stops at its next step).",
    "job-added": "The job has been added to the queue.",
    "settings-saved": "Saved: the settings of this prompt.",
}
SECTIONS = ("overview", "prompts", "experiments", "insights", "jobs")
# The session's cookie token, set by the guard once the session is checked.
SESSION_TOKEN = web.RequestKey("ui_session_token", str)


@dataclass(frozen=True)
class UiContext:
    """Given to every template as `ui`."""

    csrf: str  # the value of every POST form's hidden `csrf` field
    can_write: bool  # False in read-only mode: templates leave out forms and buttons
    section: str  # the nav entry to highlight (one of SECTIONS, or "" for none)
    notice: str | None  # the text chosen by ?notice=<code>
    now: datetime
    signed_in: bool = True  # False on the login page and on errors before a session


def ui_context(request: web.Request, section: str) -> UiContext:
    token = request.get(SESSION_TOKEN)
    return UiContext(
        csrf=csrf_for(token) if token else "",
        can_write=token is not None and can_write(request.config_dict[SETTINGS]),
        section=section,
        notice=NOTICES.get(request.query.get("notice", "")),
        now=utcnow(),
        signed_in=token is not None,
    )


def html(text: str, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        text=text, status=status, content_type="text/html", charset="utf-8", headers=headers
    )


async def page(
    request: web.Request,
    template: str,
    build: Callable[[Session], Mapping[str, object]],
    *,
    section: str,
    status: int = 200,
) -> web.Response:
    """Read with `build(session)` in one read-only session and render `template` with what it
    returns plus `ui` and `now`, all in one worker thread."""
    engine = request.config_dict[ENGINE]
    ui = ui_context(request, section)

    def work() -> str:
        # Rendered inside the session: a template that touches a lazy attribute then costs a
        # query that Server-Timing shows, instead of failing on a detached object.
        with db.session_factory(db.read_only(engine))() as session:
            context = build(session)
            return render(template, {**context, "ui": ui, "now": ui.now})

    return html(await asyncio.to_thread(work), status)


async def posted(request: web.Request) -> Mapping[str, object]:
    """The POSTed form as aiohttp reads it; InvalidInput (a 400 page) when its bytes are
    not UTF-8, which aiohttp lets out as a UnicodeDecodeError."""
    try:
        return await request.post()
    except UnicodeDecodeError:
        raise InvalidInput(
            "the form is not UTF-8 text; reload the page and send it again"
        ) from None


async def form(request: web.Request) -> dict[str, str]:
    """The POSTed form's fields, one text value each (the first when a name repeats); a
    NUL or a lone surrogate anywhere is a 400 naming the field, as in a JSON body."""
    fields: dict[str, str] = {}
    for name, value in (await posted(request)).items():
        if not isinstance(value, str):
            raise InvalidInput(f"field {name} must be text, not a file upload", field=name)
        fields.setdefault(name, value)
    refuse_unstorable_in(fields)
    return fields


def is_local(path: str) -> bool:
    """Whether `path` is a path of this dashboard (no scheme, no host, no `//` trick)."""
    if not path.startswith(PREFIX) or "\\" in path or any(ord(c) < 32 for c in path):
        return False
    route = path.split("?", 1)[0].split("#", 1)[0]
    # Dot segments (also percent-encoded) would let a browser climb out of /ui/.
    segments = route.lower().replace("%2e", ".").split("/")
    return "//" not in route and not any(s in (".", "..") for s in segments)


def safe_next(path: str | None) -> str:
    """Where to go after login: `path` when it is local, else the overview (never another
    site: an open redirect would let a link show our login page and then leave it)."""
    return path if path and is_local(path) else PREFIX


def with_notice(path: str, notice: str) -> str:
    return str(URL(path).update_query(notice=notice))


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


async def act(
    request: web.Request, work: Callable[[Engine], None], *, done: str, notice: str
) -> web.Response:
    """Run `work(engine)` in a worker thread, then 303 to `done` with `?notice=<code>`.
    `work` opens its own transaction, so an error leaves nothing half-written."""
    if not is_local(done):
        raise ValueError(f"act(done=...) must be a local {PREFIX} path, got {done!r}")
    await asyncio.to_thread(work, request.config_dict[ENGINE])
    return see_other(with_notice(done, notice))
