"""The guarantees themselves, by simulation: these fail if the tests lose validity."""

import math

import numpy as np

from promotion.analysis.sequential import OddsEProcess, SrmEProcess, mixture_log_value, odds_log_lr, srm_log_bf


def test_error_test_keeps_alpha_when_the_canary_weight_changes_between_steps():
    # Healthy canaries, 5 % then 25 % then 50 % of the traffic, checked after every window.
    rng = np.random.default_rng(11)
    runs, alpha = 4000, 0.05
    shares = np.repeat([0.05, 0.25, 0.5], [40, 20, 20])
    nc = rng.binomial(400, shares, (runs, shares.size))
    nb = 400 - nc
    kc, kb = rng.binomial(nc, 0.02), rng.binomial(nb, 0.02)
    log_e = mixture_log_value(np.cumsum(odds_log_lr(kc, kc + kb, nc / 400), axis=1))
    rate = (log_e >= math.log(1 / alpha)).any(axis=1).mean()
    assert rate <= alpha
    # and it is not insensitive: a 3x canary is caught almost always on the same schedule
    kc3 = rng.binomial(nc, 0.06)
    log_e3 = mixture_log_value(np.cumsum(odds_log_lr(kc3, kc3 + kb, nc / 400), axis=1))
    assert (log_e3 >= math.log(1 / alpha)).any(axis=1).mean() > 0.95


def test_repeated_z_test_on_the_same_streams_does_not_keep_alpha():
    rng = np.random.default_rng(12)
    nc = rng.binomial(400, 0.25, (4000, 80))
    nb = 400 - nc
    kc, kb = np.cumsum(rng.binomial(nc, 0.02), 1), np.cumsum(rng.binomial(nb, 0.02), 1)
    cnc, cnb = np.cumsum(nc, 1), np.cumsum(nb, 1)
    p = (kc + kb) / (cnc + cnb)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (kc / cnc - kb / cnb) / np.sqrt(p * (1 - p) * (1 / cnc + 1 / cnb))
    z = np.nan_to_num(z)
    assert (z > 1.645).any(axis=1).mean() > 0.15


def test_slo_test_keeps_alpha_at_the_objective_itself():
    rng = np.random.default_rng(13)
    k = rng.binomial(50, 0.05, (4000, 60))
    log_e = mixture_log_value(np.cumsum(odds_log_lr(k, 50, 0.05), axis=1))
    assert (log_e >= math.log(1 / 0.05)).any(axis=1).mean() <= 0.05


def test_srm_keeps_its_alpha_and_finds_a_skewed_split():
    rng = np.random.default_rng(14)
    k = np.cumsum(rng.binomial(250, 0.05, (4000, 80)), 1)
    n = np.cumsum(np.full((4000, 80), 250), 1)
    assert (srm_log_bf(k, n, 0.05) >= math.log(1 / 0.01)).any(axis=1).mean() <= 0.01
    srm = SrmEProcess()
    for _ in range(20):
        srm.update(23, 250, 0.05)  # 9.2 % instead of 5 %
    assert srm.log_value >= math.log(1000)


def test_e_process_state_is_plain_floats():
    e = OddsEProcess()
    e.update(3, 10, 0.05)
    back = OddsEProcess.from_dict(e.to_dict())
    assert back.log_value == e.log_value and all(isinstance(x, float) for x in e.to_dict()["log_m"])
