"""experiment_monitoring: check every running experiment.

Each experiment is checked in its own transaction: one that fails (a row edited into
nonsense, a bug in one arm's numbers) is recorded in the result and the rest are still
checked. Only when every check fails does the job fail, so that it is retried and counted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from optimizer.errors import PromptWorkerError, describe
from optimizer.experiments.monitor import CheckOutcome, check_experiment, running_experiment_ids
from optimizer.input_models import InputModel
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.payload_fields import Scope
from optimizer.jobs.spec import JobSpec, Schedule, job_payload
from optimizer.webhooks import EXPERIMENT_DECISION

log = logging.getLogger("prompt_worker.jobs.monitoring")
PROGRESS_EVERY_SECONDS = 1.0


class ExperimentMonitoringPayload(InputModel):
    """Every running experiment is checked: there is nothing to choose."""

    scope: Scope = None


def _running(ctx: ServiceContext) -> list[int]:
    with ctx.sessions() as session:
        return running_experiment_ids(session)


def _check(ctx: ServiceContext, experiment_id: int, job_id: int) -> CheckOutcome | None:
    with ctx.sessions.begin() as session:
        return check_experiment(
            session,
            experiment_id,
            now=ctx.clock(),
            job_id=job_id,
            promotion_mode=ctx.settings.promotion_mode,
        )


async def check_one(ctx: ServiceContext, experiment_id: int, job_id: int) -> CheckOutcome | None:
    """Check one experiment in its own transaction, count a completion and log a decision.
    None when the experiment is no longer running.

    Every decision but `continue` is sent as an `experiment.decision` webhook; a winner that
    waits for approval (promotion mode approve) is one with decision `promote` and status
    `awaiting_approval`, `winner_version` naming the version proposed."""
    outcome = await asyncio.to_thread(_check, ctx, experiment_id, job_id)
    if outcome is not None:
        if outcome.completed:
            ctx.stats.add("experimentsCompleted")
        if ctx.metrics is not None:
            ctx.metrics.experiment_decision(outcome.decision)
        if ctx.webhooks is not None and outcome.decision != "continue":
            ctx.webhooks.publish(EXPERIMENT_DECISION, {**outcome.to_dict(), "job_id": job_id})
        if outcome.decision != "continue":
            log.info(
                "experiment decision",
                extra={
                    "experiment_id": experiment_id,
                    "decision": outcome.decision,
                    "status": outcome.status,
                    "job_id": job_id,
                },
            )
    return outcome


async def monitor_experiments(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    job_payload(ExperimentMonitoringPayload, job)
    await job.report_progress(5, "loading running experiments")
    running = await asyncio.to_thread(_running, ctx)
    if not running:
        await job.report_progress(100, "nothing to monitor")
        return {"experiments_checked": 0, "decisions": [], "message": "no running experiments"}
    decisions: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    reported = loop.time()
    for done, experiment_id in enumerate(running, start=1):
        try:
            outcome = await check_one(ctx, experiment_id, job.id)
        except Exception as exc:  # one broken experiment must not hide the others
            log.error(
                "experiment check failed",
                exc_info=exc,
                extra={"experiment_id": experiment_id, "job_id": job.id},
            )
            errors.append({"experiment_id": experiment_id, "error": describe(exc)})
        else:
            if outcome is not None:
                decisions.append(outcome.to_dict())
        # At most about once a second: progress is a write of its own.
        if done == len(running) or loop.time() - reported >= PROGRESS_EVERY_SECONDS:
            reported = loop.time()
            await job.report_progress(
                5 + 95 * done // len(running), f"checked {done} of {len(running)} experiments"
            )
    if errors and not decisions:
        raise PromptWorkerError(
            f"all {len(errors)} experiment checks failed; first: experiment "
            f"{errors[0]['experiment_id']}: {errors[0]['error']}"
        )
    return {
        "experiments_checked": len(decisions),
        "decisions": decisions,
        "errors": errors,
        "message": _summary(decisions, errors),
    }


def _summary(decisions: list[dict[str, Any]], errors: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d["decision"]] = counts.get(d["decision"], 0) + 1
    parts = [f"{n} {kind}" for kind, n in sorted(counts.items())]
    if errors:
        parts.append(f"{len(errors)} failed")
    return f"checked {len(decisions)} experiment(s): " + (", ".join(parts) or "none")


SPEC = JobSpec(
    name="experiment_monitoring",
    summary="check every running experiment and promote, stop or keep each one going",
    payload=ExperimentMonitoringPayload,
    handler=monitor_experiments,
    schedule=Schedule(cron_setting="monitoring_cron", misfire_grace_seconds=300),
)
