"""`prompt-worker run`: the HTTP server, the scheduler, the worker and the LISTEN loop in
one asyncio process, with a clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from optimizer import db
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.errors import ConfigError, PromptWorkerError
from optimizer.health import HealthMonitor
from optimizer.http.accept_errors import accept_errors_throttled, watch_open_files
from optimizer.http.app_factory import create_app
from optimizer.http.connections import GuardedAppRunner
from optimizer.jobs.context import ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.llm import build_llm_client
from optimizer.logs import setup_logging
from optimizer.problems import configuration_problems
from optimizer.prometheus import Metrics
from optimizer.run_stats import RunStats
from optimizer.runtime.notify import listen_for_jobs
from optimizer.runtime.schedule import build_scheduler
from optimizer.runtime.worker import Worker
from optimizer.ui.access import ui_mode
from optimizer.webhooks import WebhookSender

log = logging.getLogger("prompt_worker.service")
STUCK_THREAD_WAIT_SECONDS = 2.0
WEBHOOK_DRAIN_SECONDS = 5.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux and macOS): the HTTP server answers
    a third more requests a second on it (benchmarks/hotpath.py); asyncio's elsewhere."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_service(settings: Settings) -> int:
    setup_logging(settings.log_level, settings.log_format)
    loop = new_event_loop()
    # Our own executor, because asyncio.run() joins the default one's threads on exit.
    executor = ThreadPoolExecutor(thread_name_prefix="db")
    loop.set_default_executor(executor)
    try:
        code = loop.run_until_complete(serve(settings))
    except PromptWorkerError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        code = 1
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        loop.close()
    _exit_past_stuck_threads(code)
    return code


def _exit_past_stuck_threads(code: int) -> None:
    """A handler released at shutdown may leave a thread blocked in a database call (a
    lock wait, a dead server). Its job is already back in the queue; waiting for that
    thread would turn a graceful stop into a hang, so leave without it."""
    deadline = time.monotonic() + STUCK_THREAD_WAIT_SECONDS
    while True:
        stuck = [
            t
            for t in threading.enumerate()
            if t is not threading.main_thread() and t.is_alive() and not t.daemon
        ]
        if not stuck or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if stuck:
        log.warning(
            "exiting with threads still blocked in database calls", extra={"threads": len(stuck)}
        )
        logging.shutdown()
        os._exit(code)


def check_schema(engine: Engine) -> None:
    """Refuse to start on a database that is reachable but not migrated. An unreachable one
    is fine: the service starts degraded and catches up when the database returns."""
    try:
        current = db.current_revision(engine)
    except SQLAlchemyError as exc:
        log.warning(
            "database unreachable at start; running degraded until it answers",
            extra={"error": str(exc).splitlines()[0][:200]},
        )
        return
    head = db.head_revision()
    if current != head:
        raise ConfigError(
            f"database schema is at {current or 'nothing'}, code needs {head}: "
            "run `prompt-worker migrate` first"
        )


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> int:
    engine = db.create_db_engine(settings.database_url, pool_size=settings.worker_concurrency + 4)
    try:
        await asyncio.to_thread(check_schema, engine)
        with accept_errors_throttled(asyncio.get_running_loop()):
            return await _serve(settings, engine, stop or asyncio.Event())
    finally:
        engine.dispose()


def listen_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(settings: Settings, runner: web.AppRunner, worker_id: str) -> None:
    """One line that says where the service is and which database it uses, then a warning
    for each configuration problem (an API closed for want of its token, no LLM key)."""
    port = runner.addresses[0][1] if runner.addresses else settings.port  # PORT=0: the real one
    log.info(
        "prompt-worker running",
        extra={
            "url": listen_url(settings.host, port),
            "database": db.describe(settings.database_url),
            "worker_id": worker_id,
            # off, read-only or full: with ADMIN_HMAC_SECRET set the default is off.
            "dashboard": ui_mode(settings) if settings.admin_token else "off",
        },
    )
    for problem in configuration_problems(settings):
        log.warning(problem.message, extra={"problem": problem.code})


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _serve(settings: Settings, engine: Engine, stop: asyncio.Event) -> int:
    stats = RunStats()
    metrics = Metrics()
    webhooks = WebhookSender.from_settings(settings)
    sessions = db.session_factory(engine)
    ctx = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        stats=stats,
        clock=utcnow,
        llm=build_llm_client(settings, sessions, utcnow),
        metrics=metrics,
        webhooks=webhooks,
    )
    health = HealthMonitor(engine, stats, started_at=utcnow())
    runner = GuardedAppRunner(
        create_app(settings, engine, stats, health, metrics, webhooks),
        keepalive_timeout=settings.http_keepalive_timeout_seconds,
        request_timeout=settings.http_request_timeout_seconds,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    _install_signal_handlers(stop)
    wake = asyncio.Event()
    background = [
        asyncio.create_task(health.refresh_forever(), name="health"),
        asyncio.create_task(watch_open_files(), name="open-files"),
    ]
    if engine.dialect.name == "postgresql":
        background.append(
            asyncio.create_task(listen_for_jobs(settings.database_url, wake), name="listen")
        )
    if webhooks is not None:
        webhooks.start()
    worker = Worker(ctx, default_handlers(), wake=wake)
    worker.start()
    scheduler = build_scheduler(ctx)
    scheduler.start()
    _announce(settings, runner, worker.worker_id)
    await stop.wait()
    log.info("shutting down", extra={"grace_seconds": settings.shutdown_grace_seconds})
    scheduler.shutdown(wait=False)
    await worker.stop(settings.shutdown_grace_seconds)
    if webhooks is not None:  # after the worker: its last jobs' events are queued by now
        await webhooks.stop(WEBHOOK_DRAIN_SECONDS)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    close_llm = getattr(ctx.llm, "aclose", None)
    if close_llm is not None:  # the SDK's HTTP connections
        with contextlib.suppress(Exception):
            await close_llm()
    await runner.cleanup()
    log.info("stopped")
    return 0
