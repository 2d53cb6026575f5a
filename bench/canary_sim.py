"""Canary analysis on simulated traffic: false rollbacks and speed, next to baselines.

Every simulated canary gets 5 % of the traffic of a champion with a 1 % error rate and
log-normal latency (median 20 ms, sigma 0.5), observed in batches of 250 requests (one
batch = one analysis window). Three scenarios:

* A/A: the canary is identical. Horizon: 80 batches = 20,000 requests in total (about
  1,000 canary requests) per canary; false-rollback rate = share of canaries rolled back.
* 3x errors: canary error rate 3 %. Requests until rollback = canary requests served.
* 2x latency: every canary latency doubled.

Rules compared on the same streams (all begin after 50 canary requests, the policy's
``slo.min_requests``, except the anytime-valid analysis, which needs no such guard):

* ``anytime``: the project's analysis (``promotion.analysis``) with the default policy
  (alpha 0.05, ratios 1.5, SLO 5 % / 100 ms, SRM alpha 0.001), vectorised here with the
  very functions the analysis uses; a sample of streams is also run through
  ``CanaryAnalysis`` itself and must agree batch for batch.
* ``threshold``: roll back when the canary's error rate > 5 % or its p95 > 100 ms.
* ``z-test``: after every batch, one-sided two-proportion z-tests on cumulative errors
  and on the share of requests slower than the champion's p90 bucket bound, each at
  alpha/2 (z > 1.96), so the nominal level is the same 0.05.

Run: ``python bench/canary_sim.py [--seed N] [--canaries N]``. The last line is
``RESULT ...`` for machines.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome  # noqa: E402
from promotion.analysis.sequential import mixture_log_value, odds_log_lr, srm_log_bf  # noqa: E402
from promotion.metrics.base import LATENCY_BUCKETS, VersionCounters, Window  # noqa: E402

BATCH = 250
WEIGHT = 0.05
BASE_ERROR = 0.01
MEDIAN_S, SIGMA = 0.020, 0.5
AA_BATCHES = 80
POWER_BATCHES = 200
SETTINGS = AnalysisSettings()
BOUNDS = np.array(LATENCY_BUCKETS)
NEVER = np.iinfo(np.int64).max


def bucket_probs(scale: float) -> np.ndarray:
    cdf = norm.cdf((np.log(BOUNDS[:-1]) - math.log(MEDIAN_S * scale)) / SIGMA)
    return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def simulate(rng, canaries: int, batches: int, canary_error: float, canary_latency_scale: float) -> dict:
    """Per-batch counts, shape (canaries, batches[, buckets]); histograms cumulative by bucket."""
    nc = rng.binomial(BATCH, WEIGHT, (canaries, batches))
    nb = BATCH - nc
    return {
        "nc": nc, "nb": nb,
        "ec": rng.binomial(nc, canary_error), "eb": rng.binomial(nb, BASE_ERROR),
        "hc": np.cumsum(rng.multinomial(nc, bucket_probs(canary_latency_scale)), axis=-1),
        "hb": np.cumsum(rng.multinomial(nb, bucket_probs(1.0)), axis=-1),
    }


def quantile(hist: np.ndarray, q: float) -> np.ndarray:
    """PromQL-style interpolated quantile of cumulative histograms (last axis)."""
    total = hist[..., -1]
    rank = q * total
    idx = np.argmax(hist >= rank[..., None], axis=-1)
    upper = BOUNDS[idx]
    lower = np.where(idx > 0, BOUNDS[np.maximum(idx - 1, 0)], 0.0)
    c_hi = np.take_along_axis(hist, idx[..., None], -1)[..., 0]
    c_lo = np.where(idx > 0, np.take_along_axis(hist, np.maximum(idx - 1, 0)[..., None], -1)[..., 0], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = lower + (upper - lower) * np.where(c_hi > c_lo, (rank - c_lo) / (c_hi - c_lo), 1.0)
    val = np.where(np.isinf(upper), BOUNDS[-2], val)
    return np.where(total > 0, val, np.nan)


def first_true(mask: np.ndarray) -> np.ndarray:
    return np.where(mask.any(axis=1), mask.argmax(axis=1), NEVER)


def champion_bound_index(hb: np.ndarray, q: float) -> np.ndarray:
    """Index of the champion's q bucket from *earlier* batches; -1 when not yet known."""
    prior = np.cumsum(hb, axis=1) - hb
    total = prior[..., -1]
    idx = np.argmax(prior >= (q * total)[..., None], axis=-1)
    ok = (total * (1 - q) >= 10) & ~np.isinf(BOUNDS[idx])
    return np.where(ok, idx, -1)


