"""The dashboard in a real Chromium against real `prompt-worker run` processes: every page
renders on every seed, the experiment chart has a point per stored check, two versions
compare, and the actions (roll back, stop, cancel, add a job) work through their forms and
change the database. Live job progress moves without a reload.

Reading tests use the seeded services as they are; the tests that change things share
`acting_ui`, a service of its own, and each changes different rows of it.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from optimizer.ui.web import ACTOR, NOTICES
from tests.support.browser import (
    ADMIN_TOKEN,
    WAIT,
    Admin,
    SeededService,
    console_errors,
    page_problems,
    run_sql,
    to_next_page,
)
from tests.support.ui_seed import Seeded

ALL_PAGES = (
    "overview",
    "prompts",
    "prompt",
    "version",
    "diff",
    "experiments",
    "experiment",
    "insights",
    "jobs",
    "job",
    "new job",
)


def pages(seeded: Seeded) -> dict[str, str]:
    """Each page's path on a seed. Pages of one thing (a prompt, a version, an experiment,
    a job) are there when the seed has such a thing: an empty database has none."""
    found = {
        "overview": "/ui/",
        "prompts": "/ui/prompts",
        "experiments": "/ui/experiments",
        "insights": "/ui/insights",
        "jobs": "/ui/jobs",
        "new job": "/ui/jobs/new",
    }
    if seeded.prompt_names:
        name = quote(seeded.multi_version_prompt or seeded.prompt_names[0], safe="")
        found["prompt"] = f"/ui/prompts/{name}"
        found["version"] = f"/ui/prompts/{name}/versions/1"
        found["diff"] = f"/ui/prompts/{name}/diff?view=side"
    if seeded.running_experiment_id is not None:
        found["experiment"] = f"/ui/experiments/{seeded.running_experiment_id}"
    if seeded.failed_job_id is not None:
        found["job"] = f"/ui/jobs/{seeded.failed_job_id}"
    return found


def path_of(driver: Chrome) -> str:
    return urlsplit(driver.current_url).path


def query_of(driver: Chrome) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


def texts(driver: Chrome, css: str) -> list[str]:
    """The textContent of every element matching `css`, in one round trip."""
    found: list[str] = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent);", css
    )
    return found


def submit(driver: Chrome, button: WebElement) -> None:
    """Click a form's button and wait for the page it leads to."""
    to_next_page(driver, button.click)


def notice(driver: Chrome) -> str:
    return driver.find_element(By.CSS_SELECTOR, "p.notice[role=status]").text


def api(service: SeededService, path: str) -> Any:
    """GET an admin API document. The header carries the token as UTF-8 bytes: it is not
    Latin-1, which is all http.client encodes by itself."""
    req = urllib.request.Request(service.base_url + path)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}".encode())  # type: ignore[arg-type]
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


# --- every page on every seed ------------------------------------------------------------


@pytest.mark.parametrize(
    ("seed", "expected"),
    [
        ("empty_ui", {"overview", "prompts", "experiments", "insights", "jobs", "new job"}),
        (
            "one_version_ui",
            {"overview", "prompts", "prompt", "version", "diff"}
            | {"experiments", "insights", "jobs", "new job"},
        ),
        ("large_ui", set(ALL_PAGES)),
    ],
)
def test_every_page_renders_without_errors(
    driver: Chrome,
    admin: Admin,
    request: pytest.FixtureRequest,
    seed: str,
    expected: set[str],
) -> None:
    service: SeededService = request.getfixturevalue(seed)
    found = pages(service.seeded)
    assert set(found) == expected
    admin(service.base_url)
    problems = {}
    for name, path in found.items():
        driver.get(service.base_url + path)
        found_problems = page_problems(driver)
        if found_problems:
            problems[name] = (path, found_problems)
    assert problems == {}


def test_the_one_version_pages_say_there_is_nothing_to_compare(
    driver: Chrome, admin: Admin, one_version_ui: SeededService
) -> None:
    admin(one_version_ui.base_url)
    name = quote(one_version_ui.seeded.prompt_names[0], safe="")
    driver.get(f"{one_version_ui.base_url}/ui/prompts/{name}/diff")
    assert "identical" in driver.find_element(By.CSS_SELECTOR, "p.empty").text
    # One version: no compare form and nothing earlier to roll back to.
    driver.get(f"{one_version_ui.base_url}/ui/prompts/{name}")
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/diff']")
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/rollback']")
    assert console_errors(driver) == []


