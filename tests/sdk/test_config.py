"""Parsing GET /v1/config and answering get_prompt from it (no service): resolve's rules,
fallbacks, and what raises."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from prompt_worker_client import InvalidUnitId, PromptNotFound, ServedPrompt
from prompt_worker_client._core import Core, Options
from prompt_worker_client.assignment import pick_arm
from prompt_worker_client.config import parse_config
from prompt_worker_client.errors import ConfigError

from tests.sdk.documents import ab_document, arm, document, prompt

UNITS = [f"u{i}" for i in range(400)]


def core(doc: dict[str, Any] | None, **options: Any) -> Core:
    client = Core(Options("http://127.0.0.1:9", "token", **options))
    if doc is not None:
        client.config = parse_config(doc, '"tag"')
    return client


def test_running_experiment_places_units_by_the_scheme() -> None:
    client = core(ab_document())
    seen = set()
    for unit in UNITS:
        served = client.get_prompt("bot", unit)
        expected_arm = pick_arm(7, unit, [(1, 1.0), (2, 3.0)])
        assert served.arm is not None and served.arm.id == expected_arm
        assert served.version == expected_arm and served.experiment_id == 7
        assert served.content == f"text v{expected_arm}" and served.version_id == 100 + expected_arm
        assert served.arm.role == ("control" if expected_arm == 1 else "variant")
        assert not served.fallback
        seen.add(expected_arm)
    assert seen == {1, 2}


def test_a_stopped_arms_units_get_the_control_and_no_slice_moves() -> None:
    arms = [arm(1, 1, role="control"), arm(2, 2, 2.0), arm(3, 3, 0.5)]
    live = core(document(prompt("bot", 1, 9, arms)))
    arms_after = copy.deepcopy(arms)
    arms_after[1]["status"] = "stopped"
    stopped = core(document(prompt("bot", 1, 9, arms_after)))
    moved_to_control = 0
    for unit in UNITS:
        before, after = live.get_prompt("bot", unit), stopped.get_prompt("bot", unit)
        assert before.arm is not None and after.arm is not None
        if before.arm.id == 2:
            assert (after.version, after.arm.id, after.arm.role) == (1, 1, "control")
            assert after.experiment_id == 9
            moved_to_control += 1
        else:
            assert after == before
    assert moved_to_control > 0


def test_paused_experiment_serves_the_control_without_experiment() -> None:
    doc = document(prompt("bot", 1, 7, [arm(1, 1, role="control"), arm(2, 2)], status="paused"))
    for unit in UNITS[:50]:
        assert core(doc).get_prompt("bot", unit) == ServedPrompt("bot", "text v1", 1, 101)


def test_no_experiment_serves_the_active_version() -> None:
    served = core(ab_document()).get_prompt("plain", "u1")
    assert served.to_dict() == {
        "prompt": "plain",
        "version": 4,
        "version_id": 104,
        "content": "text v4",
        "experiment_id": None,
        "arm": None,
    }
    assert served.log_fields() == {"prompt": "plain", "version": 4}


def test_experiment_without_active_control_is_ignored_like_resolve_does() -> None:
    arms = [arm(1, 1, status="stopped", role="control"), arm(2, 2)]
    served = core(document(prompt("bot", 2, 7, arms))).get_prompt("bot", "u1")
    assert (served.version, served.experiment_id, served.arm) == (2, None, None)


def test_log_fields_carry_the_experiment() -> None:
    served = core(ab_document()).get_prompt("bot", "u1")
    assert served.log_fields() == {"prompt": "bot", "version": served.version, "experiment_id": 7}


def test_unknown_prompt_raises_unless_it_has_a_fallback() -> None:
    with pytest.raises(PromptNotFound) as caught:
        core(ab_document()).get_prompt("bott", "u1")
    assert caught.value.reason == "unknown_prompt" and "'bott'" in str(caught.value)
    client = core(ab_document(), fallback={"bott": "be brief"})
    served = client.get_prompt("bott", "u1")
    assert served == ServedPrompt("bott", "be brief", None, None, fallback=True)
    assert client.stats().fallbacks_served == 1


def test_no_active_version_raises_unless_it_has_a_fallback() -> None:
    doc = document(prompt("bot", None))
    with pytest.raises(PromptNotFound) as caught:
        core(doc).get_prompt("bot", "u1")
    assert caught.value.reason == "no_active_version" and "rollback" in str(caught.value)
    assert core(doc, fallback={"bot": "x"}).get_prompt("bot", "u1").fallback


def test_cold_start_serves_fallbacks_and_names_the_missing_one() -> None:
    client = core(None, fallback={"bot": "be kind"})
    assert client.get_prompt("bot", "u1").content == "be kind"
    with pytest.raises(PromptNotFound) as caught:
        client.get_prompt("other", "u1")
    assert caught.value.reason == "no_config" and "fallback" in str(caught.value)


@pytest.mark.parametrize("unit_id", ["", "   ", "x" * 201, "a\x00b", "\ud800"])
def test_unit_ids_the_service_refuses_raise(unit_id: str) -> None:
    for client in (core(ab_document()), core(None, fallback={"bot": "x"})):
        with pytest.raises(InvalidUnitId, match="unit_id"):
            client.get_prompt("bot", unit_id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["hashing"].update(version=2), "version 2 is not implemented"),
        (lambda d: d["hashing"].update(scheme="murmur3"), "'murmur3'"),
        (lambda d: d.update(prompts={}), "prompts must be a list"),
        (lambda d: d["prompts"][0].update(name=5), "prompts[0].name must be a string"),
        (lambda d: d["prompts"].append(d["prompts"][0]), "listed twice"),
        (
            lambda d: d["prompts"][0]["experiment"]["arms"][1].update(weight=0),
            "prompts[0].experiment.arms[1].weight must be a finite number > 0",
        ),
        (
            lambda d: d["prompts"][0]["experiment"]["arms"][1].update(weight=10**400),
            "weight must be a finite number",
        ),
        (
            lambda d: d["prompts"][0]["experiment"]["arms"][0].update(status="ramping"),
            "arms[0].status must be one of active, stopped",
        ),
        (lambda d: d["prompts"][0]["experiment"].update(arms=[]), "arms must be a non-empty"),
        (
            lambda d: d["prompts"][0]["experiment"]["arms"][1].update(id=1),
            "holds an arm id twice",
        ),
        (lambda d: d["prompts"][0]["active_version"].update(number=True), "whole number"),
    ],
)
def test_documents_it_cannot_evaluate_are_refused_by_field(change: Any, message: str) -> None:
    doc = ab_document()
    change(doc)
    with pytest.raises(ConfigError) as caught:
        parse_config(doc)
    assert message in str(caught.value)


def test_arm_order_in_the_document_changes_nothing() -> None:
    doc = ab_document()
    flipped = copy.deepcopy(doc)
    flipped["prompts"][0]["experiment"]["arms"].reverse()
    a, b = core(doc), core(flipped)
    assert all(a.get_prompt("bot", u) == b.get_prompt("bot", u) for u in UNITS)