def anytime(d: dict) -> np.ndarray:
    """Batch index of the first rollback under the project's analysis (NEVER if none)."""
    s = SETTINGS
    log_t = math.log(1 / s.alpha_each)
    nc, nb, ec, eb, hc, hb = d["nc"], d["nb"], d["ec"], d["eb"], d["hc"], d["hb"]
    both = (nc > 0) & (nb > 0)
    # sample ratio
    srm = srm_log_bf(np.cumsum(nc, 1), np.cumsum(nc + nb, 1), WEIGHT) >= math.log(1 / s.srm_alpha)
    # errors vs champion, with the ratio floor on cumulative rates
    share = np.where(both, nc / np.maximum(nc + nb, 1), 0.0)
    e_err = mixture_log_value(np.cumsum(odds_log_lr(ec, ec + eb, share), axis=1))
    cec, cnc = np.cumsum(ec * both, 1), np.cumsum(nc * both, 1)
    ceb, cnb = np.cumsum(eb * both, 1), np.cumsum(nb * both, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ceb > 0, (cec / cnc) / (ceb / np.maximum(cnb, 1)), np.inf)
    err = (e_err >= log_t) & (ratio >= s.error_rate_ratio)
    # latency vs champion at the champion's quantile bucket, ratio floor on quantiles
    idx = champion_bound_index(hb, s.latency_quantile)
    lat_ok = (idx >= 0) & (hc[..., -1] > 0) & (hb[..., -1] > 0)
    ii = np.maximum(idx, 0)[..., None]
    slow_c = hc[..., -1] - np.take_along_axis(hc, ii, -1)[..., 0]
    slow_b = hb[..., -1] - np.take_along_axis(hb, ii, -1)[..., 0]
    lshare = np.where(lat_ok, hc[..., -1] / np.maximum(hc[..., -1] + hb[..., -1], 1), 0.0)
    e_lat = mixture_log_value(np.cumsum(odds_log_lr(slow_c * lat_ok, (slow_c + slow_b) * lat_ok, lshare), axis=1))
    qc = quantile(np.cumsum(hc * lat_ok[..., None], 1), s.latency_quantile)
    qb = quantile(np.cumsum(hb * lat_ok[..., None], 1), s.latency_quantile)
    lat = (e_lat >= log_t) & (qc / qb >= s.latency_ratio) & ((qc - qb) * 1000 >= s.latency_min_added_ms)
    # SLOs
    e_slo_err = mixture_log_value(np.cumsum(odds_log_lr(ec, nc, s.error_rate_max), axis=1))
    k100 = int(np.searchsorted(BOUNDS, s.latency_p95_ms_max / 1000 * (1 - 1e-9)))
    e_slo_lat = mixture_log_value(np.cumsum(odds_log_lr(hc[..., -1] - hc[..., k100], hc[..., -1], 0.05), axis=1))
    return first_true(srm | err | lat | (e_slo_err >= log_t) | (e_slo_lat >= log_t))


def threshold_rule(d: dict) -> np.ndarray:
    cnc = np.cumsum(d["nc"], 1)
    rate = np.cumsum(d["ec"], 1) / np.maximum(cnc, 1)
    p95 = quantile(np.cumsum(d["hc"], 1), 0.95)
    return first_true((cnc >= SETTINGS.min_requests) & ((rate > SETTINGS.error_rate_max) | (p95 * 1000 > SETTINGS.latency_p95_ms_max)))


def ztest_rule(d: dict) -> np.ndarray:
    z_crit = norm.ppf(1 - SETTINGS.alpha / 2)

    def z(kc, nc, kb, nb):
        pooled = (kc + kb) / np.maximum(nc + nb, 1)
        se = np.sqrt(pooled * (1 - pooled) * (1 / np.maximum(nc, 1) + 1 / np.maximum(nb, 1)))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(se > 0, (kc / np.maximum(nc, 1) - kb / np.maximum(nb, 1)) / se, 0.0)

    cnc, cnb = np.cumsum(d["nc"], 1), np.cumsum(d["nb"], 1)
    z_err = z(np.cumsum(d["ec"], 1), cnc, np.cumsum(d["eb"], 1), cnb)
    idx = champion_bound_index(d["hb"], 0.9)
    ii = np.maximum(idx, 0)[..., None]
    known = idx >= 0
    slow_c = np.cumsum((d["hc"][..., -1] - np.take_along_axis(d["hc"], ii, -1)[..., 0]) * known, 1)
    slow_b = np.cumsum((d["hb"][..., -1] - np.take_along_axis(d["hb"], ii, -1)[..., 0]) * known, 1)
    z_lat = z(slow_c, np.cumsum(d["hc"][..., -1] * known, 1), slow_b, np.cumsum(d["hb"][..., -1] * known, 1))
    return first_true((cnc >= SETTINGS.min_requests) & ((z_err > z_crit) | (z_lat > z_crit)))


