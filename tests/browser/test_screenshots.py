"""Screenshots of the main pages for the docs, taken by the browser tests themselves.

Each page of the small seed is shot full length at 1280 CSS pixels wide. With
UPDATE_SCREENSHOTS=1 (`make screenshots`) the PNGs replace docs/screenshots/<name>.png;
otherwise they go to the test's tmp_path, so a test run never changes the tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from selenium.webdriver import Chrome

from tests.support.browser import PNG_MAGIC, Admin, SeededService, full_page_png, page_problems
from tests.support.ui_seed import Seeded

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WIDTH = 1280


def shots(seeded: Seeded) -> dict[str, str]:
    """Each screenshot's name and the page it shows."""
    name = seeded.multi_version_prompt
    assert name is not None and seeded.checked_experiment_id is not None
    return {
        "overview": "/ui/",
        # The small seed's prompts have 4 versions, v2 active: the newest candidate against it.
        "prompt-diff": f"/ui/prompts/{quote(name, safe='')}/diff?from=2&to=4&view=side",
        "experiment": f"/ui/experiments/{seeded.checked_experiment_id}",
        "jobs": "/ui/jobs",
    }


@pytest.mark.parametrize("shot", ["overview", "prompt-diff", "experiment", "jobs"])
def test_screenshot(
    driver: Chrome, admin: Admin, small_ui: SeededService, tmp_path: Path, shot: str
) -> None:
    admin(small_ui.base_url)
    driver.get(small_ui.base_url + shots(small_ui.seeded)[shot])
    assert page_problems(driver) == []
    png = full_page_png(driver, WIDTH)
    assert png[:8] == PNG_MAGIC
    # The IHDR chunk: width and height, big-endian, right after the signature and its header.
    width = int.from_bytes(png[16:20], "big")
    height = int.from_bytes(png[20:24], "big")
    assert width == WIDTH
    assert height >= 600  # a whole page, not an empty viewport
    folder = DOCS if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{shot}.png").write_bytes(png)