# --- the experiment chart ------------------------------------------------------------------

# [arm label, analysis id] of every point of the lift chart.
CHART_POINTS = """
return Array.from(
  document.querySelectorAll('svg.chart-lift g.arm circle.point[data-analysis-id]'),
  c => [c.closest('g.arm').getAttribute('data-arm'), Number(c.getAttribute('data-analysis-id'))]
);
"""


@pytest.mark.parametrize("seed", ["small_ui", "large_ui"])
def test_the_lift_chart_has_one_point_per_stored_check(
    driver: Chrome, admin: Admin, request: pytest.FixtureRequest, seed: str
) -> None:
    service: SeededService = request.getfixturevalue(seed)
    experiment_id = service.seeded.checked_experiment_id
    assert experiment_id is not None
    stored = [
        row[0]
        for row in run_sql(
            service.database_url,
            "SELECT id FROM ai_ab_experiment_analyses WHERE experiment_id = :id ORDER BY id",
            {"id": experiment_id},
        )
    ]
    assert len(stored) == service.seeded.checks
    admin(service.base_url)
    driver.get(f"{service.base_url}/ui/experiments/{experiment_id}")
    points: list[list[object]] = driver.execute_script(CHART_POINTS)
    by_arm: dict[str, list[int]] = {}
    for arm, analysis_id in points:
        by_arm.setdefault(str(arm), []).append(int(str(analysis_id)))
    # Each arm's line has at most one point per check, and every check is on the chart; the
    # arm that ran to the end has them all (the other one was stopped part of the way).
    assert by_arm
    for ids in by_arm.values():
        assert Counter(ids).most_common(1)[0][1] == 1
    assert sorted({i for ids in by_arm.values() for i in ids}) == stored
    assert max(len(ids) for ids in by_arm.values()) == len(stored)
    checks_fact = driver.find_element(
        By.XPATH, "//dt[normalize-space()='Checks stored']/following-sibling::dd[1]"
    )
    assert checks_fact.text == f"{len(stored):,}"
    assert console_errors(driver) == []


# --- a version's replay -------------------------------------------------------------------


def test_a_replayed_version_shows_its_win_rates_and_both_answers_side_by_side(
    driver: Chrome, admin: Admin, small_ui: SeededService
) -> None:
    name = small_ui.seeded.multi_version_prompt
    assert name is not None
    admin(small_ui.base_url)
    driver.get(f"{small_ui.base_url}/ui/prompts/{quote(name, safe='')}/versions/4")
    assert page_problems(driver) == []
    bars = driver.find_elements(By.CSS_SELECTOR, "#replay svg.win-rate-bar")
    assert len(bars) == 2 and all(bar.is_displayed() and bar.size["width"] > 0 for bar in bars)
    evaluations = driver.find_elements(By.CSS_SELECTOR, "#replay article.evaluation")
    assert len(evaluations) == 14  # the seed's REPLAYED, one page
    details = evaluations[0].find_element(By.TAG_NAME, "details")
    assert not details.find_element(By.TAG_NAME, "pre").is_displayed()
    details.find_element(By.TAG_NAME, "summary").click()
    columns = details.find_elements(By.CSS_SELECTOR, ".grid > div")
    assert len(columns) == 2 and all(c.is_displayed() for c in columns)
    assert columns[0].location["y"] == columns[1].location["y"]  # side by side
    assert columns[0].location["x"] < columns[1].location["x"]
    assert console_errors(driver) == []


# --- comparing versions ------------------------------------------------------------------


