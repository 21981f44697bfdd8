"""Replaying one conversation under a prompt, and judging two arms' answers in both orders.

Each user turn replayed is one call; the judge is asked twice, once with the candidate's
answers shown as A and once with the control's, so a preference for a position cancels
out (optimizer.stats.win_rate.pair_score). A judge reply that cannot be read is asked for
once more; a second unreadable reply counts as a tie, with the problem as its reason: the
gate needs the candidate to win, so an unreadable verdict can only keep it away from users.
LLM errors and JobDeferred are not caught here: the job's worker knows what they mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optimizer.llm.client import LlmClient, LlmReply, LlmRequest
from optimizer.replay.requests import (
    ARMS,
    JudgedConversation,
    ReplayPoint,
    judge_request,
    replay_points,
    replay_request,
)
from optimizer.replay.sampling import Sampled
from optimizer.replay.verdict import UnreadableVerdict, Verdict, parse_verdict, preferred_arm
from optimizer.stats.win_rate import pair_score

UNREADABLE_PREFIX = "counted as a tie: the judge's reply could not be read twice"


@dataclass
class Spend:
    """What the calls for one evaluation cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, reply: LlmReply) -> None:
        self.calls += 1
        self.input_tokens += (
            reply.input_tokens + reply.cache_creation_input_tokens + reply.cache_read_input_tokens
        )
        self.output_tokens += reply.output_tokens
        if math.isfinite(reply.cost_usd):
            self.cost_usd += reply.cost_usd

    def merge(self, other: Spend) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd


@dataclass(frozen=True)
class Judgement:
    verdict_candidate_first: str  # "candidate", "control" or "tie": the arm preferred
    verdict_control_first: str
    reason_candidate_first: str
    reason_control_first: str
    score: float  # 1, 0.5 or 0 (pair_score)


@dataclass(frozen=True)
class Replayer:
    llm: LlmClient
    replay_model: str
    judge_model: str
    max_turns: int
    job_id: int | None

    def points(self, conversation: Sampled) -> list[ReplayPoint]:
        return replay_points(conversation.turns, self.max_turns)

    async def answers(
        self, arm: str, system: str, conversation: Sampled, spend: Spend
    ) -> list[str]:
        """The arm's answer to each replayed user turn, given the logged turns before it."""
        answers = []
        for point in self.points(conversation):
            request = replay_request(
                model=self.replay_model,
                system=system,
                point=point,
                arm=arm,
                segment=conversation.segment,
                conversation_id=conversation.id,
                job_id=self.job_id,
            )
            reply = await self.llm.complete(request)
            spend.add(reply)
            answers.append(reply.text)
        return answers

    async def judge(
        self,
        criteria: str,
        conversation: Sampled,
        answers: Mapping[str, Sequence[str]],
        prompts: Mapping[str, str],
        spend: Spend,
    ) -> Judgement:
        """Both orders; `answers` and `prompts` are keyed by arm."""
        judged = JudgedConversation(
            conversation.id, conversation.segment, tuple(self.points(conversation))
        )
        verdicts: dict[str, Verdict] = {}
        for first in ARMS:
            request = judge_request(
                model=self.judge_model,
                criteria=criteria,
                conversation=judged,
                first=first,
                answers=answers,
                prompts=prompts,
                job_id=self.job_id,
            )
            verdicts[first] = await self._verdict(request, spend)
        candidate_first = preferred_arm(verdicts["candidate"].choice, "candidate")
        control_first = preferred_arm(verdicts["control"].choice, "control")
        return Judgement(
            verdict_candidate_first=candidate_first,
            verdict_control_first=control_first,
            reason_candidate_first=verdicts["candidate"].reason,
            reason_control_first=verdicts["control"].reason,
            score=pair_score(candidate_first, control_first),
        )

    async def _verdict(self, request: LlmRequest, spend: Spend) -> Verdict:
        problem = ""
        for _ in range(2):
            reply = await self.llm.complete(request)
            spend.add(reply)
            try:
                return parse_verdict(reply.text)
            except UnreadableVerdict as exc:
                problem = str(exc)
        return Verdict("tie", f"{UNREADABLE_PREFIX} ({problem})")
