"""The direction of imports that docs/architecture.md describes: the pure statistical core
at the bottom, domain packages above it, job handlers above those, and the process (worker,
scheduler, service, HTTP, CLI, demo) on top. A lower layer never imports a higher one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.support.docs import ROOT

# Modules of the process's top layer, as dotted prefixes.
TOP = (
    "optimizer.runtime.worker",
    "optimizer.runtime.schedule",
    "optimizer.runtime.notify",
    "optimizer.service",
    "optimizer.http",
    "optimizer.cli",
    "optimizer.demo",
    "optimizer.ui",
)
JOBS = "optimizer.jobs"
RUNTIME = "optimizer.runtime"
# What handlers receive; it imports no handler.
JOB_CONTEXT = "optimizer.jobs.context"
# Modules of pure rules (no I/O), and what they must not import: the database and the
# modules that talk to it.
PURE = (
    "optimizer.prompt_text",
    "optimizer.variants.validate",
    "optimizer.variants.parse",
    "optimizer.variants.meta_prompt",
    "optimizer.variants.history",
    "optimizer.conversation_turns",
    "optimizer.stats.win_rate",
    "optimizer.jobs.spec",
    "optimizer.jobs.payload_fields",
    "optimizer.routing",
    "optimizer.assignment",
    "optimizer.ui.series",
    "optimizer.ui.charts",
    "optimizer.ui.diff",
    "optimizer.ui.access",
    "optimizer.ui.csrf",
    "optimizer.ui.login_limit",
)
SQL = ("sqlalchemy", "models", "optimizer.db", "optimizer.prompts")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, absolute and dotted (`from optimizer import queue`
    counts as optimizer.runtime.queue)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _package_imports(package: str) -> dict[str, set[str]]:
    folder = ROOT.joinpath(*package.split("."))
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
    return {_module_name(path): _imports(path) for path in files}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(
        name == prefix
        or name.startswith(prefix + ".")
        or (prefix.endswith("cli") and name.startswith(prefix + "_"))
        for prefix in prefixes
    )


def _violations(
    package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    return sorted(
        f"{module} imports {name}"
        for module, names in _package_imports(package).items()
        for name in names
        if _under(name, forbidden) and not _under(name, allowed)
    )


def test_stats_imports_only_the_standard_library_numpy_and_scipy():
    outside = sorted(
        f"{module} imports {name}"
        for module, names in _package_imports("optimizer.stats").items()
        for name in names
        if not name.startswith("optimizer.stats")
        and name.split(".")[0] not in {"numpy", "scipy", "__future__"}
        and name.split(".")[0] not in sys.stdlib_module_names
    )
    assert not outside


def test_models_import_nothing_from_the_service():
    assert not _violations("models", ("optimizer",))


@pytest.mark.parametrize(
    "package", ["optimizer.experiments", "optimizer.patterns", "optimizer.llm"]
)
def test_domain_packages_import_no_job_handler_and_nothing_of_the_process(package: str):
    assert not _violations(package, (JOBS, *TOP))


def test_variants_are_domain_logic_that_imports_no_job_and_no_runtime():
    # Orchestrating a variant_generation run is optimizer/jobs/variant_generation.py's.
    assert not _violations("optimizer.variants", (JOBS, RUNTIME, *TOP))


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_sql_module(module: str):
    assert not _violations(module, SQL)


def test_job_context_imports_no_handler():
    assert not _violations(JOB_CONTEXT, (JOBS, *TOP), allowed=(JOB_CONTEXT,))


def test_job_handlers_import_nothing_of_the_process():
    assert not _violations(JOBS, TOP)


def test_shared_modules_import_no_job_handler_and_nothing_of_the_process():
    shared = [
        path
        for path in sorted((ROOT / "optimizer").glob("*.py"))
        if not _under(_module_name(path), (*TOP, "optimizer.__main__"))
    ]
    assert len(shared) > 10
    violations = sorted(
        f"{_module_name(path)} imports {name}"
        for path in shared
        for name in _imports(path)
        if _under(name, (JOBS, *TOP))
    )
    assert not violations


def test_the_rules_see_a_violation():
    # The checker itself: the service imports the HTTP layer, so it would be flagged.
    assert _violations("optimizer.service", ("optimizer.http",))
    assert _violations("optimizer.prompts", SQL)  # a SQL module, so not in PURE
