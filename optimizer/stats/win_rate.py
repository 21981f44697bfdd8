"""A candidate's win rate against the active version over pairwise judgements. Pure.

Each replayed conversation gives one score: 1 when the judge preferred the candidate in both
orders, 0 when it preferred the active version in both, and 0.5 for anything else (a tie, or
verdicts that flipped with the order: position bias, not a preference). The win rate is the
mean score; its interval is Wilson's score interval with the half points counted as half a
win. Ties have less variance than a coin flip, so the interval is, if anything, too wide:
the gate built on it errs towards keeping a candidate away from users.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import norm

WIN, TIE, LOSS = 1.0, 0.5, 0.0


@dataclass(frozen=True)
class WinRate:
    n: int
    wins: int  # the candidate preferred in both orders
    ties: int  # everything else
    losses: int  # the active version preferred in both orders
    rate: float | None  # None when n == 0
    low: float | None
    high: float | None
    confidence: float
    error: str | None = None  # "empty" when no judgement was given

    def to_dict(self) -> dict[str, object]:
        return {
            "n": self.n,
            "wins": self.wins,
            "ties": self.ties,
            "losses": self.losses,
            "rate": self.rate,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "error": self.error,
        }


def pair_score(candidate_first: str, control_first: str) -> float:
    """The score of one conversation from the judge's two verdicts ("candidate", "control"
    or "tie" each: which answer it preferred, whatever position it was shown in)."""
    if candidate_first == control_first == "candidate":
        return WIN
    if candidate_first == control_first == "control":
        return LOSS
    return TIE


def win_rate(scores: Sequence[float], confidence: float = 0.90) -> WinRate:
    """Mean score with its two-sided Wilson interval at `confidence`."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    n = len(scores)
    wins = sum(1 for s in scores if s == WIN)
    losses = sum(1 for s in scores if s == LOSS)
    return _wilson(n, wins, losses, sum(scores) / n if n else 0.0, confidence)


def win_rate_from_counts(wins: int, ties: int, losses: int, confidence: float = 0.90) -> WinRate:
    """win_rate() of `wins` scores of 1, `ties` of 0.5 and `losses` of 0: the figures kept
    as counts (a GROUP BY in SQL) need not be expanded back into scores."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if min(wins, ties, losses) < 0:
        raise ValueError(f"counts must not be negative; got {wins}, {ties}, {losses}")
    n = wins + ties + losses
    return _wilson(n, wins, losses, (wins + TIE * ties) / n if n else 0.0, confidence)


def _wilson(n: int, wins: int, losses: int, p: float, confidence: float) -> WinRate:
    if n == 0:
        return WinRate(0, 0, 0, 0, None, None, None, confidence, error="empty")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return WinRate(
        n=n,
        wins=wins,
        ties=n - wins - losses,
        losses=losses,
        rate=p,
        # Wilson's interval holds p; rounding can put an end a hair on the wrong side.
        low=max(0.0, min(p, centre - half)),
        high=min(1.0, max(p, centre + half)),
        confidence=confidence,
    )
