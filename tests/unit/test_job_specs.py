"""The job specs are the one definition of each job type: the registry holds every type
module's spec, the payload models are strict, a payload refused at enqueue is refused with
the same words when a row inserted by SQL runs, and docs/jobs.md shows what the specs say."""

from __future__ import annotations

import importlib
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.config import Settings
from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.input_models import InputModel
from optimizer.jobs import reference
from optimizer.jobs.context import ActiveJob
from optimizer.jobs.registry import JOB_TYPES, SPECS, check_payload, default_handlers
from optimizer.jobs.registry import max_attempts as registry_max_attempts
from optimizer.jobs.spec import JobSpec, RetryPolicy, job_payload
from optimizer.runtime.schedule import cron_trigger
from tests.support.docs import ROOT

JOBS_DOC = ROOT / "docs" / "jobs.md"


def test_every_module_that_defines_a_spec_is_registered():
    found = []
    for path in sorted((ROOT / "optimizer" / "jobs").glob("*.py")):
        module = importlib.import_module(f"optimizer.jobs.{path.stem}")
        spec = getattr(module, "SPEC", None)
        if spec is not None:
            assert isinstance(spec, JobSpec), path.name
            found.append(spec)
    assert sorted(s.name for s in found) == sorted(JOB_TYPES)
    assert all(SPECS[spec.name] is spec for spec in found)


def test_the_worker_runs_a_handler_for_every_type_and_no_other():
    handlers = default_handlers()
    assert list(handlers) == list(JOB_TYPES)
    assert all(handlers[name] is spec.handler for name, spec in SPECS.items())


@pytest.mark.parametrize("spec", SPECS.values(), ids=list(SPECS))
def test_a_spec_is_complete(spec: JobSpec):
    assert re.fullmatch(r"[a-z][a-z0-9_]{0,63}", spec.name)  # the column holds 64 characters
    assert spec.summary and "\n" not in spec.summary and not spec.summary.endswith(".")
    assert issubclass(spec.payload, InputModel)
    assert spec.payload.model_config.get("extra") == "forbid"
    assert spec.payload.model_config.get("strict") is True
    # The scheduler puts {"scope": "all"} in the jobs it enqueues; any type may be copied.
    assert "scope" in spec.payload.model_fields
    assert spec.retry.max_attempts is None or spec.retry.max_attempts >= 1


@pytest.mark.parametrize(
    "spec",
    [s for s in SPECS.values() if s.schedule is not None],
    ids=[s.name for s in SPECS.values() if s.schedule is not None],
)
def test_a_schedule_names_a_cron_setting_and_a_grace(spec: JobSpec):
    assert spec.schedule is not None
    assert spec.schedule.cron_setting in Settings.model_fields
    cron_trigger(getattr(Settings(), spec.schedule.cron_setting))  # a valid expression
    assert spec.schedule.misfire_grace_seconds > 0
    check_payload(spec.name, {"scope": "all"})  # what a tick enqueues


def test_retries_default_to_the_service_setting():
    assert RetryPolicy().attempts(4) == 4
    assert RetryPolicy(max_attempts=7).attempts(4) == 7
    assert all(
        registry_max_attempts(name, Settings(max_attempts=5)) == (spec.retry.max_attempts or 5)
        for name, spec in SPECS.items()
    )


# --- the same check at enqueue and when the job runs ------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
KEYS = sorted({key for spec in SPECS.values() for key in spec.payload.model_fields} | {"colour"})
PAYLOADS = st.dictionaries(
    st.sampled_from(KEYS),
    JSON | st.sampled_from(["support-bot", "opus", 3, [1, 2], True, 0.9, []]),
    max_size=4,
)


async def _nothing(progress: int, step: str | None) -> None:
    return None


@settings(max_examples=300, deadline=None, database=None)
@given(job_type=st.sampled_from(JOB_TYPES), payload=PAYLOADS)
def test_a_payload_refused_at_enqueue_fails_with_the_same_words_when_it_runs(
    job_type: str, payload: dict[str, Any]
):
    model = SPECS[job_type].payload
    job = ActiveJob(1, job_type, 1, payload, _nothing)
    try:
        check_payload(job_type, payload)
    except InvalidInput as refused:
        assert refused.field is not None and refused.field.startswith("payload")
        assert len(str(refused)) < 600
        with pytest.raises(PermanentJobError) as failed:
            job_payload(model, job)
        assert str(failed.value) == str(refused)
    else:
        assert isinstance(job_payload(model, job), model)


# --- docs/jobs.md -----------------------------------------------------------------------


def test_the_job_type_reference_in_the_docs_is_the_one_the_specs_give():
    page = JOBS_DOC.read_text(encoding="utf-8")
    assert reference.splice(page, reference.reference()) == page, (
        "docs/jobs.md is out of date with the job specs; refresh it with "
        "`.venv/bin/python -m optimizer.jobs.reference --write docs/jobs.md`"
    )


def test_the_reference_shows_every_field_with_its_type_default_and_bounds():
    text = reference.reference()
    for spec in SPECS.values():
        assert f"### `{spec.name}`" in text
        for name in spec.payload.model_fields:
            assert f"| `{name}` |" in text
    assert "| `n` | whole number from 1 to 10 | `3` |" in text
    assert "| `prompt` | string matching `^[A-Za-z0-9._-]{1,200}$` | required |" in text
    assert "a tick that fires late still enqueues within 300 seconds" in text


def test_the_docs_list_exactly_the_registered_types():
    page = JOBS_DOC.read_text(encoding="utf-8")
    listed = re.search(r"Job types: (.*?)\. Job statuses", page, re.S)
    assert listed is not None
    assert re.findall(r"`([a-z_]+)`", listed.group(1)) == list(JOB_TYPES)
    section = page[page.index("## Job types") : page.index("## Adding a job")]
    assert sorted(re.findall(r"^\| `([a-z_]+)` \|", section, re.M)) == sorted(JOB_TYPES)


def test_splice_replaces_only_the_generated_section():
    page = f"intro\n{reference.BEGIN}\nold\n{reference.END}\noutro\n"
    assert reference.splice(page, "NEW\n") == "intro\nNEW\noutro\n"
    with pytest.raises(ValueError, match="markers"):
        reference.splice("no markers here", "NEW\n")