def requests_until(d: dict, first: np.ndarray) -> np.ndarray:
    cnc = np.cumsum(d["nc"], 1)
    hit = first != NEVER
    out = np.full(first.shape, np.inf)
    out[hit] = cnc[hit, first[hit]]
    return out


def cross_check(d: dict, first: np.ndarray, streams: int) -> int:
    """Streams on which CanaryAnalysis itself fails at the same batch as the vectorised run."""
    agree = 0
    for r in range(streams):
        analysis = CanaryAnalysis(SETTINGS)
        got = NEVER
        for b in range(d["nc"].shape[1]):
            def vc(n, e, h):
                return VersionCounters(requests=float(n), errors=float(e), latency_bounds=LATENCY_BUCKETS,
                                       latency_counts=tuple(float(x) for x in h))
            w = Window(b, b + 1, {1: vc(d["nb"][r, b], d["eb"][r, b], d["hb"][r, b]),
                                  2: vc(d["nc"][r, b], d["ec"][r, b], d["hc"][r, b])})
            if analysis.observe(w, champion=1, canary=2, canary_weight=WEIGHT * 100).outcome is Outcome.FAIL:
                got = b
                break
        agree += got == first[r]
    return agree


def median_str(x: np.ndarray) -> str:
    m = float(np.median(x))
    return "never" if math.isinf(m) else f"{m:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20240501)
    parser.add_argument("--canaries", type=int, default=2000, help="A/A canaries (regressions use half)")
    parser.add_argument("--check", type=int, default=40, help="streams per scenario re-run through CanaryAnalysis")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    rules = {"anytime": anytime, "threshold": threshold_rule, "z-test": ztest_rule}

    print(f"canary weight {WEIGHT:.0%}, champion error rate {BASE_ERROR:.0%}, latency lognormal median "
          f"{MEDIAN_S * 1000:g} ms sigma {SIGMA}, windows of {BATCH} requests")
    print(f"A/A horizon: {AA_BATCHES} windows = {AA_BATCHES * BATCH:,} requests in total per canary "
          f"(about {AA_BATCHES * BATCH * WEIGHT:,.0f} canary requests), {args.canaries} canaries")
    print(f"regressions: up to {POWER_BATCHES} windows = {POWER_BATCHES * BATCH:,} requests, {args.canaries // 2} canaries each")
    scenarios = {
        "A/A": simulate(rng, args.canaries, AA_BATCHES, BASE_ERROR, 1.0),
        "3x errors": simulate(rng, args.canaries // 2, POWER_BATCHES, 3 * BASE_ERROR, 1.0),
        "2x latency": simulate(rng, args.canaries // 2, POWER_BATCHES, BASE_ERROR, 2.0),
    }
    table = {}
    checks = []
    for name, d in scenarios.items():
        for rule, fn in rules.items():
            first = fn(d)
            table[name, rule] = requests_until(d, first)
            if rule == "anytime" and args.check:
                n = min(args.check, len(first))
                checks.append((name, cross_check(d, first, n), n))

    print()
    print(f"{'rule':<10} {'A/A false rollbacks':>20} {'3x errors: median':>19} {'rolled back':>12} "
          f"{'2x latency: median':>19} {'rolled back':>12}")
    print(f"{'':<10} {'':>20} {'canary requests':>19} {'':>12} {'canary requests':>19}")
    for rule in rules:
        fr = np.isfinite(table["A/A", rule]).mean()
        e3, l2 = table["3x errors", rule], table["2x latency", rule]
        print(f"{rule:<10} {fr:>20.4f} {median_str(e3):>19} {np.isfinite(e3).mean():>12.1%} "
              f"{median_str(l2):>19} {np.isfinite(l2).mean():>12.1%}")
    print()
    for name, agree, n in checks:
        print(f"cross-check {name}: CanaryAnalysis agrees with the vectorised run on {agree}/{n} streams")
    print(f"elapsed {time.time() - started:.1f} s")
    fr = {rule: np.isfinite(table["A/A", rule]).mean() for rule in rules}
    print(f"RESULT false_rollback_rate={fr['anytime']:.4f} threshold_false_rollback_rate={fr['threshold']:.4f} "
          f"ztest_false_rollback_rate={fr['z-test']:.4f} "
          f"median_requests_3x_error={median_str(table['3x errors', 'anytime']).replace(',', '')} "
          f"median_requests_2x_latency={median_str(table['2x latency', 'anytime']).replace(',', '')}")
    return 0 if all(a == n for _, a, n in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
