"""A real Chromium against real `prompt-worker run` processes over seeded SQLite files.

One Chromium serves the whole session (starting it costs about a second); each test gets it
back blank, without cookies and with an empty console log. Without Chromium the tests are
skipped with the reason, unless REQUIRE_BROWSER=1 (set by .ci/run), which makes that a
failure: CI never skips them. When a test fails, failure.png, failure.html and the tail of
the service logs are written to the test's tmp_path and named in its report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver import Chrome
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.db import create_db_engine
from tests.support import ui_seed
from tests.support.browser import (
    ADMIN_TOKEN,
    INGEST_TOKEN,
    Admin,
    SeededService,
    chromium_paths,
    new_driver,
    reset,
    sign_in,
)
from tests.support.procs import ServiceProcess, start_service
from tests.support.required import missing_tool
from tests.support.ui_seed import Seeded

HERE = Path(__file__).parent
LOG_TAIL_LINES = 40
NEVER = "0 0 29 2 *"

# Services started by the fixtures below and still running: a failing test gets their logs.
_LIVE: list[ServiceProcess] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chrome]:
    missing = chromium_paths().missing()
    if missing:
        reason = f"not found: {', '.join(missing)} (apt-get install chromium chromium-driver)"
        missing_tool("REQUIRE_BROWSER", f"browser tests cannot run: {reason}")
    driver = new_driver(tmp_path_factory.mktemp("chromium"))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def driver(chromium: Chrome) -> Chrome:
    """The session's Chromium on a blank tab, with no cookies and an empty console log."""
    reset(chromium)
    return chromium


def _serve(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    seed: Callable[[Engine, datetime], Seeded],
) -> Iterator[SeededService]:
    """Seed a fresh SQLite file (before the service starts, so the service reads a finished
    database), then run the service on it with both tokens set."""
    folder = tmp_path_factory.mktemp(f"ui-{name}")
    url = f"sqlite:///{folder / 'prompt_worker.db'}"
    engine = create_db_engine(url)
    try:
        seeded = seed(engine, utcnow())
    finally:
        engine.dispose()
    service = start_service(
        url,
        folder,
        ADMIN_TOKEN=ADMIN_TOKEN,
        INGEST_TOKEN=INGEST_TOKEN,
        # A shell's HMAC secret would turn the UI off (UI_ACCESS=auto); blank means unset.
        ADMIN_HMAC_SECRET="",
        # Ticks only on 29 February: a monitoring tick during a test would add a check to
        # the seeded experiment (one more chart point), a pattern-analysis tick would
        # change the insights under the pages.
        MONITORING_CRON=NEVER,
        PATTERN_ANALYSIS_CRON=NEVER,
    )
    _LIVE.append(service)
    try:
        service.wait_healthy()
        yield SeededService(service=service, seeded=seeded, database_url=url)
    finally:
        _LIVE.remove(service)
        service.kill()


@pytest.fixture(scope="module")
def empty_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededService]:
    """A service on a migrated database with nothing in it."""
    yield from _serve(tmp_path_factory, "empty", ui_seed.seed_empty)


@pytest.fixture(scope="module")
def one_version_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededService]:
    """A service on one prompt with one active version and nothing else."""
    yield from _serve(tmp_path_factory, "one-version", ui_seed.seed_one_version)


@pytest.fixture(scope="module")
def small_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededService]:
    """A service on a few prompts, experiments with checks, insights and jobs of each state."""
    yield from _serve(tmp_path_factory, "small", ui_seed.seed_small)


@pytest.fixture(scope="module")
def large_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededService]:
    """A service on 100 prompts x 50 versions, 1,000 experiments and 200 checks on one."""
    yield from _serve(tmp_path_factory, "large", ui_seed.seed_large)


@pytest.fixture(scope="module")
def acting_ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededService]:
    """The small seed again, for the tests that change things (roll back, stop, cancel,
    add): the pages of small_ui stay as seeded whatever order the tests run in."""
    yield from _serve(tmp_path_factory, "acting", ui_seed.seed_small)


@pytest.fixture(scope="session")
def ui_sessions() -> dict[str, dict[str, Any]]:
    """The session cookie of each service logged in to so far, by base URL."""
    return {}


@pytest.fixture
def admin(driver: Chrome, ui_sessions: dict[str, dict[str, Any]]) -> Admin:
    """`admin(service.base_url)`: the blank browser becomes logged in to that service."""

    def go(base_url: str) -> None:
        sign_in(driver, base_url, ui_sessions)

    return go


@pytest.fixture(autouse=True)
def failure_dir(tmp_path: Path) -> Path:
    """Where a failing test's screenshot, page and service logs go (its own tmp_path)."""
    return tmp_path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    # Written while the report is being made, so it carries the section to every reporter.
    if report.failed and report.when in ("setup", "call"):
        funcargs = getattr(item, "funcargs", {})
        folder = funcargs.get("failure_dir")
        if isinstance(folder, Path):
            report.sections.append(("browser artifacts", _save_artifacts(funcargs, folder)))
    return report


def _save_artifacts(funcargs: dict[str, object], folder: Path) -> str:
    lines = []
    browser = funcargs.get("driver")
    if isinstance(browser, Chrome):
        try:
            lines.append(f"page: {browser.current_url}")
            browser.save_screenshot(str(folder / "failure.png"))
            (folder / "failure.html").write_text(browser.page_source, encoding="utf-8")
            lines += [f"screenshot: {folder / 'failure.png'}", f"html: {folder / 'failure.html'}"]
        except Exception as exc:  # a dead browser must not hide the test's own failure
            lines.append(f"could not capture the page: {exc!r}")
    tails = []
    for service in _LIVE:
        tail = service.logs().splitlines()[-LOG_TAIL_LINES:]
        tails.append(f"== {service.log_path} (last {len(tail)} lines)\n" + "\n".join(tail))
    if tails:
        (folder / "failure-service.log").write_text("\n\n".join(tails) + "\n", encoding="utf-8")
        lines.append(f"service logs: {folder / 'failure-service.log'}")
        lines += tails
    return "\n".join(lines)
