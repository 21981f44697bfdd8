"""One replay run: what each candidate is replayed on (its plan), and replaying, judging and
storing conversation after conversation until it has its win rates.

A candidate that does not win on the failing sample is not replayed on the held-out one (the
gate rejects it either way). A conversation the pair has already been judged on (an earlier
attempt of the job, deferred or stopped) keeps its stored score and costs no call; the active
version's answers come from `controls` (this run), else from a stored evaluation of the same
conversation, else from a replay, and are then kept in `controls` for the next candidate.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from optimizer.prompt_text import served_text
from optimizer.replay import sampling, store
from optimizer.replay.evaluate import Judgement, Replayer, Spend
from optimizer.replay.gate import GATE_CONFIDENCE, CandidateFigures, wins_failing
from optimizer.replay.requests import rubric
from optimizer.replay.sampling import Sample, Sampled, Scope
from optimizer.stats.win_rate import win_rate

# Progress of the whole job: the conversations fill this range.
FIRST_PERCENT, LAST_PERCENT = 5, 95
NOT_REPLAYED = "not replayed: the failing sample already rejects the candidate"


@dataclass(frozen=True)
class Sizes:
    failing: int
    holdout: int


@dataclass(frozen=True)
class Plan:
    candidate: store.VersionFacts
    scope: Scope
    criteria: str  # the judge's rubric for this candidate
    samples: tuple[Sample, Sample]  # failing, held-out
    done: dict[int, store.Done]
    stored_controls: dict[int, list[str]]
    empty: tuple[str, str]  # why each sample would be empty

    @property
    def todo(self) -> int:
        return sum(self.pending(sample) for sample in self.samples)

    def pending(self, sample: Sample) -> int:
        return sum(1 for c in sample.conversations if c.id not in self.done)

    def to_dict(self, judged: int) -> dict[str, Any]:
        """`judged`: the conversations this run judged (Run.judged), which is fewer than
        `todo` when the held-out sample was spared."""
        reused = sum(1 for s in self.samples for c in s.conversations if c.id in self.done)
        return {
            "scope": self.scope.describe(),
            "judged": judged,
            "reused": reused,
            "unusable": {s.kind: s.unusable_summary() for s in self.samples},
        }


def prepare(
    sessions: sessionmaker[Session], prompt: str, versions: list[int], sizes: Sizes
) -> tuple[store.ReplayInputs, list[Plan]]:
    with sessions() as session:
        inputs = store.load_inputs(session, prompt, versions)
        return inputs, [_plan(session, inputs, c, sizes) for c in inputs.candidates]


def _plan(
    session: Session, inputs: store.ReplayInputs, candidate: store.VersionFacts, sizes: Sizes
) -> Plan:
    insights = [inputs.insights[i] for i in candidate.insight_ids if i in inputs.insights]
    scope = sampling.scope_of(insights)
    done = store.evaluated(session, candidate.id, inputs.control.id)
    samples = tuple(
        sampling.draw(
            session,
            kind,
            version_id=inputs.control.id,
            scope=scope,
            size=size,
            first=[i for i, d in done.items() if d.sample == kind],
        )
        for kind, size in (("failing", sizes.failing), ("holdout", sizes.holdout))
    )
    todo = [c.id for s in samples for c in s.conversations if c.id not in done]
    return Plan(
        candidate=candidate,
        scope=scope,
        criteria=rubric(insights, inputs.judge_rubric),
        samples=(samples[0], samples[1]),
        done=done,
        stored_controls=store.control_answers(session, inputs.control.id, todo),
        empty=(
            _why_empty(samples[0], f"no failed conversation in {scope.describe()}"),
            _why_empty(samples[1], _no_holdout(scope, sizes.holdout)),
        ),
    )


def _no_holdout(scope: Scope, size: int) -> str:
    if size == 0:
        return "REPLAY_HOLDOUT_SAMPLE=0"
    if scope.whole_version:
        return "no successful conversation"
    return f"no successful conversation outside {scope.describe()}"


def _why_empty(sample: Sample, none: str) -> str:
    skipped = len(sample.unusable)
    if skipped:
        return f"{none} with usable turns; {skipped} skipped as unusable"
    return none


class Progress:
    """The job's progress over the conversations still to judge."""

    def __init__(self, report: Callable[[int, str | None], Awaitable[None]], total: int) -> None:
        self._report, self.total, self.done = report, total, 0

    def skip(self, count: int) -> None:
        self.total -= count

    async def step(self, version: int) -> None:
        self.done += 1
        span = LAST_PERCENT - FIRST_PERCENT
        percent = FIRST_PERCENT + span * self.done // max(self.total, 1)
        await self._report(percent, f"judged {self.done} of {self.total} (version {version})")


