"""decide(): every branch and readable reasons naming versions, on per-unit statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from optimizer.experiments.decide import DecisionSettings, decide
from optimizer.stats import AnalysisSettings, ArmData, Guardrail, RatioSums, analyze

T0 = datetime(2024, 5, 1, tzinfo=UTC)
SETTINGS = DecisionSettings(
    min_conversations_per_arm=100, min_runtime_hours=24, max_runtime_hours=336
)
NO_GUARDRAILS = AnalysisSettings(guardrails=())


def units(values_per_unit: list[list[float]]) -> RatioSums:
    """Sums over units from each unit's list of conversation values."""
    ys = np.array([sum(v) for v in values_per_unit], dtype=float)
    ms = np.array([len(v) for v in values_per_unit], dtype=float)
    keep = ms > 0
    ys, ms = ys[keep], ms[keep]
    return RatioSums(
        int(keep.sum()),
        float(ys.sum()),
        float(ms.sum()),
        float((ys * ys).sum()),
        float((ms * ms).sum()),
        float((ys * ms).sum()),
    )


def binary(n: int, successes: int) -> RatioSums:
    """n units with one conversation each."""
    return units([[1.0] if i < successes else [0.0] for i in range(n)])


def arm(arm_id, n, successes, control=False, active=True, weight=1.0, version=None, **extra):
    metrics = {"success": binary(n, successes), **extra}
    return ArmData(arm_id, version or arm_id, control, weight, active, n, n, metrics)


def run(arms, hours, settings=SETTINGS, analysis_settings=NO_GUARDRAILS):
    analysis = analyze(arms, analysis_settings)
    return decide(analysis, arms, settings, T0, T0 + timedelta(hours=hours))


def lognormal(rng, n, mean_scale=1.0, sigma=0.3):
    return units([[float(v)] for v in mean_scale * rng.lognormal(0, sigma, n)])


def test_promote_names_versions_with_numbers_in_the_reason():
    d = run([arm(1, 805, 242, control=True, version=3), arm(7, 812, 335, version=4)], hours=30)
    assert d.kind == "promote" and d.winner_arm_id == 7 and d.stopped_arm_ids == ()
    for text in (
        "Promote v4 (arm 7) over v3 (arm 1)",
        "0.413 vs 0.301",
        "+37.",
        "90% always-valid interval",
        "812/805 units",
        "no sample ratio mismatch",
    ):
        assert text in d.reason, text


def test_gates_hold_promotion_back():
    winner = [arm(1, 805, 242, control=True), arm(7, 812, 335)]
    early = run(winner, hours=3)
    assert early.kind == "continue" and "3.0 h of the minimum 24 h" in early.reason
    few = run([arm(1, 90, 10, control=True), arm(7, 95, 80)], hours=30)
    assert few.kind == "continue" and "100 conversations per arm" in few.reason
    third = run(winner + [arm(9, 50, 15, weight=0.062)], hours=30)
    assert third.kind == "continue"


def test_few_heavy_users_do_not_pass_the_units_gate():
    # 20 users with 50 conversations each: plenty of conversations, too few units.
    heavy = units([[1.0] * 40 + [0.0] * 10 for _ in range(20)])
    light = units([[1.0] * 10 + [0.0] * 40 for _ in range(20)])
    arms = [
        ArmData(1, 1, True, 1, True, 20, 1000, {"success": light}),
        ArmData(2, 2, False, 1, True, 20, 1000, {"success": heavy}),
    ]
    d = run(arms, hours=30)
    assert d.kind == "continue" and "20 units" in d.reason and "minimum 30 units" in d.reason


def test_repeat_users_widen_the_interval():
    # The same 1,000 conversations and success rates, once as 1,000 users and once as 100
    # users whose outcomes cluster: the clustered interval must be wider.
    rng = np.random.default_rng(2)
    flat = [arm(1, 1000, 300, control=True), arm(2, 1000, 340)]
    p_c, p_t = rng.beta(3, 7, 100), rng.beta(3.4, 6.6, 100)
    clustered_c = units([list((rng.random(10) < p).astype(float)) for p in p_c])
    clustered_t = units([list((rng.random(10) < p).astype(float)) for p in p_t])
    clustered = [
        ArmData(1, 1, True, 1, True, 100, 1000, {"success": clustered_c}),
        ArmData(2, 2, False, 1, True, 100, 1000, {"success": clustered_t}),
    ]
    [a] = analyze(flat, NO_GUARDRAILS).comparisons
    [b] = analyze(clustered, NO_GUARDRAILS).comparisons
    assert (b.diff_high - b.diff_low) > 1.5 * (a.diff_high - a.diff_low)


