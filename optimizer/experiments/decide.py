"""The decision of one experiment check: a pure function of (analysis, arms, settings, now).

Order of precedence:
1. pause_srm: the sample-ratio-mismatch test (units per assignment slice) fired; no
   effect estimate can be trusted.
2. promote: some variant arm's always-valid interval on the primary metric lies entirely
   on the better side of zero AND every guardrail is shown non-inferior within its
   tolerance (an intersection-union test: each at the arm's alpha), every active arm has
   at least min_conversations_per_arm conversations and MIN_UNITS_PER_ARM units, and the
   experiment has run at least min_runtime_hours. A guardrail no arm has any data for does
   not block unless it is required. With several such arms the winner is the one with the
   largest guaranteed improvement (the interval's bound nearest zero), ties to the lowest
   arm id.
3. inconclusive: max_runtime_hours reached (or no variant arm is active any more); the
   control stays.
4. stop_arms: variant arms that hurt: the primary interval lies entirely on the worse side
   of zero, or a guardrail shows harm beyond its tolerance; once the arm and control both
   have the minimum conversations and units. The minimum runtime does not hold this back
   (the arm hurts users). A stopped arm stays stopped. The control is never stopped.
5. continue.

Reasons name prompt versions ("v4 over v3"); arm ids appear only as a detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from optimizer.stats import ArmData, Comparison, ExperimentAnalysis, GuardrailCheck

DecisionKind = Literal["continue", "promote", "stop_arms", "pause_srm", "inconclusive"]
# The delta method's normal approximation needs some units per arm before anything is
# decided, however many conversations a few heavy users bring.
MIN_UNITS_PER_ARM = 30


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


def decide(
    analysis: ExperimentAnalysis,
    arms: Sequence[ArmData],
    settings: DecisionSettings,
    started_at: datetime | None,
    now: datetime,
) -> Decision:
    hours = _hours(started_at, now)
    by_id = {a.arm_id: a for a in arms}
    control = next((a for a in arms if a.is_control), None)
    active = [a for a in arms if a.active]
    variants = [a for a in active if not a.is_control]

    if analysis.srm.detected:
        return Decision("pause_srm", None, (), _srm_reason(analysis, by_id, hours))
    if control is None:
        if hours >= settings.max_runtime_hours:
            return Decision(
                "inconclusive",
                None,
                (),
                f"No control arm; maximum runtime {settings.max_runtime_hours:g} h "
                f"reached after {hours:.1f} h.",
            )
        return Decision("continue", None, (), "No control arm to compare against.")

    comparisons = {c.arm_id: c for c in analysis.comparisons}
    guards: dict[int, list[GuardrailCheck]] = {}
    for g in analysis.guardrails:
        guards.setdefault(g.arm_id, []).append(g)
    enough = bool(active) and all(_enough(a, settings) for a in active)
    long_enough = hours >= settings.min_runtime_hours

    winners = [
        comparisons[a.arm_id]
        for a in variants
        if a.arm_id in comparisons
        and comparisons[a.arm_id].improves
        and all(g.passes for g in guards.get(a.arm_id, []))
    ]
    if winners and enough and long_enough:
        best = max(winners, key=lambda c: (_guaranteed(c), -c.arm_id))
        return Decision(
            "promote",
            best.arm_id,
            (),
            _promote_reason(best, guards.get(best.arm_id, []), by_id, control, hours),
        )

    if not variants:
        return Decision(
            "inconclusive",
            None,
            (),
            f"No variant arm is active any more after {hours:.1f} h; control {_v(control)} stays.",
        )
    if hours >= settings.max_runtime_hours:
        parts = [
            _describe(comparisons[a.arm_id], by_id, control)
            for a in variants
            if a.arm_id in comparisons
        ]
        return Decision(
            "inconclusive",
            None,
            (),
            (
                f"Maximum runtime {settings.max_runtime_hours:g} h reached after {hours:.1f} h "
                f"without a winner; " + "; ".join(parts) + "."
            ),
        )

    stops = [
        (a, _harms(comparisons.get(a.arm_id), guards.get(a.arm_id, [])))
        for a in variants
        if _enough(a, settings) and _enough(control, settings)
    ]
    stops = [(a, why) for a, why in stops if why]
    if stops:
        return Decision(
            "stop_arms",
            None,
            tuple(a.arm_id for a, _ in stops),
            (
                "Stop "
                + "; ".join(f"{_v(a)} ({', '.join(why)})" for a, why in stops)
                + f", {hours:.1f} h in; its traffic returns to control {_v(control)}."
            ),
        )

    return Decision(
        "continue",
        None,
        (),
        _continue_reason(variants, comparisons, guards, by_id, control, settings, hours),
    )


def _enough(arm: ArmData, settings: DecisionSettings) -> bool:
    return (
        arm.conversations >= settings.min_conversations_per_arm and arm.units >= MIN_UNITS_PER_ARM
    )


def _harms(primary: Comparison | None, guards: Sequence[GuardrailCheck]) -> list[str]:
    why = (
        [f"worse than control on {primary.metric}: {_interval(primary)}"]
        if primary is not None and primary.hurts
        else []
    )
    return why + [f"guardrail {_guard(g)}" for g in guards if g.harmed]


def _promote_reason(
    best: Comparison,
    guards: Sequence[GuardrailCheck],
    by_id: dict[int, ArmData],
    control: ArmData,
    hours: float,
) -> str:
    arm = by_id[best.arm_id]
    checked = [_guard(g) for g in guards if g.status == "non_inferior"]
    absent = [g.metric for g in guards if g.status == "no_data"]
    notes = ["guardrails within tolerance: " + "; ".join(checked)] if checked else []
    if absent:
        notes.append("guardrails without data (not required): " + ", ".join(absent))
    notes.append("no sample ratio mismatch")
    return (
        f"Promote {_v(arm)} over {_v(control)}: {_describe(best, by_id, control)}, "
        f"{hours:.1f} h in; " + "; ".join(notes) + "."
    )


def _continue_reason(
    variants: Sequence[ArmData],
    comparisons: dict[int, Comparison],
    guards: dict[int, list[GuardrailCheck]],
    by_id: dict[int, ArmData],
    control: ArmData,
    settings: DecisionSettings,
    hours: float,
) -> str:
    waits = []
    if hours < settings.min_runtime_hours:
        waits.append(f"{hours:.1f} h of the minimum {settings.min_runtime_hours:g} h")
    short = [a for a in (control, *variants) if not _enough(a, settings)]
    if short:
        waits.append(
            "too little data yet: "
            + ", ".join(f"{_v(a)} {a.units} units/{a.conversations} conversations" for a in short)
            + f" (minimum {MIN_UNITS_PER_ARM} units and {settings.min_conversations_per_arm} "
            "conversations per arm)"
        )
    for a in variants:
        if a.arm_id in comparisons:
            waits.append(_describe(comparisons[a.arm_id], by_id, control))
        blocking = [g for g in guards.get(a.arm_id, []) if not g.passes]
        if blocking:
            waits.append(
                f"{_v(a)} guardrails not yet within tolerance: "
                + "; ".join(_guard(g) for g in blocking)
            )
    return "Continue: " + "; ".join(waits) + "."


def _srm_reason(analysis: ExperimentAnalysis, by_id: dict[int, ArmData], hours: float) -> str:
    srm = analysis.srm
    observed = ", ".join(
        f"{_v(by_id[i]) if i in by_id else f'arm {i}'}: {c}"
        for i, c in zip(srm.arm_ids, srm.counts, strict=False)
    )
    shares = ", ".join(f"{100 * p:.1f}%" for p in srm.expected_shares)
    return (
        f"Sample ratio mismatch after {hours:.1f} h: units {observed} against configured "
        f"shares {shares} (Bayes factor {_bf(srm.bayes_factor)} >= {_bf(srm.threshold)}); "
        "results cannot be trusted until the assignment is fixed."
    )


def _hours(started_at: datetime | None, now: datetime) -> float:
    if started_at is None:
        return 0.0
    return max(0.0, (now - started_at).total_seconds() / 3600.0)


def _guaranteed(c: Comparison) -> float:
    """The improvement the interval guarantees (its bound nearest zero, as a gain)."""
    assert c.diff_low is not None and c.diff_high is not None
    return c.diff_low if c.higher_is_better else -c.diff_high


def _v(arm: ArmData) -> str:
    return f"v{arm.version} (arm {arm.arm_id})"


def _describe(c: Comparison, by_id: dict[int, ArmData], control: ArmData) -> str:
    arm = by_id.get(c.arm_id)
    name = _v(arm) if arm is not None else f"arm {c.arm_id}"
    sizes = (
        ""
        if arm is None
        else (
            f" with {arm.units}/{control.units} units and {arm.conversations}/"
            f"{control.conversations} conversations (arm/control)"
        )
    )
    if c.error is not None:
        return f"{name}: {c.metric} not comparable yet ({c.error.replace('_', ' ')}){sizes}"
    return f"{name}: {c.metric} {_interval(c)}{sizes}"


def _interval(c: Comparison) -> str:
    level = f"{100 * c.level:.4g}%" if c.level is not None else "always-valid"
    rel = f"{100 * c.relative:+.1f}%, " if c.relative is not None else ""
    strata = f", post-stratified over {c.strata} segment groups" if c.strata > 1 else ""
    return (
        f"{_num(c.mean_arm)} vs {_num(c.mean_control)} ({rel}{level} always-valid "
        f"interval {_num(c.diff_low, True)}..{_num(c.diff_high, True)}{strata})"
    )


def _guard(g: GuardrailCheck) -> str:
    allowed = f"{'-' if g.higher_is_better else '+'}{100 * g.tolerance:.4g}%"
    if g.status == "no_data":
        return f"{g.metric} has no data" + (" (required)" if g.required else "")
    if g.error is not None:
        return f"{g.metric} not comparable ({g.error.replace('_', ' ')})"
    rel = f"{100 * g.relative:+.1f}%" if g.relative is not None else "n/a"
    verdict = {
        "non_inferior": "within",
        "harmed": "beyond",
        "undecided": "not yet shown within",
    }.get(g.status, g.status)
    cap = f", values capped at {g.cap:.4g}" if g.cap is not None else ""
    return f"{g.metric} {rel} vs control, {verdict} the allowed {allowed}{cap}"


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return (
        f"{value:+.3g}"
        if signed and abs(value) >= 1000
        else (
            f"{value:+.3f}" if signed else f"{value:.3f}" if abs(value) < 1000 else f"{value:.4g}"
        )
    )


def _bf(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}" if value < 1e6 else f"{value:.3g}"
