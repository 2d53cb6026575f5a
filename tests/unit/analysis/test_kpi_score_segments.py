"""KPI rollback and experiment, score shift, shadow disagreement, segments and the shared
alpha: A/A streams keep alpha, real effects are found, the bad segment is named."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from promotion.analysis.bounded import LAMBDAS, ComparisonState, comparison_update, log_threshold, margin, mixture
from promotion.analysis.budget import alpha_shares
from promotion.analysis.kpi import (ExperimentOutcome, KpiCounts, KpiTest, experiment_decision, kpi_lift,
                                    kpi_regression, lift_bounds)
from promotion.analysis.score_shift import ScoreShiftState, disagreement_test, score_shift_log_bf, score_shift_step
from promotion.analysis.segments import bonferroni, e_bh, segment_decision
from promotion.analysis.sequential import odds_log_lr

ALPHA = 0.05


def max_false(runs: int, alpha: float = ALPHA) -> int:
    return int(binom.ppf(0.99, runs, alpha))


def test_kpi_drop_beyond_tolerance_rolls_back_and_within_does_not():
    test = KpiTest("ctr", higher_is_better=True, tolerance=0.01)
    bad = kpi_regression(ComparisonState(), KpiCounts(4_000, 100_000), KpiCounts(95_000, 1_900_000), test, 0.01)
    assert bad.rejected and bad.canary_value == pytest.approx(0.04)
    fine = kpi_regression(ComparisonState(), KpiCounts(5_000, 100_000), KpiCounts(95_000, 1_900_000), test, 0.01)
    assert not fine.rejected


def test_kpi_lower_is_better_boundary_keeps_alpha():
    # cost per request must not rise by more than 1 %: canary exactly 1 % worse, A/A-like
    rng = np.random.default_rng(31)
    runs, windows = 1500, 120
    nc, nb = rng.poisson(200, (runs, windows)), rng.poisson(1800, (runs, windows))
    xc, xb = rng.binomial(nc, 0.2 * 1.01), rng.binomial(nb, 0.2)
    m = margin(False, relative=0.01)
    cur = np.stack([np.cumsum(nc - xc, 1), np.cumsum(nc, 1), np.cumsum(nb - xb, 1), np.cumsum(nb, 1)], -1)  # good = 1 - x
    log_m, consumed, hit = np.zeros((runs, len(LAMBDAS))), np.zeros((runs, 4)), np.zeros(runs, bool)
    for t in range(windows):
        log_m, consumed = comparison_update(log_m, consumed, cur[:, t], m, ALPHA)
        hit |= mixture(log_m) >= log_threshold(ALPHA)
    assert hit.sum() <= max_false(runs)


def test_experiment_promotes_only_a_real_lift_and_ends_otherwise():
    rng = np.random.default_rng(32)
    runs, windows, per = 1000, 48, 2000  # 48 looks (one per half hour), 10 % of traffic
    # A/A: the true lift is 0 < min_effect; count how often the experiment would promote
    kc = np.cumsum(rng.binomial(per // 10, 0.05, (runs, windows)), 1)
    kb = np.cumsum(rng.binomial(per - per // 10, 0.05, (runs, windows)), 1)
    n = np.arange(1, windows + 1)
    lower, upper = lift_bounds(kc, n * per // 10, kb, n * (per - per // 10), True, ALPHA)
    promoted = (lower > 0.0).any(axis=1).sum()  # promote once the lower bound clears min_effect = 0
    assert promoted <= max_false(runs)
    assert ((lower > 0) | (upper < 0)).any(axis=1).sum() <= max_false(runs)  # covers 0 at all looks
    r, t = 7, 20
    lift = kpi_lift(KpiCounts(kc[r, t], n[t] * per // 10), KpiCounts(kb[r, t], n[t] * (per - per // 10)), True, ALPHA)
    assert (lift.lower, lift.upper) == pytest.approx((lower[r, t], upper[r, t]))
    last = kpi_lift(KpiCounts(kc[0, -1], windows * 200), KpiCounts(kb[0, -1], windows * 1800), True, ALPHA)
    assert experiment_decision(last, 0.02, 86400, 86400) is ExperimentOutcome.END
    # a 30 % lift is shown and promoted before the end
    big = kpi_lift(KpiCounts(0.065 * 96_000, 96_000), KpiCounts(0.05 * 864_000, 864_000), True, ALPHA)
    assert big.lower > 0.02 and experiment_decision(big, 0.02, 3600, 86400) is ExperimentOutcome.PROMOTE
    assert big.lower < big.estimate < big.upper


def test_kpi_counts_are_checked():
    with pytest.raises(ValueError, match="capped"):
        KpiCounts(11, 10).unit_sum(1.0, True)


def _hist(rng, n, probs):
    return rng.multinomial(n, probs)


def test_score_shift_a_a_keeps_alpha_and_a_shift_is_found():
    rng = np.random.default_rng(33)
    runs, windows, batch, w = 1500, 80, 250, 0.05
    probs = np.full(10, 0.1)
    shifted = probs * np.array([1.5, 1.4, 1.3, 1.2, 1.1, 0.9, 0.8, 0.7, 0.6, 0.5])
    shifted /= shifted.sum()
    for p_canary, expect in ((probs, "a/a"), (shifted, "shift")):
        nc = rng.binomial(batch, w, (runs, windows))
        hc = np.cumsum(rng.multinomial(nc, p_canary), axis=1)
        hb = np.cumsum(rng.multinomial(batch - nc, probs), axis=1)
        log_e = score_shift_log_bf(hc, hb, w)
        hit = (log_e >= math.log(1 / ALPHA)).any(axis=1)
        if expect == "a/a":
            assert hit.sum() <= max_false(runs)
        else:
            assert hit.mean() > 0.9


def test_score_shift_state_restarts_at_a_new_weight_and_keeps_evidence():
    s = ScoreShiftState()
    s = score_shift_step(s, [0] * 4, [0] * 4, 0.05)  # baseline
    s = score_shift_step(s, [40, 10, 10, 40], [475, 475, 475, 475], 0.05)
    assert s.log_value > math.log(100)
    s2 = score_shift_step(s, [60, 20, 20, 60], [600, 600, 600, 600], 0.25)  # new weight: a new factor
    assert s2.log_value == pytest.approx(s.log_value) and s2.weight == 0.25
    back = ScoreShiftState.from_dict(s2.to_dict())
    assert back == s2
    with pytest.raises(ValueError):
        score_shift_step(s, [1, 2], [1, 2, 3], 0.05)


def test_shadow_disagreement_against_the_holdout_rate():
    assert disagreement_test(30, 1000, expected_rate=0.03) < math.log(20)
    assert disagreement_test(80, 1000, expected_rate=0.03) > math.log(1000)
    rng = np.random.default_rng(34)
    k = np.cumsum(rng.binomial(50, 0.03, (2000, 60)), 1)
    from promotion.analysis.sequential import mixture_log_value
    log_e = mixture_log_value(odds_log_lr(k, 50 * np.arange(1, 61), 0.03))
    assert ((log_e >= math.log(1 / ALPHA)).any(axis=1)).sum() <= max_false(2000)


def test_e_bh_names_the_one_bad_segment_when_the_aggregate_looks_fine():
    # Errors per segment: EU regressed 3x, the other 19 are healthy; pooled, the canary's
    # share of the errors is within the aggregate test's noise.
    rng = np.random.default_rng(35)
    segments = [f"s{i:02d}" for i in range(19)] + ["EU"]
    log_e, pooled = {}, np.zeros((2,))
    for name in segments:
        rate_c = 0.03 if name == "EU" else 0.01
        nc, nb = 1000, 19000
        ec, eb = rng.binomial(nc, rate_c), rng.binomial(nb, 0.01)
        pooled += (ec, eb)
        log_e[name] = float(mixture(np.atleast_1d(odds_log_lr(ec, ec + eb, nc / (nc + nb)))))
    aggregate = float(mixture(np.atleast_1d(odds_log_lr(pooled[0], pooled.sum(), 0.05))))
    assert aggregate < math.log(1 / ALPHA)
    d = segment_decision(log_e, ALPHA, "e-bh")
    assert d.triggered == ("EU",) and d.rejected and d.evidence()["triggered"] == ["EU"]
    assert segment_decision(log_e, ALPHA, "bonferroni").triggered == ("EU",)


def test_e_bh_and_bonferroni_rules_and_their_a_a_rate():
    es = {"a": 400.0, "b": 60.0, "c": 1.0, "d": 0.5}
    assert e_bh(es, 0.05) == ("a", "b")          # 60 >= 4 / (2 * 0.05) = 40
    assert bonferroni(es, 0.05) == ("a",)        # 60 < 4 / 0.05 = 80
    with pytest.raises(ValueError):
        segment_decision(es, 0.05, "holm")
    # A/A across 8 segments of stopped e-processes: rolled back at most alpha of the time
    rng = np.random.default_rng(36)
    runs, windows, k = 1500, 60, 8
    nc = rng.binomial(300, 0.05, (runs, windows, k))
    ec, eb = rng.binomial(nc, 0.02), rng.binomial(300 - nc, 0.02)
    log_e = mixture(np.cumsum(odds_log_lr(ec, ec + eb, nc / 300), axis=1))
    e = np.exp(np.minimum(log_e, 700))
    srt = -np.sort(-e, axis=-1)
    rejects = (srt >= k / (np.arange(1, k + 1) * ALPHA)).any(axis=-1).any(axis=-1)
    assert rejects.sum() <= max_false(runs)


def test_alpha_is_shared_and_sums_to_the_policy_alpha():
    shares = alpha_shares(0.05, ("labels:recall", "score_shift", "kpi:ctr"))
    assert sum(shares.values()) == pytest.approx(0.05) and len(shares) == 7
    assert alpha_shares(0.05)["errors"] == pytest.approx(0.05 / 4)
    with pytest.raises(ValueError):
        alpha_shares(0.05, ("errors",))
    assert len(LAMBDAS) == 20
