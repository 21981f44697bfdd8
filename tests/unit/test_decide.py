"""decide(): every branch, readable reasons, and the benchmark's vectorised path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from benchmarks.aa_ab_simulation import KINDS, simulate, vector_decisions
from optimizer.experiments.decide import DecisionSettings, decide
from optimizer.stats import AnalysisSettings, ArmData, Guardrail, MetricSums, analyze

T0 = datetime(2024, 5, 1, tzinfo=UTC)
SETTINGS = DecisionSettings(min_conversations_per_arm=100, min_runtime_hours=24,
                            max_runtime_hours=336)


def arm(arm_id, n, successes, control=False, active=True, weight=1.0, **extra):
    metrics = {"success": MetricSums(n, float(successes), float(successes))}
    metrics.update(extra)
    return ArmData(arm_id, control, weight, active, n, metrics)


def run(arms, hours, settings=SETTINGS, analysis_settings=None):
    analysis = analyze(arms, analysis_settings or AnalysisSettings())
    return decide(analysis, arms, settings, T0, T0 + timedelta(hours=hours))


def test_promote_with_numbers_in_the_reason():
    d = run([arm(1, 805, 242, control=True), arm(7, 812, 335)], hours=30)
    assert d.kind == "promote" and d.winner_arm_id == 7 and d.stopped_arm_ids == ()
    for text in ("variant arm 7", "0.413 vs 0.301", "+37.", "90% always-valid interval",
                 "812/805 conversations", "no guardrail harm", "no sample ratio mismatch"):
        assert text in d.reason


def test_gates_hold_promotion_back():
    winner = [arm(1, 805, 242, control=True), arm(7, 812, 335)]
    early = run(winner, hours=3)
    assert early.kind == "continue" and "3.0 h of the minimum 24 h" in early.reason
    few = run([arm(1, 90, 10, control=True), arm(7, 95, 80)], hours=30)
    assert few.kind == "continue" and "minimum 100 per arm" in few.reason
    # an active third arm short of the minimum holds the promotion back too
    third = run(winner + [arm(9, 50, 15, weight=0.062)], hours=30)
    assert third.kind == "continue"


def test_guardrail_harm_blocks_promotion():
    rng = np.random.default_rng(1)
    lat_c, lat_t = rng.normal(1000, 100, 805), rng.normal(1500, 100, 812)

    def ms(x):
        return MetricSums(len(x), float(x.sum()), float((x * x).sum()))

    arms = [arm(1, 805, 242, control=True, latency_ms=ms(lat_c)),
            arm(7, 812, 335, latency_ms=ms(lat_t))]
    d = run(arms, hours=30)
    assert d.kind == "continue" and "harms latency_ms" in d.reason
    # without the guardrail the same data promotes
    d = run(arms, hours=30, analysis_settings=AnalysisSettings(guardrails=(
        Guardrail("rating", True, 0.0),)))
    assert d.kind == "promote"


def test_several_winners_pick_the_highest_lower_bound():
    arms = [arm(1, 2000, 600, control=True), arm(2, 2000, 700), arm(3, 2000, 760),
            arm(4, 2000, 740)]
    d = run(arms, hours=48)
    assert d.kind == "promote" and d.winner_arm_id == 3


def test_srm_pauses_and_takes_precedence():
    arms = [arm(1, 3000, 900, control=True), arm(7, 2000, 800)]
    d = run(arms, hours=30)
    assert d.kind == "pause_srm" and d.winner_arm_id is None
    assert "Sample ratio mismatch" in d.reason and "arm 1: 3000" in d.reason
    assert "50.0%" in d.reason


def test_stop_harmful_arm_before_min_runtime_but_after_min_conversations():
    arms = [arm(1, 400, 200, control=True), arm(2, 400, 80), arm(3, 400, 205)]
    d = run(arms, hours=2)
    assert d.kind == "stop_arms" and d.stopped_arm_ids == (2,)
    assert "variant arm 2" in d.reason and "traffic returns to control" in d.reason
    few = run([arm(1, 60, 50, control=True), arm(2, 60, 5)], hours=2)
    assert few.kind == "continue"


def test_control_is_never_stopped():
    # every variant is far better: the control's interval "below" them must not stop it
    d = run([arm(1, 400, 40, control=True), arm(2, 400, 300)], hours=2)
    assert d.kind == "continue" and d.stopped_arm_ids == ()


def test_inconclusive_at_max_runtime_and_without_active_variants():
    arms = [arm(1, 20000, 6000, control=True), arm(2, 20000, 6020)]
    d = run(arms, hours=336)
    assert d.kind == "inconclusive" and "Maximum runtime 336 h" in d.reason
    assert run(arms, hours=335.75).kind == "continue"
    gone = run([arm(1, 500, 150, control=True), arm(2, 100, 5, active=False)], hours=30)
    assert gone.kind == "inconclusive" and "No variant arm is active" in gone.reason


def test_continue_reason_and_degenerate_inputs():
    d = run([arm(1, 0, 0, control=True), arm(2, 0, 0)], hours=0.25)
    assert d.kind == "continue" and "not comparable yet" in d.reason
    no_control = run([arm(1, 500, 150), arm(2, 500, 300)], hours=30)
    assert no_control.kind == "continue" and "No control" in no_control.reason
    assert run([arm(1, 500, 150), arm(2, 500, 300)], hours=400).kind == "inconclusive"
    assert decide(analyze([], AnalysisSettings()), [], SETTINGS, None, T0).kind == "continue"


def test_lower_is_better_primary_promotes_on_a_decrease():
    rng = np.random.default_rng(4)

    def lat(mean, n):
        x = rng.normal(mean, 100, n)
        return MetricSums(n, float(x.sum()), float((x * x).sum()))

    arms = [ArmData(1, True, 1, True, 500, {"latency_ms": lat(1000, 500)}),
            ArmData(2, False, 1, True, 500, {"latency_ms": lat(900, 500)})]
    d = run(arms, hours=30, analysis_settings=AnalysisSettings(primary_metric="latency_ms",
                                                               guardrails=()))
    assert d.kind == "promote" and d.winner_arm_id == 2


@pytest.mark.parametrize("lift", [0.0, 0.3])
def test_vectorised_benchmark_path_matches_analyze_and_decide(lift):
    settings = DecisionSettings(100, 6, 40)
    paths = simulate(np.random.default_rng([3, int(lift * 10)]), 12, 160, lift)
    codes = vector_decisions(paths, min_conversations=100, min_runtime_hours=6,
                             max_runtime_hours=40)
    seen = set()
    for e in range(12):
        for j in range(160):
            n_c, s_c = int(paths.n_c[e, j]), paths.s_c[e, j]
            n_t, s_t = int(paths.n_t[e, j]), paths.s_t[e, j]
            arms = [ArmData(1, True, 0.5, True, n_c, {"success": MetricSums(n_c, s_c, s_c)}),
                    ArmData(2, False, 0.5, True, n_t, {"success": MetricSums(n_t, s_t, s_t)})]
            d = decide(analyze(arms, AnalysisSettings()), arms, settings, T0,
                       T0 + timedelta(minutes=15 * (j + 1)))
            assert d.kind == KINDS[int(codes[e, j])], (e, j)
            seen.add(d.kind)
    assert "continue" in seen and ("promote" in seen or "inconclusive" in seen)
