"""The /ui/ dashboard as an aiohttp subapp of the service's app.

Each route module has `add_routes(ui)`; ROUTE_MODULES lists them. Handlers read the shared
parts from `request.config_dict` (ENGINE, SETTINGS, HEALTH, STATS: optimizer/http/keys.py),
which looks through to the parent app.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.config import Settings
from optimizer.ui import (
    guard,
    routes_auth,
    routes_experiments,
    routes_insights,
    routes_jobs,
    routes_overview,
    routes_prompts,
    timing,
)

ROUTE_MODULES: tuple[ModuleType, ...] = (
    routes_auth,
    routes_prompts,
    routes_overview,
    routes_jobs,
    routes_experiments,
    routes_insights,
)
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = web.AppKey("ui_static_files", frozenset[str])


def create_ui_app(settings: Settings, engine: Engine) -> web.Application:
    """The subapp with every route module's routes and the static files; `settings` and
    `engine` are the parent's (read through config_dict), passed here for what is built
    once per app."""
    del settings  # every handler reads the parent's settings through config_dict
    timing.install_query_counter(engine)
    ui = web.Application(
        middlewares=[
            timing.timing_middleware,
            guard.headers_middleware,
            guard.errors_middleware,
            guard.access_middleware,
        ]
    )
    for module in ROUTE_MODULES:
        module.add_routes(ui)
    ui[STATIC_FILES] = frozenset(p.name for p in STATIC_DIR.iterdir() if p.is_file())
    ui.router.add_get("/static/{name}", _static)
    return ui


async def _static(request: web.Request) -> web.StreamResponse:
    """A file of optimizer/ui/static by its name. Not aiohttp's add_static: its handler
    finds a missing file only while sending, too late for the guard's HTML 404 page; and a
    fixed list of names leaves no path to climb out of the folder."""
    name = request.match_info["name"]
    if name not in request.app[STATIC_FILES]:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC_DIR / name)


async def _to_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(location="/ui/")


def install(app: web.Application, settings: Settings, engine: Engine) -> None:
    """Mount the dashboard at /ui/ on the service's app, and redirect /ui there."""
    # Registered before the subapp: both live under the path "/ui", and the router tries
    # resources in the order they were added.
    app.router.add_get("/ui", _to_root)
    app.add_subapp("/ui/", create_ui_app(settings, engine))