def test_guardrail_must_be_shown_within_tolerance_before_promotion():
    rng = np.random.default_rng(1)
    settings = AnalysisSettings(guardrails=(Guardrail("cost_usd", False, 0.10),))
    # noisy cost, no difference: not yet shown within +10% -> no promotion
    noisy = [
        arm(1, 805, 242, control=True, cost_usd=lognormal(rng, 805, sigma=2.0)),
        arm(7, 812, 335, cost_usd=lognormal(rng, 812, sigma=2.0)),
    ]
    d = run(noisy, hours=30, analysis_settings=settings)
    assert d.kind == "continue" and "guardrails not yet within tolerance" in d.reason
    assert "cost_usd" in d.reason and "not yet shown within the allowed +10%" in d.reason
    # precise cost, no difference: shown within tolerance -> promotion
    tight = [
        arm(1, 805, 242, control=True, cost_usd=lognormal(rng, 805, sigma=0.1)),
        arm(7, 812, 335, cost_usd=lognormal(rng, 812, sigma=0.1)),
    ]
    d = run(tight, hours=30, analysis_settings=settings)
    assert d.kind == "promote" and "guardrails within tolerance: cost_usd" in d.reason


def test_confirmed_guardrail_harm_stops_the_arm_even_when_primary_wins():
    rng = np.random.default_rng(3)
    settings = AnalysisSettings(guardrails=(Guardrail("latency_ms", False, 0.10),))
    arms = [
        arm(1, 805, 242, control=True, latency_ms=lognormal(rng, 805, 1000, 0.1)),
        arm(7, 812, 335, latency_ms=lognormal(rng, 812, 1500, 0.1)),
    ]
    d = run(arms, hours=2, analysis_settings=settings)
    assert d.kind == "stop_arms" and d.stopped_arm_ids == (7,)
    assert "guardrail latency_ms +" in d.reason and "beyond the allowed +10%" in d.reason
    assert "traffic returns to control v1 (arm 1)" in d.reason


def test_guardrail_without_any_data_blocks_only_when_required():
    arms = [arm(1, 805, 242, control=True), arm(7, 812, 335)]
    optional = AnalysisSettings(guardrails=(Guardrail("rating", True, 0.05),))
    d = run(arms, hours=30, analysis_settings=optional)
    assert d.kind == "promote" and "guardrails without data (not required): rating" in d.reason
    required = AnalysisSettings(guardrails=(Guardrail("rating", True, 0.05, required=True),))
    d = run(arms, hours=30, analysis_settings=required)
    assert d.kind == "continue" and "rating has no data (required)" in d.reason


def test_guardrail_in_one_arm_only_blocks():
    rng = np.random.default_rng(5)
    settings = AnalysisSettings(guardrails=(Guardrail("cost_usd", False, 0.10),))
    arms = [
        arm(1, 805, 242, control=True, cost_usd=lognormal(rng, 805, sigma=0.1)),
        arm(7, 812, 335),
    ]
    d = run(arms, hours=30, analysis_settings=settings)
    assert d.kind == "continue" and "cost_usd not comparable (missing metric)" in d.reason


def test_constant_guardrail_is_known_exactly():
    same = units([[4.0]] * 500)
    settings = AnalysisSettings(guardrails=(Guardrail("rating", True, 0.05),))
    arms = [arm(1, 805, 242, control=True, rating=same), arm(7, 812, 335, rating=same)]
    assert run(arms, hours=30, analysis_settings=settings).kind == "promote"


def test_several_winners_pick_the_highest_lower_bound():
    arms = [
        arm(1, 2000, 600, control=True),
        arm(2, 2000, 700),
        arm(3, 2000, 760),
        arm(4, 2000, 740),
    ]
    d = run(arms, hours=48)
    assert d.kind == "promote" and d.winner_arm_id == 3


def test_bonferroni_counts_stopped_arms():
    base = [arm(1, 2000, 600, control=True), arm(2, 2000, 700)]
    stopped = base + [arm(3, 2000, 500, active=False)]
    assert abs(analyze(base, NO_GUARDRAILS).alpha_per_arm - 0.1) < 1e-12
    assert abs(analyze(stopped, NO_GUARDRAILS).alpha_per_arm - 0.05) < 1e-12