def test_two_versions_compare_inline_and_side_by_side(
    driver: Chrome, admin: Admin, small_ui: SeededService
) -> None:
    name = small_ui.seeded.multi_version_prompt
    assert name is not None
    document = api(small_ui, f"/prompts/{quote(name, safe='')}")
    content = {v["number"]: v["content"] for v in document["versions"]}
    old, new = min(content), max(content)
    admin(small_ui.base_url)
    driver.get(f"{small_ui.base_url}/ui/prompts/{quote(name, safe='')}")
    form = driver.find_element(By.CSS_SELECTOR, "form[action$='/diff']")
    Select(form.find_element(By.NAME, "from")).select_by_value(str(old))
    Select(form.find_element(By.NAME, "to")).select_by_value(str(new))
    Select(form.find_element(By.NAME, "view")).select_by_value("inline")
    submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    assert path_of(driver) == f"/ui/prompts/{name}/diff"
    assert query_of(driver) == {"from": [str(old)], "to": [str(new)], "view": ["inline"]}
    inserted, deleted = texts(driver, "div.diff ins"), texts(driver, "div.diff del")
    assert inserted and deleted
    assert all(part in content[new] for part in inserted)
    assert all(part in content[old] for part in deleted)
    # Whole lines: an inserted row (after its "+") is a line of the new text, a deleted one
    # of the old text.
    new_lines, old_lines = content[new].splitlines(), content[old].splitlines()
    assert all(row.lstrip()[1:] in new_lines for row in texts(driver, "tr.ins td.code"))
    assert all(row.lstrip()[1:] in old_lines for row in texts(driver, "tr.del td.code"))
    assert texts(driver, "tr.hunk td")

    submit(driver, driver.find_element(By.LINK_TEXT, "Side by side"))
    assert query_of(driver)["view"] == ["side"]
    assert driver.find_elements(By.CSS_SELECTOR, "div.diff.side table")
    # Deletions on the left (old) side only, insertions on the right (new) side only.
    assert texts(driver, "td.code.del ins") == []
    assert texts(driver, "td.code.ins del") == []
    assert sorted(texts(driver, "td.code.ins ins")) == sorted(inserted)
    assert sorted(texts(driver, "td.code.del del")) == sorted(deleted)
    assert console_errors(driver) == []


# --- actions (on acting_ui) --------------------------------------------------------------


def test_roll_back_to_an_earlier_version(
    driver: Chrome, admin: Admin, acting_ui: SeededService
) -> None:
    name = acting_ui.seeded.multi_version_prompt
    assert name is not None
    path = f"/prompts/{quote(name, safe='')}"
    before = api(acting_ui, path)
    active = before["active_version"]
    target = min(v["number"] for v in before["versions"])
    assert target < active
    reason = "Regression on mobile — back to v1 <script>alert(1)</script> ✓"

    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui{path}")
    Select(driver.find_element(By.ID, "rollback-version")).select_by_value(str(target))
    driver.find_element(By.ID, "rollback-reason").send_keys(reason)
    form = driver.find_element(By.CSS_SELECTOR, "form[action$='/rollback']")
    submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    assert path_of(driver) == f"/ui/prompts/{name}"
    assert notice(driver) == NOTICES["rolled-back"]
    active_fact = driver.find_element(
        By.XPATH, "//dt[normalize-space()='Active version']/following-sibling::dd[1]"
    )
    assert active_fact.text == f"v{target}"
    # The newest activation is this one, with the reason as typed (escaped, not run).
    newest = driver.find_elements(By.XPATH, "//h2[.='Activation history']/following::tbody[1]/tr")
    cells = [c.text for c in newest[0].find_elements(By.TAG_NAME, "td")]
    assert cells[1:] == [ACTOR, f"v{active} → v{target}", reason]
    assert console_errors(driver) == []

    after = api(acting_ui, path)
    assert after["active_version"] == target
    rows = run_sql(
        acting_ui.database_url,
        "SELECT a.actor, a.reason FROM prompt_activations a JOIN prompts p "
        "ON p.id = a.prompt_id WHERE p.name = :name ORDER BY a.id DESC LIMIT 1",
        {"name": name},
    )
    assert [tuple(r) for r in rows] == [(ACTOR, reason)]


FORGE_STOP = """
const f = document.createElement('form');
f.method = 'post';
f.action = arguments[0];
const field = document.createElement('input');
field.name = 'reason';
field.value = 'forged';
f.appendChild(field);
document.body.appendChild(f);
f.submit();
"""


