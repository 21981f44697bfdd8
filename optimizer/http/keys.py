"""Typed keys under which create_app stores the service's shared parts on the app."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.config import Settings
from optimizer.health import HealthMonitor
from optimizer.run_stats import RunStats
from optimizer.webhooks import WebhookSender

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
STATS = web.AppKey("stats", RunStats)
HEALTH = web.AppKey("health", HealthMonitor)
# None when webhooks are not configured (and in most tests).
WEBHOOKS: web.AppKey[WebhookSender | None] = web.AppKey("webhooks")