def test_srm_counts_units_and_names_versions():
    arms = [arm(1, 3000, 900, control=True, version=3), arm(7, 2000, 800, version=4)]
    d = run(arms, hours=30)
    assert d.kind == "pause_srm" and d.winner_arm_id is None
    assert "units v3 (arm 1): 3000, v4 (arm 7): 2000" in d.reason and "50.0%" in d.reason


def test_srm_keeps_testing_after_an_arm_stops():
    # The stopped arm's slice keeps its units (served control): a balanced split is fine,
    # a skewed one is still caught.
    fine = [arm(1, 3000, 900, control=True), arm(2, 3010, 950), arm(3, 2990, 600, active=False)]
    assert not analyze(fine, NO_GUARDRAILS).srm.detected
    skewed = [arm(1, 3000, 900, control=True), arm(2, 3000, 950), arm(3, 2000, 600, active=False)]
    assert analyze(skewed, NO_GUARDRAILS).srm.detected


def test_stop_harmful_arm_before_min_runtime_but_after_the_gates():
    arms = [arm(1, 400, 200, control=True), arm(2, 400, 80), arm(3, 400, 205)]
    d = run(arms, hours=2)
    assert d.kind == "stop_arms" and d.stopped_arm_ids == (2,)
    assert "v2 (arm 2) (worse than control on success" in d.reason
    few = run([arm(1, 60, 50, control=True), arm(2, 60, 5)], hours=2)
    assert few.kind == "continue"


def test_control_is_never_stopped():
    d = run([arm(1, 400, 40, control=True), arm(2, 400, 300)], hours=2)
    assert d.kind == "continue" and d.stopped_arm_ids == ()


def test_inconclusive_at_max_runtime_and_without_active_variants():
    arms = [arm(1, 20000, 6000, control=True), arm(2, 20000, 6020)]
    d = run(arms, hours=336)
    assert d.kind == "inconclusive" and "Maximum runtime 336 h" in d.reason
    assert run(arms, hours=335.75).kind == "continue"
    gone = run([arm(1, 500, 150, control=True), arm(2, 500, 5, active=False)], hours=30)
    assert gone.kind == "inconclusive" and "No variant arm is active" in gone.reason


def test_continue_reason_and_degenerate_inputs():
    empty = RatioSums(0, 0, 0, 0, 0, 0)
    arms = [
        ArmData(1, 1, True, 1, True, 0, 0, {"success": empty}),
        ArmData(2, 2, False, 1, True, 0, 0, {"success": empty}),
    ]
    d = run(arms, hours=0.25)
    assert d.kind == "continue" and "not comparable yet" in d.reason
    no_control = run([arm(1, 500, 150), arm(2, 500, 300)], hours=30)
    assert no_control.kind == "continue" and "No control" in no_control.reason
    assert run([arm(1, 500, 150), arm(2, 500, 300)], hours=400).kind == "inconclusive"
    assert decide(analyze([], AnalysisSettings()), [], SETTINGS, None, T0).kind == "continue"
    # all successes in both arms: nothing to compare, nothing NaN
    flat = [arm(1, 500, 500, control=True), arm(2, 500, 500)]
    analysis = analyze(flat, AnalysisSettings())
    assert analysis.comparisons[0].error == "zero_variance"
    assert "nan" not in str(analysis.to_dict()).lower()
    assert run(flat, hours=30).kind == "continue"


def test_post_stratification_narrows_the_interval_where_segments_differ():
    rng = np.random.default_rng(9)
    strata_c, strata_t = {}, {}
    for name, rate in (("a", 0.1), ("b", 0.5), ("c", 0.9)):
        n = 400
        strata_c[name] = units([[float(rng.random() < rate)] for _ in range(n)])
        strata_t[name] = units([[float(rng.random() < rate * 1.05)] for _ in range(n)])
    total_c = sum(strata_c.values(), RatioSums(0, 0, 0, 0, 0, 0))
    total_t = sum(strata_t.values(), RatioSums(0, 0, 0, 0, 0, 0))
    arms = [
        ArmData(1, 1, True, 1, True, 1200, 1200, {"success": total_c}, strata_c),
        ArmData(2, 2, False, 1, True, 1200, 1200, {"success": total_t}, strata_t),
    ]
    [plain] = analyze(arms, AnalysisSettings(guardrails=(), stratify=False)).comparisons
    [strat] = analyze(arms, NO_GUARDRAILS).comparisons
    assert strat.strata == 3 and plain.strata == 1
    assert (strat.diff_high - strat.diff_low) < 0.8 * (plain.diff_high - plain.diff_low)