def test_stop_an_experiment_but_not_with_a_forged_form(
    driver: Chrome, admin: Admin, acting_ui: SeededService
) -> None:
    experiment_id = acting_ui.seeded.running_experiment_id
    assert experiment_id is not None
    page = f"{acting_ui.base_url}/ui/experiments/{experiment_id}"
    admin(acting_ui.base_url)
    driver.get(page)

    # A form the page never had (same origin, session cookie, no csrf field): refused.
    to_next_page(
        driver, lambda: driver.execute_script(FORGE_STOP, f"/ui/experiments/{experiment_id}/stop")
    )
    assert driver.title.startswith("403")
    assert "missing or invalid CSRF token" in driver.find_element(By.TAG_NAME, "body").text
    console_errors(driver)  # the 403 itself is logged as a failed load: expected here
    experiment = api(acting_ui, f"/experiments/{experiment_id}")
    assert experiment["status"] == "running"

    driver.get(page)
    h1 = driver.find_element(By.TAG_NAME, "h1")
    assert h1.find_element(By.CSS_SELECTOR, ".badge").text == "running"
    reason = "Stopped from the dashboard: the variant reads as pushy «trop insistant»"
    driver.find_element(By.ID, "stop-reason").send_keys(reason)
    form = driver.find_element(By.CSS_SELECTOR, "form[action$='/stop']")
    submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    assert path_of(driver) == f"/ui/experiments/{experiment_id}"
    assert notice(driver) == NOTICES["experiment-stopped"]
    h1 = driver.find_element(By.TAG_NAME, "h1")
    assert h1.find_element(By.CSS_SELECTOR, ".badge").text == "stopped"
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/stop']")
    assert console_errors(driver) == []
    experiment = api(acting_ui, f"/experiments/{experiment_id}")
    assert experiment["status"] == "stopped"


def test_cancel_the_pending_job(driver: Chrome, admin: Admin, acting_ui: SeededService) -> None:
    job_id = acting_ui.seeded.pending_job_id
    assert job_id is not None
    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui/jobs")
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-job-id='{job_id}']")
    assert row.get_attribute("data-status") == "pending"
    submit(driver, row.find_element(By.CSS_SELECTOR, "form[action$='/cancel'] button"))

    assert path_of(driver) == f"/ui/jobs/{job_id}"
    assert notice(driver) == NOTICES["job-cancelled"]
    assert "cancelled" in texts(driver, ".badge")
    assert not driver.find_elements(By.CSS_SELECTOR, "form[action$='/cancel']")
    assert console_errors(driver) == []
    job = api(acting_ui, f"/jobs/{job_id}")
    assert job["status"] == "cancelled"


def fill_new_job(driver: Chrome, values: dict[str, str]) -> None:
    Select(driver.find_element(By.ID, "type")).select_by_value(values["type"])
    for field in ("prompt", "payload", "priority", "run_at"):
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(values[field])
    form = driver.find_element(By.CSS_SELECTOR, "form[action='/ui/jobs/new']")
    submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def shown_values(driver: Chrome) -> dict[str, str]:
    return {
        "type": Select(driver.find_element(By.ID, "type")).first_selected_option.get_attribute(
            "value"
        )
        or "",
        **{
            field: driver.find_element(By.ID, field).get_attribute("value") or ""
            for field in ("prompt", "payload", "priority", "run_at")
        },
    }


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"payload": '{"x": '}, "payload", "json"),
        ({"payload": '{"n": "three"}'}, "payload", "n"),
        ({"priority": "high"}, "priority", "priority"),
        ({"run_at": "next tuesday"}, "run_at", "run_at"),
    ],
    ids=["broken-json", "wrong-type", "priority", "run-at"],
)
def test_a_bad_new_job_shows_the_error_by_its_field_and_keeps_the_values(
    driver: Chrome,
    admin: Admin,
    acting_ui: SeededService,
    change: dict[str, str],
    field: str,
    words: str,
) -> None:
    prompt = acting_ui.seeded.prompt_names[-1]
    values = {
        "type": "variant_generation",
        "prompt": prompt,
        "payload": '{"n": 2}',
        "priority": "3",
        "run_at": "2099-01-01T00:00:00Z",
        **change,
    }
    (jobs_before,) = run_sql(acting_ui.database_url, "SELECT count(*) FROM optimization_jobs", {})
    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui/jobs/new")
    fill_new_job(driver, values)

    assert path_of(driver) == "/ui/jobs/new"
    assert driver.title.startswith("Add a job")  # the form again, not an error page
    error = driver.find_element(By.ID, f"error-{field}")
    assert words in error.text.lower()
    # The message sits right after its own field, which points at it.
    box = driver.find_element(By.ID, field)
    assert box.get_attribute("aria-invalid") == "true"
    assert box.get_attribute("aria-describedby") == f"error-{field}"
    assert len(driver.find_elements(By.CSS_SELECTOR, ".field-error")) == 1
    assert shown_values(driver) == values
    (jobs_after,) = run_sql(acting_ui.database_url, "SELECT count(*) FROM optimization_jobs", {})
    assert jobs_after == jobs_before


