"""docker-compose.yml: the service with PostgreSQL.

With Docker Compose installed (the docker CLI's compose plugin, or docker-compose), the file
is validated by `docker compose config` itself; otherwise that test is skipped, saying so
(and fails with REQUIRE_COMPOSE=1, which .ci/run sets after installing docker-compose).
The structural checks below need no docker: PyYAML reads the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.docs import ROOT, settings_read_by_code
from tests.support.required import missing_tool

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile.prompt-worker"
SERVICE = "prompt-worker"
TOKENS = ("ADMIN_TOKEN", "INGEST_TOKEN")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


# --- the file, without docker ---------------------------------------------------------------


def test_every_variable_the_service_gets_is_a_setting_the_code_reads(compose):
    environment = compose["services"][SERVICE]["environment"]
    assert isinstance(environment, dict)
    unknown = set(environment) - settings_read_by_code()
    assert not unknown, f"docker-compose.yml sets variables nothing reads: {sorted(unknown)}"


def test_both_tokens_are_required_with_a_message(compose):
    environment = compose["services"][SERVICE]["environment"]
    for token in TOKENS:
        assert re.fullmatch(rf"\$\{{{token}:\?[^}}]*{token}[^}}]*\}}", environment[token]), (
            f"{token} must be required from the environment with a message naming it "
            f"(${{{token}:?...}}); got {environment[token]!r}"
        )


def test_the_service_uses_postgresql_through_psycopg_once_it_is_healthy(compose):
    services = compose["services"]
    service = services[SERVICE]
    url = service["environment"]["DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")
    database_service = re.search(r"@([\w.-]+):5432/", url).group(1)
    assert services[database_service]["image"] == "postgres:15"
    assert services[database_service]["healthcheck"]["test"]
    assert service["depends_on"][database_service]["condition"] == "service_healthy"


def test_the_service_is_built_from_the_dockerfile_that_migrates_before_it_runs(compose):
    build = compose["services"][SERVICE]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert "command" not in compose["services"][SERVICE], (
        "the image's CMD migrates before it runs; a command here would replace it"
    )
    cmd = re.search(r"^CMD (.*)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert cmd is not None and "prompt-worker migrate && exec prompt-worker run" in cmd.group(1)


def test_the_published_port_is_the_one_the_image_listens_on(compose):
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    image_port = re.search(r"\bPORT=(\d+)", dockerfile).group(1)
    ports = compose["services"][SERVICE]["ports"]
    assert any(mapping.rsplit(":", 1)[-1] == image_port for mapping in ports), ports


# --- the file, validated by Docker Compose ------------------------------------------------


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone is not None else None


@pytest.fixture(scope="module")
def compose_command() -> list[str]:
    command = _compose_command()
    if command is None:
        reason = (
            "docker compose is not installed (neither the docker CLI with its "
            "compose plugin nor docker-compose): docker-compose.yml was not validated "
            "by Docker Compose"
        )
        missing_tool("REQUIRE_COMPOSE", reason)
    return command


def _config(command: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    # An empty env file, so that a developer's .env does not fill in what is being tested.
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    environ = {
        key: value
        for key, value in os.environ.items()
        if key
        not in (
            *TOKENS,
            "POSTGRES_PASSWORD",
            "ANTHROPIC_API_KEY",
            "PROMPT_WORKER_PORT",
            "COMPOSE_FILE",
            "COMPOSE_PROJECT_NAME",
        )
    }
    return subprocess.run(
        [*command, "--env-file", str(empty), "-f", str(COMPOSE_FILE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**environ, **env},
    )


def test_docker_compose_accepts_the_file(compose_command, tmp_path):
    result = _config(
        compose_command,
        tmp_path,
        ADMIN_TOKEN="admin-token-for-config",
        INGEST_TOKEN="ingest-token-for-config",
    )
    assert result.returncode == 0, result.stderr
    assert "postgresql+psycopg://prompt_worker:prompt_worker@db:5432/prompt_worker" in (
        result.stdout
    )
    assert "admin-token-for-config" in result.stdout
    assert "service_healthy" in result.stdout


@pytest.mark.parametrize("missing", TOKENS)
def test_docker_compose_refuses_to_start_without_a_token(compose_command, tmp_path, missing):
    given = {token: f"{token.lower()}-value" for token in TOKENS if token != missing}
    result = _config(compose_command, tmp_path, **given)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr
