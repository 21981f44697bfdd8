"""Drive the Debian Chromium through its own chromedriver, offline, for the /ui/ tests.

Selenium is told where the driver is (Service(executable_path=...)), so Selenium Manager
never runs and nothing is downloaded; SE_OFFLINE=1 keeps it offline should that path ever
be dropped. Debian builds chromium and chromium-driver from one source package, so their
versions always match.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium.common.exceptions import WebDriverException
from selenium.webdriver import Chrome
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import text

from optimizer.db import create_db_engine
from optimizer.ui.guard import COOKIE
from tests.support.procs import ServiceProcess
from tests.support.ui_seed import Seeded

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# An error page's title starts with its status ("404 Not found · prompt-worker").
ERROR_TITLE = re.compile(r"^[45]\d\d\b")

ADMIN_TOKEN = "browser-admin-token-Ωmega-0123456789"
INGEST_TOKEN = "browser-ingest-token-0123456789"

# The `admin` fixture: admin(base_url) logs the blank browser in to that service.
Admin = Callable[[str], None]

# Seconds to wait for a page change; generous for two shared cores, never a timing assertion.
WAIT = 20.0

# --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start.
# The background-networking flags stop Chromium from calling Google hosts, which the closed
# network refuses (and which would slow every start).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1280,900",
)


@dataclass(frozen=True)
class BrowserPaths:
    chromium: str
    chromedriver: str

    def missing(self) -> list[str]:
        """The binaries that are not there (empty when both are)."""
        return [p for p in (self.chromium, self.chromedriver) if not _executable(p)]


@dataclass(frozen=True)
class SeededService:
    """A running `prompt-worker run` over a database seeded before it started."""

    service: ServiceProcess
    seeded: Seeded
    database_url: str

    @property
    def base_url(self) -> str:
        return self.service.base_url


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def chromium_paths() -> BrowserPaths:
    """CHROMIUM_BIN and CHROMEDRIVER when set, else Debian's paths."""
    return BrowserPaths(
        chromium=os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium",
        chromedriver=os.environ.get("CHROMEDRIVER")
        or shutil.which("chromedriver")
        or "/usr/bin/chromedriver",
    )


def new_driver(tmp: Path) -> Chrome:
    """A headless Chromium with its profile and chromedriver log under `tmp`."""
    os.environ["SE_OFFLINE"] = "1"
    os.environ["SE_AVOID_STATS"] = "1"
    paths = chromium_paths()
    opts = Options()
    opts.binary_location = paths.chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp / 'profile'}")
    # Keeps every console message so tests can require an empty error log.
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=paths.chromedriver, log_output=str(tmp / "chromedriver.log"))
    return Chrome(options=opts, service=service)


def reset(driver: Chrome) -> None:
    """A blank tab with no cookies and an empty console log, so tests do not leak state.

    Cookies ignore the port, so a session cookie of one test service would otherwise be
    sent to the next one."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    console_log(driver)


NEXT_PAGE_LOADED = "return window.pwLeaving === undefined && document.readyState === 'complete';"


def to_next_page(driver: Chrome, act: Callable[[], object]) -> None:
    """Do `act` (a click, a key press, a script that submits a form) and wait until the page
    it leads to has loaded.

    The old page is marked with a property of its window, which a new document does not
    have. (Waiting for an old element to go stale races with the navigation: while it
    happens, ChromeDriver can answer a question about the old element with an "unknown
    error" instead of "stale".) Errors while the page changes are waited through."""
    driver.execute_script("window.pwLeaving = true;")
    act()
    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(NEXT_PAGE_LOADED) is True
    )


def submit_and_wait(driver: Chrome, field_name: str, value: str) -> None:
    """Type `value` into the form field `field_name`, press Enter, and wait for the next page."""
    field = driver.find_element(By.NAME, field_name)
    field.clear()
    to_next_page(driver, lambda: field.send_keys(value, Keys.ENTER))


def login(driver: Chrome, base_url: str, token: str) -> None:
    """Fill the /ui/login form with `token` and submit it; the caller checks where it landed."""
    driver.get(f"{base_url}/ui/login")
    submit_and_wait(driver, "token", token)


def console_log(driver: Chrome) -> list[dict[str, object]]:
    """Every console entry since the last read (reading drains Chromium's buffer)."""
    entries: list[dict[str, object]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return entries


def console_errors(driver: Chrome) -> list[str]:
    """Console messages of level SEVERE since the last read: failed loads, script errors,
    CSP refusals."""
    return [str(e.get("message", "")) for e in console_log(driver) if e.get("level") == "SEVERE"]


def sign_in(driver: Chrome, base_url: str, sessions: dict[str, dict[str, Any]]) -> None:
    """Be logged in to the service at `base_url`: through the login form the first time,
    after that by putting back the session cookie that login set (`sessions` keeps it per
    service), which saves a form round trip per test."""
    cookie = sessions.get(base_url)
    if cookie is None:
        login(driver, base_url, ADMIN_TOKEN)
        found = driver.get_cookie(COOKIE)
        if found is None:
            raise AssertionError(f"login to {base_url} set no {COOKIE} cookie")
        sessions[base_url] = found
        return
    driver.execute_cdp_cmd(
        "Network.setCookie",
        {
            "name": cookie["name"],
            "value": cookie["value"],
            "url": f"{base_url}/ui/",
            "path": cookie["path"],
            "httpOnly": True,
            "sameSite": "Strict",
        },
    )


def page_problems(driver: Chrome) -> list[str]:
    """What makes the current page not a good page: the login form instead of it, an error
    page (a 4xx/5xx title or the error section), no visible h1, console errors."""
    problems = []
    path = driver.current_url.split("?", 1)[0]
    if path.endswith("/ui/login"):
        problems.append("sent to the login page")
    if ERROR_TITLE.match(driver.title) or driver.find_elements(By.CSS_SELECTOR, ".error-page"):
        problems.append(f"error page: {driver.title!r}")
    headings = driver.find_elements(By.TAG_NAME, "h1")
    if not headings or not headings[0].is_displayed() or not headings[0].text.strip():
        problems.append("no visible h1")
    problems += [f"console: {message}" for message in console_errors(driver)]
    return problems


def run_sql(database_url: str, statement: str, params: Mapping[str, object]) -> list[Any]:
    """One statement on the service's database from outside (what another process would do);
    the rows it returns, if any."""
    engine = create_db_engine(database_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), dict(params))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def full_page_png(driver: Chrome, width: int) -> bytes:
    """The whole page at `width` CSS pixels as PNG: the viewport is set to that width, then
    to the document's height at that width, so nothing is cut off or scrolled."""
    metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        metrics["height"] = max(height, 1)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        return driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
