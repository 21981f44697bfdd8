"""Every file the dashboard needs at run time is declared as package data in pyproject.toml,
so a non-editable install (the Dockerfile's `pip install .`) carries it."""

from __future__ import annotations

import fnmatch
import tomllib

from tests.support.docs import ROOT

UI = ROOT / "optimizer" / "ui"


def _globs() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(project["tool"]["setuptools"]["package-data"]["optimizer.ui"])


def test_every_template_and_static_file_matches_a_package_data_glob():
    globs = _globs()
    files = [
        path.relative_to(UI).as_posix()
        for folder in ("templates", "static")
        for path in (UI / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert "templates/base.html" in files and "static/ui.css" in files
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, g) for g in globs)]
    assert not missing, f"not in [tool.setuptools.package-data] optimizer.ui: {missing}"


def test_the_folders_hold_no_subfolders_the_globs_would_miss():
    nested = [
        path.relative_to(UI).as_posix()
        for folder in ("templates", "static")
        for path in (UI / folder).iterdir()
        if path.is_dir() and path.name != "__pycache__"
    ]
    assert not nested
