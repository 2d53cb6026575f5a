"""The vectorised drift statistics: exact KS (ties included), PSI, fail-closed edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from promotion.gates._stats import feature_drift, psi, score_psi


@pytest.mark.parametrize("seed", range(4))
def test_ks_matches_scipy_including_ties(seed):
    rng = np.random.default_rng(seed)
    pairs = [
        (rng.integers(0, 5, 400).astype(float), rng.integers(0, 6, 900).astype(float)),  # heavy ties
        (rng.normal(size=700).astype(np.float32), rng.normal(0.1, 1.0, 1500).astype(np.float32)),
        (rng.exponential(size=50).astype(np.float32), rng.exponential(2.0, size=3000).astype(np.float32)),
    ]
    fd = feature_drift([a for a, _ in pairs], [b for _, b in pairs])
    for i, (a, b) in enumerate(pairs):
        want = ks_2samp(a, b, method="asymp")
        assert fd.ks_d[i] == pytest.approx(want.statistic, abs=1e-12)
        assert fd.ks_p[i] == pytest.approx(want.pvalue, rel=1e-9, abs=1e-300)


def test_same_distribution_is_quiet_and_a_shift_is_loud():
    rng = np.random.default_rng(0)
    ref = [rng.normal(size=5000), rng.normal(size=5000)]
    cur = [rng.normal(size=20000), rng.normal(0.5, 1.0, 20000)]
    fd = feature_drift(ref, cur)
    assert fd.psi[0] < 0.01 and fd.ks_p[0] > 0.01
    assert fd.psi[1] > 0.2 and fd.ks_p[1] < 1e-10


def test_nan_rows_are_dropped_and_an_all_nan_column_blocks():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=1000)
    cur = rng.normal(size=1000)
    cur[::10] = np.nan
    fd = feature_drift([ref, ref], [cur, np.full(10, np.nan)])
    assert fd.n_current.tolist() == [900, 0]
    assert np.isfinite(fd.psi[0]) and fd.psi[1] == float("inf")


def test_psi_of_an_empty_bin_is_large_but_finite():
    ref = np.linspace(0, 1, 1000)
    value = psi(ref, np.full(1000, 0.95))
    assert 1 < value < 100


def test_score_psi_uses_fixed_bins():
    rng = np.random.default_rng(2)
    base = rng.beta(0.3, 20, 50_000)
    assert score_psi(base, base * 1.1) < 0.01          # a recalibration near zero is harmless
    assert score_psi(base, np.clip(base + 0.3, 0, 1)) > 1  # mass moving up the scale is not
