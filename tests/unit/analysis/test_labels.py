"""Label signal: A/A at the tolerance boundary keeps alpha, a real recall drop is caught,
late labels count for their version, and bad counts are refused."""

import math

import numpy as np
import pytest
from scipy.stats import binom

from promotion.analysis.bounded import LAMBDAS, comparison_update, log_threshold, margin, mean_bounds, mixture
from promotion.analysis.labels import (ClassifierCounts, ComparisonState, LabelTest, RegressorCounts,
                                       compare_labels, good_sum)

ALPHA = 0.05


def max_false(runs: int, alpha: float = ALPHA) -> int:
    """Most rejections out of ``runs`` still consistent (99 %) with a rate of ``alpha``."""
    return int(binom.ppf(0.99, runs, alpha))


def first_rejection(pc, pb, m, rng, runs=1500, windows=200, per_c=5, per_b=95, alpha=ALPHA, bounded=False):
    """Window of the first rejection per stream (-1 if none), through comparison_update."""
    nc, nb = rng.poisson(per_c, (runs, windows)), rng.poisson(per_b, (runs, windows))
    if bounded:  # values in [0, 1] with the given means: Beta(2 mu / (1 - mu), 2)
        sc = np.array([[rng.beta(2 * pc / (1 - pc), 2, n).sum() for n in row] for row in nc[:, :]])
        sb = np.array([[rng.beta(2 * pb / (1 - pb), 2, n).sum() for n in row] for row in nb[:, :]])
    else:
        sc, sb = rng.binomial(nc, pc), rng.binomial(nb, pb)
    cur = np.stack([np.cumsum(sc, 1), np.cumsum(nc, 1), np.cumsum(sb, 1), np.cumsum(nb, 1)], -1)
    log_m, consumed = np.zeros((runs, len(LAMBDAS))), np.zeros((runs, 4))
    first = np.full(runs, -1)
    for t in range(windows):
        log_m, consumed = comparison_update(log_m, consumed, cur[:, t], m, alpha)
        first[(mixture(log_m) >= log_threshold(alpha)) & (first < 0)] = t
    return first


@pytest.mark.parametrize("pc,pb,higher", [(0.93, 0.95, True), (0.60, 0.62, True), (1 - 0.12, 1 - 0.10, False)])
def test_a_a_at_the_tolerance_boundary_keeps_alpha(pc, pb, higher):
    # The worst case of H0: the canary exactly `tolerance` worse, checked after every window.
    first = first_rejection(pc, pb, margin(higher, absolute=0.02), np.random.default_rng(21))
    assert (first >= 0).sum() <= max_false(first.size)


def test_relative_tolerance_boundary_keeps_alpha_for_bounded_values():
    # Non-binary values in [0, 1] (clipped losses): the Bernoulli bound still holds.
    rng = np.random.default_rng(22)
    first = first_rejection(0.5 * 0.9, 0.5, margin(True, relative=0.1), rng, runs=1000, windows=60, bounded=True)
    assert (first >= 0).sum() <= max_false(first.size)


def test_recall_drop_from_095_to_085_is_caught():
    first = first_rejection(0.85, 0.95, margin(True, absolute=0.02), np.random.default_rng(23), runs=300)
    assert (first >= 0).mean() > 0.95
    # and the repeated look costs little: half the streams within ~100 windows of 5 positives
    assert np.median(first[first >= 0]) < 100


def test_late_labels_count_for_their_version_after_the_step_ended():
    test = LabelTest("recall", absolute=0.02)
    champion = ClassifierCounts(tp=950, fn=50, tn=3000, fp=100)
    state = ComparisonState.new()
    # during the step only 20 canary labels had arrived: not enough to judge
    r = compare_labels(state, ClassifierCounts(tp=17, fn=3), champion, test, alpha=0.01)
    assert not r.rejected
    # after the step ended, the late labels of the canary's requests arrive: 85 % recall
    late = compare_labels(r.state, ClassifierCounts(tp=1275, fn=225), ClassifierCounts(tp=19000, fn=1000), test, 0.01)
    assert late.rejected and late.canary_labelled == 1500
    assert late.canary_value == pytest.approx(0.85) and late.champion_value == pytest.approx(0.95)
    # the same labels read as if they never arrived leave the canary unjudged
    early_only = compare_labels(r.state, ClassifierCounts(tp=17, fn=3), ClassifierCounts(tp=19000, fn=1000), test, 0.01)
    assert not early_only.rejected


def test_state_round_trips_and_counts_are_used_once():
    test = LabelTest("fpr", absolute=0.01)
    a, b = ClassifierCounts(tn=800, fp=200), ClassifierCounts(tn=9000, fp=1000)
    r1 = compare_labels(ComparisonState.new(), a, b, test, 0.05)
    again = compare_labels(ComparisonState.from_dict(r1.state.to_dict()), a, b, test, 0.05)
    assert again.state == r1.state  # no new counts: nothing is added twice
    assert r1.rejected  # 20 % vs 10 % FPR over 1,000 negatives


def test_regressor_errors_must_be_clipped_and_loss_rises_are_caught():
    test = LabelTest("mae", absolute=0.05, loss_max=2.0)
    with pytest.raises(ValueError, match="clipped"):
        good_sum(RegressorCounts(n=10, sum_abs_error=25.0), test)
    r = compare_labels(ComparisonState.new(), RegressorCounts(n=600, sum_abs_error=600 * 0.9),
                       RegressorCounts(n=6000, sum_abs_error=6000 * 0.5), test, 0.01)
    assert r.rejected and r.canary_value == pytest.approx(0.9)
    ok = compare_labels(ComparisonState.new(), RegressorCounts(n=600, sum_abs_error=600 * 0.5),
                        RegressorCounts(n=6000, sum_abs_error=6000 * 0.5), test, 0.01)
    assert not ok.rejected


def test_wrong_counts_for_the_metric_are_refused():
    with pytest.raises(ValueError, match="classifier"):
        good_sum(RegressorCounts(n=1), LabelTest("recall"))
    with pytest.raises(ValueError, match=">= 0"):
        ClassifierCounts(tp=-1)


def test_confidence_sequence_covers_uniformly():
    rng = np.random.default_rng(24)
    x = rng.binomial(1, 0.07, (1000, 2000))
    s, n = np.cumsum(x, 1)[:, ::50], np.arange(1, 2001)[::50] * np.ones((1000, 1))
    lo, hi = mean_bounds(s, n, 0.025)
    missed = ((lo > 0.07) | (hi < 0.07)).any(axis=1).sum()
    assert missed <= max_false(1000, 0.05)
    assert float(np.median(hi[:, -1] - lo[:, -1])) < 0.04
