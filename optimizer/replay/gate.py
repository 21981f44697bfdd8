"""Which candidates go live after replay. Pure.

A candidate passes when it wins on the failing sample (the lower end of its win rate's
interval is above one half) and does not lose on the held-out sample: the upper end of that
interval is at least one half, and it lost no more held-out conversations than it won, give
or take one in six (at least one: a single judge's miss does not reject a candidate). The
second half matters because a regression meets a small held-out sample only a few times:
a candidate that breaks one of three other segments loses about two of six held-out
conversations and ties the rest, and the interval alone (up to 0.65 there) keeps it.
An empty held-out sample (REPLAY_HOLDOUT_SAMPLE=0, or no successful conversation outside
the segment could be replayed) is not held against it, and its reason says so; an empty
failing sample is, since nothing then shows the candidate fixes anything.

Passing candidates are ranked by the held-out win rate, then the failing one; the best
`max_live` go live. Held-out first: every passing candidate has cleared the failing bar, and
above it the failing rates of good candidates differ by the judge's noise, while a held-out
loss is a sign of a regression. Every decision carries its reason with the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optimizer.stats.win_rate import WinRate

GATE_CONFIDENCE = 0.90
HALF = 0.5
# A held-out sample may show one net loss per this many conversations (a judge's miss).
HOLDOUT_CONVERSATIONS_PER_MISS = 6


@dataclass(frozen=True)
class CandidateFigures:
    version: int
    failing: WinRate
    holdout: WinRate
    # Why a sample is empty, when it is: shown in the reason instead of the figures.
    failing_empty: str = "no failing conversation with usable turns"
    holdout_empty: str = "no held-out conversation with usable turns"


@dataclass(frozen=True)
class GateDecision:
    version: int
    passed: bool
    live: bool  # passed and among the best `max_live`
    reason: str
    failing: WinRate
    holdout: WinRate

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "passed": self.passed,
            "live": self.live,
            "reason": self.reason,
            "failing": self.failing.to_dict(),
            "holdout": self.holdout.to_dict(),
        }


def figures_text(rate: WinRate) -> str:
    """'won 3, tied 2, lost 3 of 8, win rate 0.50 [0.27, 0.73] at 90%'."""
    if rate.rate is None or rate.low is None or rate.high is None:
        return "no judgement"
    return (
        f"won {rate.wins}, tied {rate.ties}, lost {rate.losses} of {rate.n}, win rate "
        f"{rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}] at {rate.confidence:.0%}"
    )


def wins_failing(figures: CandidateFigures) -> tuple[bool, str]:
    rate = figures.failing
    if rate.low is None:
        return False, f"failing sample: empty ({figures.failing_empty}): nothing shows a fix"
    if rate.low > HALF:
        return True, f"failing sample: {figures_text(rate)}: above one half"
    return False, f"failing sample: {figures_text(rate)}: not above one half"


def allowed_net_losses(n: int) -> int:
    """How many more held-out conversations than it won a candidate may lose: one in
    HOLDOUT_CONVERSATIONS_PER_MISS, at least one."""
    return max(1, n // HOLDOUT_CONVERSATIONS_PER_MISS)


def holds_holdout(figures: CandidateFigures) -> tuple[bool, str]:
    rate = figures.holdout
    if rate.high is None:
        return True, f"held-out sample: empty ({figures.holdout_empty}): not checked"
    if rate.high < HALF:
        return False, f"held-out sample: {figures_text(rate)}: loses to the active version"
    net, allowed = rate.losses - rate.wins, allowed_net_losses(rate.n)
    if net > allowed:
        return False, (
            f"held-out sample: {figures_text(rate)}: loses to the active version ({net} "
            f"more lost than won; at most {allowed} allowed in {rate.n})"
        )
    return True, f"held-out sample: {figures_text(rate)}: not losing"


def decide(figures: Sequence[CandidateFigures], *, max_live: int) -> list[GateDecision]:
    """A decision per candidate: those that go live first (best first), then those that
    passed but were held back, then the rejected ones (by version)."""
    if max_live < 1:
        raise ValueError(f"max_live must be at least 1; got {max_live}")
    passing, rejected = [], []
    for item in figures:
        (won, failing_text), (held, holdout_text) = wins_failing(item), holds_holdout(item)
        if won and held:
            passing.append((item, f"{failing_text}; {holdout_text}"))
        else:
            rejected.append((item, f"rejected by replay: {failing_text}; {holdout_text}"))
    passing.sort(key=lambda pair: _rank(pair[0]))
    decisions = [
        GateDecision(item.version, True, True, f"passed replay: {text}", item.failing, item.holdout)
        for item, text in passing[:max_live]
    ]
    decisions += [
        GateDecision(
            item.version,
            True,
            False,
            f"passed replay but held back: at most {max_live} candidate(s) go live "
            f"(MAX_LIVE_CANDIDATES) and {max_live} ranked higher: {text}",
            item.failing,
            item.holdout,
        )
        for item, text in passing[max_live:]
    ]
    rejected.sort(key=lambda pair: pair[0].version)
    decisions += [
        GateDecision(item.version, False, False, text, item.failing, item.holdout)
        for item, text in rejected
    ]
    return decisions


def _rank(item: CandidateFigures) -> tuple[float, float, int]:
    failing = item.failing.rate if item.failing.rate is not None else 0.0
    holdout = item.holdout.rate if item.holdout.rate is not None else HALF
    return (-holdout, -failing, item.version)