@dataclass
class Run:
    """What every candidate of one job shares."""

    sessions: sessionmaker[Session]
    inputs: store.ReplayInputs
    replayer: Replayer
    progress: Progress
    controls: dict[int, list[str]] = field(default_factory=dict)  # conversation id -> answers
    spent: Spend = field(default_factory=Spend)
    judged: Counter[int] = field(default_factory=Counter)  # version -> conversations judged

    async def evaluate(self, plan: Plan) -> CandidateFigures:
        failing, holdout = plan.samples
        figures = CandidateFigures(
            version=plan.candidate.version,
            failing=win_rate(await self._scores(plan, failing), GATE_CONFIDENCE),
            holdout=win_rate([], GATE_CONFIDENCE),
            failing_empty=plan.empty[0],
            holdout_empty=plan.empty[1],
        )
        if not wins_failing(figures)[0]:
            # The gate rejects it whatever the held-out sample says: spare those calls.
            if not holdout.conversations:
                return figures
            self.progress.skip(plan.pending(holdout))
            return dataclasses.replace(figures, holdout_empty=NOT_REPLAYED)
        holdout_scores = await self._scores(plan, holdout)
        return dataclasses.replace(figures, holdout=win_rate(holdout_scores, GATE_CONFIDENCE))

    async def _scores(self, plan: Plan, sample: Sample) -> list[float]:
        scores = []
        for conversation in sample.conversations:
            done = plan.done.get(conversation.id)
            if done is None:
                scores.append((await self._judge(plan, sample.kind, conversation)).score)
                self.judged[plan.candidate.version] += 1
                await self.progress.step(plan.candidate.version)
            else:
                scores.append(done.score)
        return scores

    async def _judge(self, plan: Plan, kind: str, conversation: Sampled) -> Judgement:
        spend, replayer = Spend(), self.replayer
        prompts = {
            "candidate": served_text(plan.candidate.content),
            "control": served_text(self.inputs.control.content),
        }
        control = self.controls.get(conversation.id) or plan.stored_controls.get(conversation.id)
        if control is None or len(control) != len(replayer.points(conversation)):
            control = await replayer.answers("control", prompts["control"], conversation, spend)
        self.controls[conversation.id] = control
        candidate = await replayer.answers("candidate", prompts["candidate"], conversation, spend)
        answers = {"candidate": candidate, "control": control}
        judgement = await replayer.judge(plan.criteria, conversation, answers, prompts, spend)
        record = store.EvaluationRecord(
            prompt_id=self.inputs.prompt_id,
            candidate_version_id=plan.candidate.id,
            control_version_id=self.inputs.control.id,
            job_id=replayer.job_id,
            conversation_id=conversation.id,
            sample=kind,
            segment=conversation.segment,
            control_answers=control,
            candidate_answers=candidate,
            verdict_candidate_first=judgement.verdict_candidate_first,
            verdict_control_first=judgement.verdict_control_first,
            reason_candidate_first=judgement.reason_candidate_first,
            reason_control_first=judgement.reason_control_first,
            score=judgement.score,
            input_tokens=spend.input_tokens,
            output_tokens=spend.output_tokens,
            cost_usd=spend.cost_usd,
        )
        await asyncio.to_thread(store.save_evaluation, self.sessions, record)
        self.spent.merge(spend)
        return judgement
