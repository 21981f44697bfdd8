"""The decision of one experiment check: a pure function of (analysis, arms, settings, now).

Order of precedence:
1. pause_srm: the sample-ratio-mismatch test fired; no effect estimate can be trusted.
2. promote: some variant arm's always-valid interval on the primary metric lies entirely
   on the better side of zero, no guardrail shows harm for that arm, every active arm has
   at least min_conversations_per_arm conversations and the experiment has run at least
   min_runtime_hours. With several such arms the winner is the one with the largest
   guaranteed improvement (the interval's bound nearest zero, i.e. the highest lower bound
   when higher is better), ties to the lowest arm id.
3. inconclusive: max_runtime_hours reached (or no variant arm is active any more); the
   control stays.
4. stop_arms: variant arms whose interval lies entirely on the worse side of zero, once
   the arm and control both have min_conversations_per_arm conversations; the minimum
   runtime does not hold this back (the arm hurts users). The control is never stopped.
5. continue.

A guardrail metric without data (the application does not report it) cannot show harm and
does not block promotion; the promotion reason names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from optimizer.stats import ArmData, Comparison, ExperimentAnalysis, GuardrailCheck

DecisionKind = Literal["continue", "promote", "stop_arms", "pause_srm", "inconclusive"]


@dataclass(frozen=True)
class DecisionSettings:
    min_conversations_per_arm: int
    min_runtime_hours: float
    max_runtime_hours: float


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    winner_arm_id: int | None
    stopped_arm_ids: tuple[int, ...]
    reason: str


def decide(analysis: ExperimentAnalysis, arms: Sequence[ArmData], settings: DecisionSettings,
           started_at: datetime | None, now: datetime) -> Decision:
    hours = _hours(started_at, now)
    by_id = {a.arm_id: a for a in arms}
    control = next((a for a in arms if a.is_control), None)
    active = [a for a in arms if a.active]
    variants = [a for a in active if not a.is_control]
    minimum = settings.min_conversations_per_arm
    counts = "/".join(str(a.conversations) for a in active)

    if analysis.srm.detected:
        srm = analysis.srm
        observed = ", ".join(f"arm {i}: {c}" for i, c in zip(srm.arm_ids, srm.counts,
                                                                   strict=False))
        shares = ", ".join(f"{100 * p:.1f}%" for p in srm.expected_shares)
        return Decision("pause_srm", None, (), (
            f"Sample ratio mismatch after {hours:.1f} h: conversations {observed} against "
            f"configured shares {shares} (Bayes factor {_bf(srm.bayes_factor)} >= "
            f"{_bf(srm.threshold)}); results cannot be trusted until the assignment is fixed."))

    if control is None:
        if hours >= settings.max_runtime_hours:
            return Decision("inconclusive", None, (),
                            f"No control arm; maximum runtime {settings.max_runtime_hours:g} h "
                            f"reached after {hours:.1f} h.")
        return Decision("continue", None, (), "No control arm to compare against.")

    comparisons = {c.arm_id: c for c in analysis.comparisons}
    harms: dict[int, list[GuardrailCheck]] = {}
    unchecked: dict[int, list[str]] = {}
    for g in analysis.guardrails:
        if g.harmed:
            harms.setdefault(g.arm_id, []).append(g)
        elif g.error is not None:
            unchecked.setdefault(g.arm_id, []).append(g.metric)

    enough = bool(active) and all(a.conversations >= minimum for a in active)
    long_enough = hours >= settings.min_runtime_hours

    # 2. promote
    candidates = [comparisons[a.arm_id] for a in variants
                  if a.arm_id in comparisons and comparisons[a.arm_id].improves
                  and a.arm_id not in harms]
    if candidates and enough and long_enough:
        best = max(candidates, key=lambda c: (_guaranteed(c), -c.arm_id))
        notes = ["no guardrail harm"]
        if unchecked.get(best.arm_id):
            notes.append("guardrails without data: " + ", ".join(unchecked[best.arm_id]))
        notes.append("no sample ratio mismatch")
        return Decision("promote", best.arm_id, (), (
            f"Promote variant arm {best.arm_id}: {_describe(best, by_id, control)}, "
            f"{hours:.1f} h in; " + "; ".join(notes) + "."))

    # 3. inconclusive
    if not variants:
        return Decision("inconclusive", None, (),
                        f"No variant arm is active any more after {hours:.1f} h; "
                        f"control arm {control.arm_id} stays.")
    if hours >= settings.max_runtime_hours:
        parts = [_describe(comparisons[a.arm_id], by_id, control, arm=True)
                 for a in variants if a.arm_id in comparisons]
        return Decision("inconclusive", None, (), (
            f"Maximum runtime {settings.max_runtime_hours:g} h reached after {hours:.1f} h "
            f"without a winner; " + "; ".join(parts) + "."))

    # 4. stop arms that hurt
    stopped = [comparisons[a.arm_id] for a in variants
               if a.arm_id in comparisons and comparisons[a.arm_id].hurts
               and a.conversations >= minimum and control.conversations >= minimum]
    if stopped:
        return Decision("stop_arms", None, tuple(c.arm_id for c in stopped), (
            "Stop " + "; ".join(f"variant arm {c.arm_id} (worse than control: "
                                f"{_describe(c, by_id, control)})" for c in stopped)
            + f", {hours:.1f} h in; its traffic returns to control."))

    # 5. continue
    waits = []
    if not long_enough:
        waits.append(f"{hours:.1f} h of the minimum {settings.min_runtime_hours:g} h")
    if not enough:
        waits.append(f"conversations {counts} (minimum {minimum} per arm)")
    for c in (comparisons[a.arm_id] for a in variants if a.arm_id in comparisons):
        if c.arm_id in harms and c.improves:
            waits.append(f"variant arm {c.arm_id} is better on {c.metric} but harms "
                         + ", ".join(_harm(g) for g in harms[c.arm_id]))
        else:
            waits.append(_describe(c, by_id, control, arm=True))
    return Decision("continue", None, (), "Continue: " + "; ".join(waits) + ".")


def _hours(started_at: datetime | None, now: datetime) -> float:
    if started_at is None:
        return 0.0
    return max(0.0, (now - started_at).total_seconds() / 3600.0)


def _guaranteed(c: Comparison) -> float:
    """The improvement the interval guarantees (its bound nearest zero, as a gain)."""
    assert c.diff_low is not None and c.diff_high is not None
    return c.diff_low if c.higher_is_better else -c.diff_high


def _describe(c: Comparison, by_id: dict[int, ArmData], control: ArmData,
              arm: bool = False) -> str:
    prefix = f"variant arm {c.arm_id}: " if arm else ""
    conv = by_id[c.arm_id].conversations if c.arm_id in by_id else c.n_arm
    after = f"with {conv}/{control.conversations} conversations (arm/control)"
    if c.error is not None:
        return f"{prefix}{c.metric} not comparable yet ({c.error.replace('_', ' ')}) {after}"
    level = f"{100 * c.level:.4g}%" if c.level is not None else "always-valid"
    rel = f"{100 * c.relative:+.1f}%, " if c.relative is not None else ""
    return (f"{prefix}{c.metric} {_num(c.mean_arm)} vs {_num(c.mean_control)} ({rel}{level} "
            f"always-valid interval {_num(c.diff_low, True)}..{_num(c.diff_high, True)}) "
            f"{after}")


def _harm(g: GuardrailCheck) -> str:
    side = "upper" if g.higher_is_better else "lower"
    return (f"{g.metric} (difference {_num(g.estimate, True)}, {side} bound "
            f"{_num(g.bound, True)} beyond {_num(g.threshold, True)})")


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3g}" if signed and abs(value) >= 1000 else (
        f"{value:+.3f}" if signed else f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}")


def _bf(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value < 1e6 else f"{value:.3g}"
