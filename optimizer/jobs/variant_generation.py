"""variant_generation: ask the LLM for improved versions of a prompt's active version, store
the valid ones as candidates with their lineage, then queue the next step for them:
candidate_replay (REPLAY_ENABLED, the default), which starts an experiment for those that
pass, or else experiment_creation directly, for at most MAX_LIVE_CANDIDATES of them.

The payload fields are VariantGenerationPayload's (docs/jobs.md lists them).

Result: {"prompt", "provider", "requested_model", "model", "fell_back",
"variants_returned", "stored": [{"version", "change_notes"}], "dropped": [{"index",
"reason"}] (index: 1-based position in the model's reply), "insight_ids", "parent_version",
"candidate_replay_job_id" and "experiment_creation_job_id" (the one queued; null when not
queued), "experiment_creation_note" (what was queued, or why not), "resumed", "message"}.

Database work is synchronous SQLAlchemy run in a thread; the LLM call is awaited. LLM errors
are not caught here: the worker knows how to treat LlmNotConfigured (permanent), LlmError
(retry) and JobDeferred (wait). The rules (prompt building, parsing, validation, storage)
are in optimizer.variants; this module orders them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from optimizer.errors import NotFound, PermanentJobError
from optimizer.experiments.validation import MAX_VARIANTS
from optimizer.input_models import InputModel
from optimizer.jobs import candidate_replay, creation
from optimizer.jobs.chain import Chained, enqueue_next
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.payload_fields import PromptName, Scope
from optimizer.jobs.spec import JobSpec, job_payload
from optimizer.llm.client import MODEL_ALIASES, LlmReply
from optimizer.variants import store
from optimizer.variants.meta_prompt import build_request
from optimizer.variants.parse import ParsedVariant, parse_variants
from optimizer.variants.validate import DroppedVariant, ValidVariant, validate_variants

DEFAULT_MODEL = "sonnet"
DEFAULT_N, MAX_N = 3, 10
MAX_INSIGHT_IDS = 50
MAX_ID = 2**63 - 1
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}")
MODEL_RULE = (
    f"{' or '.join(map(repr, MODEL_ALIASES))} or a full model id (letters, digits, "
    "'.', '-', '_', at most 100)"
)


def _model_id(value: str) -> str:
    if not _MODEL_ID.fullmatch(value):
        raise ValueError(f"must be {MODEL_RULE}; got {value[:60]!r}")
    return value


def _unique(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# Shared with full_cycle, which takes the same two choices.
ModelChoice = Annotated[
    str,
    AfterValidator(_model_id),
    Field(
        description=f"the model to ask: {MODEL_RULE}",
        json_schema_extra={"pattern": f"^{_MODEL_ID.pattern}$"},
    ),
]
VariantCount = Annotated[int, Field(ge=1, le=MAX_N, description="how many variants to ask for")]


class VariantGenerationPayload(InputModel):
    prompt: PromptName = Field(description="the name of the prompt to improve")
    model: ModelChoice = DEFAULT_MODEL
    n: VariantCount = DEFAULT_N
    insight_ids: (
        Annotated[
            list[Annotated[int, Field(ge=1, le=MAX_ID)]],
            AfterValidator(_unique),
            Field(max_length=MAX_INSIGHT_IDS),
        ]
        | None
    ) = Field(
        default=None,
        description="the insights to address ([] for none); without it, the prompt's "
        "actionable insights, most recently seen first, at most 10",
    )
    scope: Scope = None


log = logging.getLogger("prompt_worker.jobs.variant_generation")
MAX_REASONS_IN_ERROR = 600


NOT_CHAINED = Chained(
    None, "no experiment_creation job queued: the caller starts the experiment itself"
)


async def generate_variants(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    return await run_generation(ctx, job, job_payload(VariantGenerationPayload, job))


async def run_generation(
    ctx: ServiceContext, job: ActiveJob, spec: VariantGenerationPayload, *, chain: bool = True
) -> dict[str, Any]:
    """Store the valid variants; with `chain`, queue an experiment_creation job for them
    (full_cycle passes False and starts the experiment itself)."""
    llm = ctx.llm
    if llm is None:
        raise PermanentJobError(
            "no LLM client is configured in this worker; set "
            "ANTHROPIC_API_KEY (or LLM_PROVIDER=offline for the demo)"
        )
    await job.report_progress(5, "reading prompt, insights and failing conversations")
    inputs, earlier = await asyncio.to_thread(_load, ctx, spec, job.id)
    if earlier is not None:
        return await _resume(ctx, job, inputs, earlier, chain)
    request = build_request(
        model=spec.model,
        active_prompt=inputs.active_content,
        active_version=inputs.active_version,
        insights=inputs.insights,
        transcripts=inputs.transcripts,
        history=inputs.history,
        n=spec.n,
        job_id=job.id,
    )
    await job.report_progress(15, f"asking {spec.model} for {spec.n} variant(s)")
    reply = await llm.complete(request)
    await job.report_progress(80, "validating the variants")
    parsed = parse_variants(reply.text)
    valid, dropped = _check(parsed, spec.n, inputs)
    insight_ids = [insight.id for insight in inputs.insights]
    _log_dropped(dropped, job.id, spec.prompt)
    if not valid:
        raise PermanentJobError(_nothing_valid(parsed, dropped, reply))
    await job.report_progress(90, f"storing {len(valid)} candidate(s)")
    lineage = store.Lineage(
        parent_version=inputs.active_version,
        source="llm" if reply.provider == "anthropic" else "offline",
        model=reply.model,
        insight_ids=insight_ids,
        llm_call_id=reply.call_id,
    )
    stored, late, live = await asyncio.to_thread(_store, ctx, inputs, valid, lineage)
    _log_dropped(late, job.id, spec.prompt)
    dropped = sorted([*dropped, *late], key=lambda d: d.index)
    ctx.stats.add("variantsGenerated", len(stored))
    log.info(
        "variants stored",
        extra={
            "job_id": job.id,
            "prompt": spec.prompt,
            "versions": [s.version for s in stored],
            "dropped": len(dropped),
            "model": reply.model,
        },
    )
    chained = (
        await asyncio.to_thread(_chain, ctx, job, spec.prompt, stored, live)
        if chain
        else NOT_CHAINED
    )
    await job.report_progress(100, f"stored {len(stored)} candidate(s)")
    return _result(
        spec.prompt,
        reply,
        len(parsed),
        stored,
        dropped,
        insight_ids,
        inputs.active_version,
        chained,
    )


def _load(
    ctx: ServiceContext, spec: VariantGenerationPayload, job_id: int
) -> tuple[store.GenerationInputs, store.EarlierAttempt | None]:
    with ctx.sessions() as session:
        inputs = store.load_inputs(session, spec.prompt, spec.insight_ids)
        return inputs, store.earlier_attempt(session, inputs.prompt_id, job_id)


def _check(
    parsed: list[ParsedVariant], n: int, inputs: store.GenerationInputs
) -> tuple[list[ValidVariant], list[DroppedVariant]]:
    valid, dropped = validate_variants(parsed[:n], inputs.active_content, inputs.existing_hashes)
    dropped += [
        DroppedVariant(i, f"beyond the {n} variant(s) requested")
        for i in range(n + 1, len(parsed) + 1)
    ]
    return valid, dropped


def _store(
    ctx: ServiceContext,
    inputs: store.GenerationInputs,
    valid: list[ValidVariant],
    lineage: store.Lineage,
) -> tuple[list[store.StoredVariant], list[DroppedVariant], tuple[int, str] | None]:
    try:
        with ctx.sessions.begin() as session:
            stored, late = store.store_candidates(
                session, inputs.prompt, valid, lineage, now=ctx.clock()
            )
            if not stored:
                # Leaving the block by an exception rolls back: nothing is written.
                raise PermanentJobError("no variant could be stored: " + _reasons(late))
            return stored, late, store.live_experiment(session, inputs.prompt_id)
    except NotFound as exc:  # the prompt or its parent version was deleted meanwhile
        raise PermanentJobError(f"cannot store the variants: {exc}") from None


def _chain(
    ctx: ServiceContext,
    job: ActiveJob,
    name: str,
    stored: list[store.StoredVariant],
    live: tuple[int, str] | None,
) -> Chained:
    if live is not None:
        return Chained(
            None,
            f"not started: prompt {name!r} has experiment {live[0]} "
            f"{live[1]}; the new candidates wait until it ends",
        )
    versions = [s.version for s in stored][:MAX_VARIANTS]
    if ctx.settings.replay_enabled:
        step, payload = candidate_replay.SPEC, {"prompt": name, "versions": versions}
        limit, why = MAX_VARIANTS, "a replay job takes"
    else:
        # Without the replay gate, the first MAX_LIVE_CANDIDATES go live untested.
        versions = versions[: ctx.settings.max_live_candidates]
        step, payload = creation.SPEC, {"prompt": name, "variants": versions}
        limit, why = ctx.settings.max_live_candidates, "MAX_LIVE_CANDIDATES lets"
    job_id, created = enqueue_next(
        ctx, step, payload, dedupe_key=f"{step.name}:{name}:after-generation-{job.id}"
    )
    note = (
        f"{step.name} job {job_id} queued for versions {', '.join(map(str, versions))}"
        if created
        else f"{step.name} job {job_id} was already queued by this job"
    )
    if len(stored) > limit:
        note += f" ({why} at most {limit})"
    return Chained(job_id, note, step.name)


async def _resume(
    ctx: ServiceContext,
    job: ActiveJob,
    inputs: store.GenerationInputs,
    earlier: store.EarlierAttempt,
    chain: bool,
) -> dict[str, Any]:
    """An earlier attempt stored its candidates and then stopped (crash, lost lease): finish
    its work instead of asking the model again."""
    log.info(
        "variants already stored by an earlier attempt",
        extra={
            "job_id": job.id,
            "prompt": inputs.prompt,
            "versions": [s.version for s in earlier.stored],
        },
    )
    chained = NOT_CHAINED
    if chain:
        live = await asyncio.to_thread(_live, ctx, inputs.prompt_id)
        chained = await asyncio.to_thread(_chain, ctx, job, inputs.prompt, earlier.stored, live)
    await job.report_progress(100, "candidates were stored by an earlier attempt")
    return {
        "prompt": inputs.prompt,
        "provider": earlier.provider,
        "requested_model": earlier.requested_model,
        "model": earlier.model,
        "fell_back": earlier.model != earlier.requested_model,
        "variants_returned": None,
        "stored": [s.to_dict() for s in earlier.stored],
        "dropped": [],
        "insight_ids": earlier.insight_ids,
        "parent_version": None,
        **_queued(chained),
        "resumed": True,
        "message": f"{len(earlier.stored)} candidate(s) had been stored by an earlier "
        f"attempt of this job; {chained.note}",
    }


def _live(ctx: ServiceContext, prompt_id: int) -> tuple[int, str] | None:
    with ctx.sessions() as session:
        return store.live_experiment(session, prompt_id)


def _result(
    prompt: str,
    reply: LlmReply,
    returned: int,
    stored: list[store.StoredVariant],
    dropped: list[DroppedVariant],
    insight_ids: list[int],
    parent: int,
    chained: Chained,
) -> dict[str, Any]:
    versions = ", ".join(str(s.version) for s in stored)
    return {
        "prompt": prompt,
        "provider": reply.provider,
        "requested_model": reply.requested_model,
        "model": reply.model,
        "fell_back": reply.fell_back,
        "variants_returned": returned,
        "stored": [s.to_dict() for s in stored],
        "dropped": [d.to_dict() for d in dropped],
        "insight_ids": insight_ids,
        "parent_version": parent,
        **_queued(chained),
        "resumed": False,
        "message": f"stored {len(stored)} candidate(s) of prompt {prompt!r} (versions "
        f"{versions}, from version {parent}); dropped {len(dropped)}; "
        f"{chained.note}",
    }


def _queued(chained: Chained) -> dict[str, Any]:
    """The ids of the job queued next, by type (null for the type not queued), and the note."""
    return {
        f"{step}_job_id": chained.job_id if chained.job_type == step else None
        for step in (candidate_replay.SPEC.name, creation.SPEC.name)
    } | {"experiment_creation_note": chained.note}


def _log_dropped(dropped: list[DroppedVariant], job_id: int, prompt: str) -> None:
    for item in dropped:
        log.warning(
            "variant dropped",
            extra={
                "job_id": job_id,
                "prompt": prompt,
                "variant_index": item.index,
                "reason": item.reason,
            },
        )


def _nothing_valid(
    parsed: list[ParsedVariant], dropped: list[DroppedVariant], reply: LlmReply
) -> str:
    if not parsed:
        return (
            f"the reply of {reply.model} ({len(reply.text)} characters) held no "
            "complete <improved_prompt>...</improved_prompt> block; nothing was stored. "
            "Run the job again, perhaps with another model"
        )
    return (
        f"none of the {len(parsed)} variant(s) from {reply.model} was valid, nothing was "
        f"stored: {_reasons(dropped)}"
    )


def _reasons(dropped: list[DroppedVariant]) -> str:
    text = "; ".join(f"variant {d.index}: {d.reason}" for d in dropped)
    return text if len(text) <= MAX_REASONS_IN_ERROR else text[: MAX_REASONS_IN_ERROR - 1] + "…"


SPEC = JobSpec(
    name="variant_generation",
    summary="ask the LLM for improved versions of a prompt and store the valid ones as "
    "candidates; queue candidate_replay (or, without replay, experiment_creation) for them",
    payload=VariantGenerationPayload,
    handler=generate_variants,
)