def test_a_good_new_job_lands_on_its_page(
    driver: Chrome, admin: Admin, acting_ui: SeededService
) -> None:
    prompt = acting_ui.seeded.prompt_names[-1]
    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui/jobs/new")
    # Far in the future, so the service's worker leaves it alone.
    fill_new_job(
        driver,
        {
            "type": "variant_generation",
            "prompt": prompt,
            "payload": '{"n": 2, "model": "sonnet"}',
            "priority": "7",
            "run_at": "2099-01-01T00:00:00Z",
        },
    )
    assert notice(driver) == NOTICES["job-added"]
    parts = path_of(driver).split("/")
    assert parts[:3] == ["", "ui", "jobs"]
    job_id = int(parts[3])
    assert f"#{job_id}" in driver.find_element(By.TAG_NAME, "h1").text
    assert console_errors(driver) == []
    job = api(acting_ui, f"/jobs/{job_id}")
    assert (job["type"], job["status"], job["priority"]) == ("variant_generation", "pending", 7)
    assert job["payload"] == {"prompt": prompt, "n": 2, "model": "sonnet"}


# --- live progress -----------------------------------------------------------------------


def test_the_jobs_page_moves_a_running_jobs_progress_without_a_reload(
    driver: Chrome, admin: Admin, acting_ui: SeededService
) -> None:
    job_id = acting_ui.seeded.running_job_id
    assert job_id is not None
    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui/jobs")
    row = f"tr[data-job-id='{job_id}']"
    bar = driver.find_element(By.CSS_SELECTOR, f"{row} progress")
    first = bar.get_attribute("value")
    driver.execute_script("window.__marker = 1;")

    step = "writing insights: 7 of 9 — «fin» ✓"
    progress = 87 if first != "87" else 88
    run_sql(
        acting_ui.database_url,
        "UPDATE optimization_jobs SET progress = :p, current_step = :s WHERE id = :id",
        {"p": progress, "s": step, "id": job_id},
    )

    def moved(d: Chrome) -> bool:
        shown = d.execute_script(
            "const r = document.querySelector(arguments[0]);"
            "return [r.querySelector('progress').value, r.querySelector('.job-step').textContent];",
            row,
        )
        return bool(shown == [progress, step])

    WebDriverWait(driver, WAIT).until(moved)
    assert driver.execute_script("return window.__marker;") == 1
    assert console_errors(driver) == []
    job = api(acting_ui, f"/jobs/{job_id}")
    assert (job["progress"], job["current_step"]) == (progress, step)


def test_a_job_that_finishes_while_shown_gets_its_page_loaded_again(
    driver: Chrome, admin: Admin, acting_ui: SeededService
) -> None:
    # A status change changes more than the live cells (buttons, counts, the result): the
    # page is asked for again, so no stale Cancel button stays.
    job_id = acting_ui.seeded.running_job_id
    assert job_id is not None
    admin(acting_ui.base_url)
    driver.get(f"{acting_ui.base_url}/ui/jobs/{job_id}")
    assert driver.find_elements(By.CSS_SELECTOR, f"form[action='/ui/jobs/{job_id}/cancel']")
    to_next_page(
        driver,
        lambda: run_sql(
            acting_ui.database_url,
            "UPDATE optimization_jobs SET status = 'completed', progress = 100, "
            'result = \'{"answer": "done ✓"}\' WHERE id = :id',
            {"id": job_id},
        ),
    )
    assert not driver.find_elements(By.CSS_SELECTOR, f"form[action='/ui/jobs/{job_id}/cancel']")
    assert "done ✓" in driver.find_element(By.TAG_NAME, "body").text
    assert console_errors(driver) == []
