"""variant_generation: ask the LLM for improved versions of a prompt's active version and
store the valid ones as candidates, then queue an experiment for them.

Payload: {"prompt": NAME (required), "model": "sonnet" (default) | "opus" | a full model id,
"n": 1..10 (default 3), "insight_ids": [ids] (optional; default the prompt's actionable
insights, most recently seen first, at most 10; [] for none)}. "scope" may be present (added by the
scheduler) and is ignored.

Result: {"prompt", "provider", "requested_model", "model", "fell_back",
"variants_returned", "stored": [{"version", "change_notes"}], "dropped": [{"index",
"reason"}] (index: 1-based position in the model's reply), "insight_ids", "parent_version",
"experiment_creation_job_id" (null when not queued), "experiment_creation_note" (why or
what), "resumed", "message"}.
"""

from __future__ import annotations

import re
from typing import Any

from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.llm.client import MODEL_ALIASES
from optimizer.prompts import validate_name
from optimizer.text_input import shown
from optimizer.variants import generate
from optimizer.variants.generate import GenerationSpec

DEFAULT_MODEL = "sonnet"
DEFAULT_N, MAX_N = 3, 10
MAX_INSIGHT_IDS = 50
MAX_ID = 2**63 - 1
IGNORED_KEYS = ("scope",)
PAYLOAD_KEYS = ("prompt", "model", "n", "insight_ids", *IGNORED_KEYS)
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,99}")


def parse_payload(payload: dict[str, Any]) -> GenerationSpec:
    """The job's payload as a GenerationSpec; anything wrong fails the job for good, with
    the field named."""
    unknown = [key for key in payload if key not in PAYLOAD_KEYS]
    if unknown:
        raise PermanentJobError(f"payload field {unknown[0]!r} is not known; allowed: "
                                f"{', '.join(PAYLOAD_KEYS)}")
    if "prompt" not in payload:
        raise PermanentJobError("payload field 'prompt' is required: the name of the prompt "
                                "to improve")
    try:
        name = validate_name(payload["prompt"])
    except InvalidInput as exc:
        raise PermanentJobError(f"payload field 'prompt': {exc}") from None
    return GenerationSpec(prompt=name, model=_model(payload.get("model", DEFAULT_MODEL)),
                          n=_n(payload.get("n", DEFAULT_N)),
                          insight_ids=_insight_ids(payload.get("insight_ids")))


def _model(value: Any) -> str:
    if not isinstance(value, str) or not _MODEL_ID.fullmatch(value):
        raise PermanentJobError(
            f"payload field 'model' must be {' or '.join(map(repr, MODEL_ALIASES))} or a "
            f"full model id (letters, digits, '.', '-', '_', at most 100); got {shown(value)}")
    return value


def _n(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_N:
        raise PermanentJobError(f"payload field 'n' must be a whole number from 1 to {MAX_N}; "
                                f"got {shown(value)}")
    return value


def _insight_ids(value: Any) -> list[int] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_INSIGHT_IDS or any(
            isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= MAX_ID
            for i in value):
        raise PermanentJobError(
            f"payload field 'insight_ids' must be a list of at most {MAX_INSIGHT_IDS} insight "
            f"ids (positive whole numbers; [] for none), or left out; got {shown(value)}")
    return list(dict.fromkeys(value))



async def generate_variants(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    return await generate.generate_variants(ctx, job, parse_payload(job.payload))
