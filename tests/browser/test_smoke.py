"""First browser tests: Chromium works here, and the login, session and CSRF guard of /ui/
behave in a real browser against a real `prompt-worker run`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from optimizer.ui.routes_auth import INGEST_REFUSED
from tests.support.browser import (
    ADMIN_TOKEN,
    INGEST_TOKEN,
    WAIT,
    SeededService,
    console_errors,
    login,
    to_next_page,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def path_of(driver: Chrome) -> str:
    return urlsplit(driver.current_url).path


def page_text(driver: Chrome) -> str:
    return driver.find_element(By.TAG_NAME, "body").text


def test_chromium_renders_unicode_and_takes_a_screenshot(driver: Chrome, tmp_path: Path):
    driver.get("data:text/html;charset=utf-8,<title>t</title><h1 id=h>Ωmega ✓ — ünïcode</h1>")
    assert driver.find_element(By.ID, "h").text == "Ωmega ✓ — ünïcode"
    shot = tmp_path / "shot.png"
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == PNG_MAGIC
    assert console_errors(driver) == []


def test_login_page_renders_without_console_errors(driver: Chrome, empty_ui: SeededService):
    driver.get(f"{empty_ui.base_url}/ui/login")
    token = driver.find_element(By.NAME, "token")
    assert token.get_attribute("type") == "password"
    form = token.find_element(By.XPATH, "./ancestor::form")
    assert (form.get_attribute("method") or "").lower() == "post"
    assert driver.find_element(By.NAME, "nonce").get_attribute("value")
    assert console_errors(driver) == []


def test_a_page_without_a_session_sends_the_browser_to_login(
    driver: Chrome, empty_ui: SeededService
):
    driver.get(f"{empty_ui.base_url}/ui/jobs")
    assert path_of(driver) == "/ui/login"
    assert parse_qs(urlsplit(driver.current_url).query) == {"next": ["/ui/jobs"]}


def test_the_admin_token_logs_in_and_lands_on_the_overview(driver: Chrome, empty_ui: SeededService):
    login(driver, empty_ui.base_url, ADMIN_TOKEN)
    assert path_of(driver) == "/ui/"
    assert driver.get_cookie("pw_ui") is not None
    # The shell of every page: the nav and a logout form.
    hrefs = {a.get_attribute("href") for a in driver.find_elements(By.CSS_SELECTOR, "nav a")}
    assert f"{empty_ui.base_url}/ui/jobs" in hrefs
    driver.find_element(By.CSS_SELECTOR, "form[action='/ui/logout']")
    assert console_errors(driver) == []


def test_the_ingest_token_is_refused_with_a_message(driver: Chrome, empty_ui: SeededService):
    login(driver, empty_ui.base_url, INGEST_TOKEN)
    assert path_of(driver) == "/ui/login"
    assert driver.find_element(By.CSS_SELECTOR, "[role=alert]").text == INGEST_REFUSED
    assert driver.get_cookie("pw_ui") is None
    driver.get(f"{empty_ui.base_url}/ui/")
    assert path_of(driver) == "/ui/login"


FORGE = """
const f = document.createElement('form');
f.method = 'post';
f.action = '/ui/logout';
if (arguments[0] !== null) {
  const field = document.createElement('input');
  field.type = 'hidden';
  field.name = 'csrf';
  field.value = arguments[0];
  f.appendChild(field);
}
document.body.appendChild(f);
f.submit();
"""


@pytest.mark.parametrize("csrf", [None, "", "forged-<script>-Ω"], ids=["absent", "blank", "wrong"])
def test_a_forged_post_without_the_csrf_token_gets_the_403_page(
    driver: Chrome, empty_ui: SeededService, csrf: str | None
):
    login(driver, empty_ui.base_url, ADMIN_TOKEN)
    assert path_of(driver) == "/ui/"
    # A form the page never had: same origin and the session cookie, but not its csrf token.
    to_next_page(driver, lambda: driver.execute_script(FORGE, csrf))
    assert path_of(driver) == "/ui/logout"
    assert "missing or invalid CSRF token" in page_text(driver)
    # The forged logout did nothing: the session still opens pages.
    driver.get(f"{empty_ui.base_url}/ui/")
    assert path_of(driver) == "/ui/"


def test_after_logout_the_back_button_shows_no_page_of_the_session(
    driver: Chrome, small_ui: SeededService
):
    login(driver, small_ui.base_url, ADMIN_TOKEN)
    assert path_of(driver) == "/ui/"
    driver.get(f"{small_ui.base_url}/ui/jobs")
    logout = driver.find_element(By.CSS_SELECTOR, "form[action='/ui/logout'] button")
    logout.click()
    WebDriverWait(driver, WAIT).until(lambda d: path_of(d) == "/ui/login")
    for _ in range(2):  # back to the jobs page, then to the overview
        driver.back()
        # A page restored from the back/forward cache reloads, and the server sends the
        # browser without a session to the login page.
        WebDriverWait(driver, WAIT).until(lambda d: path_of(d) == "/ui/login")
        assert "Log out" not in page_text(driver)
