"""Assembles the aiohttp application from the route modules."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.config import Settings
from optimizer.health import HealthMonitor
from optimizer.http import (
    admin_evaluations,
    admin_experiments,
    admin_insights,
    admin_jobs,
    admin_prompts,
    application_api,
    config_api,
    docs_page,
    openapi,
    probes,
    rate_limit,
    routing_app,
    signing,
)
from optimizer.http import prometheus as http_metrics
from optimizer.http.connections import client_gone_middleware
from optimizer.http.errors import error_middleware
from optimizer.http.keys import ENGINE, HEALTH, SETTINGS, STATS, WEBHOOKS
from optimizer.prometheus import Metrics
from optimizer.run_stats import RunStats
from optimizer.ui import app as ui
from optimizer.webhooks import WebhookSender


def create_app(
    settings: Settings,
    engine: Engine,
    stats: RunStats,
    health: HealthMonitor,
    metrics: Metrics | None = None,
    webhooks: WebhookSender | None = None,
) -> web.Application:
    # client_max_size makes request.read() refuse bodies over the limit (answered as 413)
    # before they are held in memory in full.
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware, client_gone_middleware],
    )
    app[SETTINGS] = settings
    app[ENGINE] = engine
    app[STATS] = stats
    app[HEALTH] = health
    app[WEBHOOKS] = webhooks
    signing.install(app, settings)
    rate_limit.install(app, settings)
    probes.add_routes(app)
    # Tests build many apps: each gets its own registry unless the service passes its own.
    metrics = metrics or Metrics()
    metrics.track_queue(health)
    routing_app.install(app, engine, metrics)
    http_metrics.add_routes(app, metrics)
    admin_jobs.add_routes(app)
    admin_prompts.add_routes(app)
    admin_evaluations.add_routes(app)
    admin_experiments.add_routes(app)
    admin_insights.add_routes(app)
    application_api.add_routes(app)
    config_api.add_routes(app)
    ui.install(app, settings, engine)
    # Last: they describe every route registered above.
    openapi.add_routes(app)
    docs_page.add_routes(app)
    return app
