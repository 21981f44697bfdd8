"""The simulated application behind `prompt-worker demo` and benchmarks/candidates.py: users,
segments, the conversations they log, and the hidden truth of how well each prompt version
serves each segment on each day.

Pure: a seeded random generator in, conversation records out. The optimizer never sees the
truth; it only sees the outcomes, as it would in production. The truth rates a prompt with
the offline provider's own tests (optimizer.llm.offline_review: guidance for a segment, a
harmful shortcut for it), so the offline replay and judge prefer what users would, up to
the judge's simulated mistakes.

The story: billing does badly from the start (the first prompt never mentions it); later a
new returns policy (day 9), a carrier change (day 16) and two-factor login (day 23) each
make one segment do badly under a prompt without guidance for it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from optimizer.llm.offline_review import has_guidance, has_shortcut

PROMPT_NAME = "support-bot"
FIRST_PROMPT = (
    "You are the support assistant of Acme Online, talking with {{customer_name}}.\n"
    "Answer questions about orders, shipping, returns and accounts politely and briefly.\n"
    "If you do not know something, say so and offer to connect the customer with a person."
)
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; the demo's first simulated day

# Share of traffic per segment, and each segment's true success rate under a prompt that
# serves it well (or that does not address it while nothing is wrong there).
SEGMENT_SHARES = {"shipping": 0.30, "returns": 0.25, "account": 0.20, "billing": 0.25}
HEALTHY_SUCCESS = {"shipping": 0.74, "returns": 0.74, "account": 0.74, "billing": 0.74}
# From which simulated day a segment does badly under a prompt without guidance for it,
# and how badly.
PROBLEMS = {
    "billing": (0.0, 0.38),
    "returns": (9.0, 0.50),
    "shipping": (16.0, 0.50),
    "account": (23.0, 0.50),
}
# Under a prompt with a shortcut for the segment ("keep answers to one sentence"): low
# enough that a variant fixing one segment and harming another is worse overall.
HARMED_SUCCESS = 0.15

# Share of conversations logged with structured `messages`, as a text transcript, and as a
# note no replay can use (no user turn): the rest.
MESSAGES_SHARE, TRANSCRIPT_SHARE = 0.45, 0.45
QUESTIONS = {
    "billing": "I was charged twice for my order, can you refund the duplicate charge?",
    "shipping": "Where is my parcel? It was due yesterday.",
    "returns": "How do I return a damaged item?",
    "account": "I cannot log in to my account.",
}
BAD_ANSWERS = {
    "billing": "I can only help with orders, shipping, returns and accounts. "
    "Please contact your bank about charges.",
    "shipping": "Parcels usually arrive within a week.",
    "returns": "Returns are possible within 30 days.",
    "account": "Please try again later.",
}
GOOD_ANSWER = "Of course, here is exactly what to do, step by step."
FOLLOW_UPS = {True: "Thanks, and when will that be done?", False: "That does not help me."}
FOLLOW_UP_ANSWERS = {True: "Within two working days.", False: "I am sorry to hear that."}
NOTES = {
    True: "Chat closed: the {segment} question was resolved.",
    False: "Chat closed unresolved.",
}


def true_success_rate(content: str, segment: str, day: float = 0.0) -> float:
    """The hidden truth for one segment on simulated day `day`."""
    if has_shortcut(content, segment):
        return HARMED_SUCCESS
    if addresses(content, segment):
        return HEALTHY_SUCCESS[segment]
    since, broken = PROBLEMS.get(segment, (float("inf"), 0.0))
    return broken if day >= since else HEALTHY_SUCCESS[segment]


def addresses(content: str, segment: str) -> bool:
    """Guidance for the segment in the offline generator's words, or (for the variants
    Claude writes in the demo) any mention of a segment the first prompt never names."""
    if has_guidance(content, segment):
        return True
    return segment not in FIRST_PROMPT.lower() and segment in content.lower()


def expected_success_rate(content: str, day: float = 0.0) -> float:
    return sum(
        share * true_success_rate(content, segment, day)
        for segment, share in SEGMENT_SHARES.items()
    )


@dataclass(frozen=True)
class Visit:
    unit_id: str
    segment: str
    occurred_at: datetime


class World:
    def __init__(self, seed: int, users: int = 3000, start: datetime | None = None) -> None:
        self.rng = random.Random(seed)
        self.users = users
        # Day 0 of the story; by default the start of the first visits asked for.
        self.start = start
        self._segments = list(SEGMENT_SHARES)
        self._weights = [SEGMENT_SHARES[s] for s in self._segments]

    def day(self, at: datetime) -> float:
        if self.start is None:
            return 0.0
        return (at - self.start).total_seconds() / 86400.0

    def visits(self, start: datetime, minutes: float, count: int) -> list[Visit]:
        """`count` conversations spread over `minutes` from `start`."""
        if self.start is None:
            self.start = start
        out = []
        for _ in range(count):
            segment = self.rng.choices(self._segments, self._weights)[0]
            offset = timedelta(minutes=self.rng.uniform(0, minutes))
            out.append(Visit(f"user-{self.rng.randrange(self.users)}", segment, start + offset))
        return out

    def outcome(self, visit: Visit, content: str) -> dict[str, Any]:
        """The conversation record the application would log for this visit."""
        rate = true_success_rate(content, visit.segment, self.day(visit.occurred_at))
        success = self.rng.random() < rate
        rating = self.rng.choice((4, 5)) if success else self.rng.choice((1, 2, 3))
        return {
            "unit_id": visit.unit_id,
            "segment": visit.segment,
            "success": success,
            "rating": rating,
            "latency_ms": round(self.rng.uniform(400, 1600), 1),
            "cost_usd": round(self.rng.uniform(0.001, 0.004), 5),
            **self._record(visit.segment, success),
            "occurred_at": visit.occurred_at.isoformat(),
        }

    def _record(self, segment: str, success: bool) -> dict[str, Any]:
        """How the application logged the words: structured messages, a text transcript,
        or a closing note without the user's words (which replay cannot use)."""
        turns = [("user", QUESTIONS[segment])]
        turns.append(("assistant", GOOD_ANSWER if success else BAD_ANSWERS[segment]))
        if self.rng.random() < 0.5:  # some users write again
            turns += [("user", FOLLOW_UPS[success]), ("assistant", FOLLOW_UP_ANSWERS[success])]
        form = self.rng.random()
        if form < MESSAGES_SHARE:
            return {"messages": [{"role": role, "content": text} for role, text in turns]}
        if form < MESSAGES_SHARE + TRANSCRIPT_SHARE:
            return {"transcript": "\n".join(f"{role}: {text}" for role, text in turns)}
        return {"transcript": NOTES[success].format(segment=segment)}
