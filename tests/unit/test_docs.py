"""The documentation cannot rot silently: links resolve, every setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optimizer.config import Settings, variable
from tests.support.docs import ROOT, anchors, links, settings_read_by_code, slug

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CONFIGURATION = DOCS / "configuration.md"
ENV_EXAMPLE = ROOT / ".env.example"
# Read by a library, not by optimizer/config.py, and documented as such.
READ_BY_LIBRARIES = {"ANTHROPIC_BASE_URL"}
# A variable in a table row: | `NAME` | default | meaning |
_TABLE_VARIABLE = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", re.MULTILINE)
_TABLE_DEFAULT = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|([^|]*)\|", re.MULTILINE)
# A line of .env.example: # NAME=default
_EXAMPLE_DEFAULT = re.compile(r"^#\s*([A-Z][A-Z0-9_]+)=(.*)$", re.MULTILINE)


def _relative(page: Path) -> str:
    return str(page.relative_to(ROOT))


def test_there_is_documentation_to_check():
    assert (DOCS / "README.md").is_file()
    assert len(PAGES) >= 10


@pytest.mark.parametrize("page", PAGES, ids=_relative)
def test_every_relative_link_points_at_an_existing_file_and_heading(page: Path):
    text = page.read_text(encoding="utf-8")
    broken = []
    for line, target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"line {line}: {target}: no such file {resolved}")
            continue
        if (
            anchor
            and resolved.suffix == ".md"
            and anchor not in anchors(resolved.read_text(encoding="utf-8"))
        ):
            broken.append(f"line {line}: {target}: no heading #{anchor} in {_relative(resolved)}")
    assert not broken, f"{_relative(page)}:\n" + "\n".join(broken)


def test_every_page_of_docs_is_in_its_contents_list():
    contents = {
        target.partition("#")[0]
        for _, target in links((DOCS / "README.md").read_text(encoding="utf-8"))
    }
    missing = [
        page.name
        for page in DOCS.glob("*.md")
        if page.name != "README.md" and page.name not in contents
    ]
    assert not missing, f"docs/README.md does not list: {missing}"


def test_every_setting_the_code_reads_is_documented():
    read = settings_read_by_code()
    assert {"DATABASE_URL", "ADMIN_TOKEN", "INGEST_TOKEN", "PORT"} <= read
    documented = set(_TABLE_VARIABLE.findall(CONFIGURATION.read_text(encoding="utf-8")))
    example = ENV_EXAMPLE.read_text(encoding="utf-8")
    in_example = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert not read - documented, (
        f"settings read by optimizer/config.py without a row in docs/configuration.md: "
        f"{sorted(read - documented)}"
    )
    assert not read - in_example, (
        f"settings read by optimizer/config.py missing from .env.example: "
        f"{sorted(read - in_example)}"
    )


def _shows_default(text: str, default: object) -> bool:
    """Whether a default as the docs write it (`8081`, "0 * * * *", unset) is `default`."""
    text = text.strip().strip('`"')
    if default is None:
        return text in ("", "unset")
    if isinstance(default, bool):  # before int: a bool is an int
        return text == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(text) == default
        except ValueError:
            return False
    return text == default


def test_documented_defaults_are_the_models():
    table = dict(_TABLE_DEFAULT.findall(CONFIGURATION.read_text(encoding="utf-8")))
    example = dict(_EXAMPLE_DEFAULT.findall(ENV_EXAMPLE.read_text(encoding="utf-8")))
    wrong = [
        f"{where}: {variable(field)} shows {shown.get(variable(field))!r}, the default "
        f"is {info.default!r}"
        for field, info in Settings.model_fields.items()
        for where, shown in (("docs/configuration.md", table), (".env.example", example))
        if not _shows_default(shown.get(variable(field), "?"), info.default)
    ]
    assert not wrong, "\n".join(wrong)


def test_every_setting_has_a_description():
    assert not [
        field
        for field, info in Settings.model_fields.items()
        if not (info.description or "").strip()
    ]


def test_every_documented_setting_is_read_by_the_code():
    documented = set(_TABLE_VARIABLE.findall(CONFIGURATION.read_text(encoding="utf-8")))
    stale = documented - settings_read_by_code() - READ_BY_LIBRARIES
    assert not stale, f"docs/configuration.md documents settings nothing reads: {sorted(stale)}"


def test_the_readme_quick_start_names_both_tokens_and_both_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for needed in ("ADMIN_TOKEN", "INGEST_TOKEN", "make run", "make test", ".env"):
        assert needed in quick_start, f"the README's quick start does not mention {needed}"


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Signed admin requests (optional)", "signed-admin-requests-optional"),
        ("`full_cycle`", "full_cycle"),
        ("A/A and A/B simulation", "aa-and-ab-simulation"),
        ("The `scope` key", "the-scope-key"),
        ("Users, not conversations", "users-not-conversations"),
    ],
)
def test_anchors_are_computed_as_github_does(heading: str, anchor: str):
    assert slug(heading) == anchor


def test_a_repeated_heading_gets_a_numbered_anchor():
    assert anchors("# A\n\n## Limits\n\n## Limits\n\n```\n## not a heading\n```\n") == {
        "a",
        "limits",
        "limits-1",
    }


def _shell_commands(text: str) -> list[str]:
    """Commands in the pages' code, with backslash-continued lines joined."""
    return re.sub(r"\\\n\s*", " ", text).splitlines()


def test_every_docker_run_example_passes_both_tokens():
    runs = [
        (page, line)
        for page in PAGES
        for line in _shell_commands(page.read_text(encoding="utf-8"))
        if re.search(r"\bdocker run\b", line) and "-e " in line
    ]
    assert runs, "no `docker run` example found"
    for page, line in runs:
        for token in ("ADMIN_TOKEN", "INGEST_TOKEN"):
            assert f"-e {token}=" in line, f"{_relative(page)}: `{line.strip()}` lacks {token}"
