"""The simulated application behind `prompt-worker demo`: users, segments and the hidden
truth of how well each prompt version serves each segment.

Pure: a seeded random generator in, conversation records out. The optimizer never sees the
truth; it only sees the outcomes, as it would in production.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

PROMPT_NAME = "support-bot"
FIRST_PROMPT = (
    "You are the support assistant of Acme Online, talking with {{customer_name}}.\n"
    "Answer questions about orders, shipping, returns and accounts politely and briefly.\n"
    "If you do not know something, say so and offer to connect the customer with a person."
)

# Share of traffic per segment, and each segment's true success rate under a prompt that
# does not address it specifically. Billing is where the first prompt does badly.
SEGMENT_SHARES = {"shipping": 0.30, "returns": 0.25, "account": 0.20, "billing": 0.25}
BASE_SUCCESS = {"shipping": 0.74, "returns": 0.72, "account": 0.75, "billing": 0.38}
# What a prompt that gives billing questions explicit guidance achieves there.
FIXED_BILLING_SUCCESS = 0.72

FAILED_TRANSCRIPTS = {
    "billing": (
        "user: I was charged twice for my order, can you refund the duplicate charge?\n"
        "assistant: I can only help with orders, shipping, returns and accounts. "
        "Please contact your bank about charges."
    ),
    "shipping": (
        "user: Where is my parcel? It was due yesterday.\n"
        "assistant: Parcels usually arrive within a week."
    ),
    "returns": (
        "user: How do I return a damaged item?\nassistant: Returns are possible within 30 days."
    ),
    "account": ("user: I cannot log in to my account.\nassistant: Please try again later."),
}
GOOD_TRANSCRIPT = (
    "user: Can you help me with my {segment} question?\n"
    "assistant: Of course, here is exactly what to do, step by step."
)


def true_success_rate(content: str, segment: str) -> float:
    """The hidden truth: a version that mentions billing handles billing questions well."""
    if segment == "billing" and "billing" in content.lower():
        return FIXED_BILLING_SUCCESS
    return BASE_SUCCESS[segment]


def expected_success_rate(content: str) -> float:
    return sum(
        share * true_success_rate(content, segment) for segment, share in SEGMENT_SHARES.items()
    )


@dataclass(frozen=True)
class Visit:
    unit_id: str
    segment: str
    occurred_at: datetime


class World:
    def __init__(self, seed: int, users: int = 3000) -> None:
        self.rng = random.Random(seed)
        self.users = users
        self._segments = list(SEGMENT_SHARES)
        self._weights = [SEGMENT_SHARES[s] for s in self._segments]

    def visits(self, start: datetime, minutes: float, count: int) -> list[Visit]:
        """`count` conversations spread over `minutes` from `start`."""
        out = []
        for _ in range(count):
            segment = self.rng.choices(self._segments, self._weights)[0]
            offset = timedelta(minutes=self.rng.uniform(0, minutes))
            out.append(Visit(f"user-{self.rng.randrange(self.users)}", segment, start + offset))
        return out

    def outcome(self, visit: Visit, content: str) -> dict[str, Any]:
        """The conversation record the application would log for this visit."""
        success = self.rng.random() < true_success_rate(content, visit.segment)
        rating = self.rng.choice((4, 5)) if success else self.rng.choice((1, 2, 3))
        transcript = (
            GOOD_TRANSCRIPT.format(segment=visit.segment)
            if success
            else FAILED_TRANSCRIPTS[visit.segment]
        )
        return {
            "unit_id": visit.unit_id,
            "segment": visit.segment,
            "success": success,
            "rating": rating,
            "latency_ms": round(self.rng.uniform(400, 1600), 1),
            "cost_usd": round(self.rng.uniform(0.001, 0.004), 5),
            "transcript": transcript,
            "occurred_at": visit.occurred_at.isoformat(),
        }
