"""Configuration documents shaped like GET /v1/config's, for tests without a service."""

from __future__ import annotations

from typing import Any

HASHING = {"scheme": "sha256-unit-point", "version": 1}


def arm(
    arm_id: int, version: int, weight: float = 1.0, status: str = "active", role: str = "variant"
) -> dict[str, Any]:
    return {
        "id": arm_id,
        "version": version,
        "version_id": 100 + version,
        "content": f"text v{version}",
        "weight": weight,
        "status": status,
        "role": role,
    }


def prompt(
    name: str,
    active: int | None = 1,
    experiment_id: int | None = None,
    arms: list[dict[str, Any]] | None = None,
    status: str = "running",
) -> dict[str, Any]:
    return {
        "name": name,
        "active_version": None
        if active is None
        else {"number": active, "id": 100 + active, "content": f"text v{active}"},
        "experiment": None
        if experiment_id is None
        else {"id": experiment_id, "status": status, "arms": arms or []},
    }


def document(*prompts: dict[str, Any]) -> dict[str, Any]:
    return {
        "hashing": dict(HASHING),
        "generated_at": "2026-12-01T05:00:00Z",
        "prompts": list(prompts),
    }


def ab_document() -> dict[str, Any]:
    """ "bot": experiment 7, control v1 (weight 1) against v2 (weight 3)."""
    return document(
        prompt("bot", 1, 7, [arm(1, 1, 1.0, role="control"), arm(2, 2, 3.0)]),
        prompt("plain", 4),
    )
