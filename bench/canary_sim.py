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

* ``savvi``: an independent peer, the sequential multinomial test of Lindon & Malek
  (NeurIPS 2022) as implemented by PyPI ``savvi`` (``InhomogeneousPoissonProcess``, its
  "canary software release test"), on the same error counts: which version each error
  came from, against the configured split, at the policy's whole alpha (0.05), rolling
  back when its p-value reaches alpha with the canary's contrast above zero. It runs in
  its own venv (``.bench-venv-savvi``, from the hashed ``bench/requirements-savvi.txt``),
  built on first use; if that fails the reason is printed and the rest still runs.

Two more signals, each at its share of alpha (:mod:`promotion.analysis.budget`: 0.05
over the four tests of today plus this one = 0.01):

* labels: recall 0.95 (champion) vs 0.85 (canary), tolerance 0.02, 5 % canary share of
  40 requests/s, a quarter of them positives, windows of 10 s; every label arrives a
  fixed delay after its request (0, 60, 600 s). Median seconds to rollback and the A/A
  false-rollback rate (horizon 1 h), through :func:`promotion.analysis.bounded.comparison_update`.
* score shift: champion scores Beta(2, 5), canary scores moved so that the drift gate's
  ``score_psi`` (10 equal-width bins) is 0.2; per-bin counts of windows of 250 requests
  through :func:`promotion.analysis.score_shift.score_shift_log_bf`. Median canary
  requests to detect, and the A/A false-rollback rate (80 windows).

Run: ``python bench/canary_sim.py [--seed N] [--canaries N]``. The last line is
``RESULT ...`` for machines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome  # noqa: E402
from promotion.analysis.sequential import mixture_log_value, odds_log_lr, srm_log_bf  # noqa: E402
from promotion.analysis.bounded import LAMBDAS, comparison_update, log_threshold, margin, mixture  # noqa: E402
from promotion.analysis.budget import alpha_shares  # noqa: E402
from promotion.analysis.score_shift import score_shift_log_bf  # noqa: E402
from promotion.gates._stats import score_psi  # noqa: E402
from promotion.metrics.base import LATENCY_BUCKETS, VersionCounters, Window  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAVVI_VENV = ROOT / ".bench-venv-savvi"
SAVVI_LOCK = ROOT / "bench" / "requirements-savvi.txt"

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


SAVVI_RUN = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import numpy as np
from savvi.multinomial import InhomogeneousPoissonProcess
data = np.load(sys.argv[1])
alpha, w = float(sys.argv[2]), float(sys.argv[3])
out = {}
for name in ("aa", "x3"):
    eb, ec = data[name + "_eb"], data[name + "_ec"]
    first = []
    for r in range(eb.shape[0]):
        ipp = InhomogeneousPoissonProcess(alpha, np.array([1 - w, w]), np.array([[-1, 1]]))
        hit = -1
        for b in range(eb.shape[1]):
            ipp.update(np.array([eb[r, b], ec[r, b]], dtype=np.int64))
            # Inference.infer() also solves cvxpy problems for the confidence interval;
            # the rollback needs only its p-value (kept as a running minimum, as infer does)
            ipp.p_value = np.fmin(ipp.p_value, ipp.calculate_p_value())
            if ipp.p_value[0] <= alpha and ipp.counts.sum() and ipp.contrasts[0] > 0:
                hit = b
                break
        first.append(hit)
    out[name] = first
print(json.dumps(out))
"""


def ensure_savvi_venv() -> tuple[Path | None, str]:
    """The bench-only venv with savvi, from its hashed lock (rebuilt when the lock changes).
    Returns ``(python, "")`` or ``(None, why)``."""
    python = SAVVI_VENV / "bin" / "python"
    want = hashlib.sha256(SAVVI_LOCK.read_bytes()).hexdigest()
    stamp = SAVVI_VENV / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python, ""
    print("creating .bench-venv-savvi with savvi from bench/requirements-savvi.txt...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(SAVVI_VENV)], check=True)
        uv = Path(sys.executable).with_name("uv")
        if uv.exists():
            cmd = [str(uv), "pip", "sync", "--quiet", "--python", str(python), "--require-hashes", str(SAVVI_LOCK)]
        else:
            cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                   "--require-hashes", "-r", str(SAVVI_LOCK)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, f"installing {SAVVI_LOCK.name} failed: {proc.stderr.strip().splitlines()[-1:]}"
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"creating {SAVVI_VENV.name} failed: {exc}"
    stamp.write_text(want + "\n")
    return python, ""


def savvi_rule(aa: dict, x3: dict) -> tuple[dict | None, str]:
    """First rollback batch per stream under savvi's test, for the A/A and 3x streams."""
    python, why = ensure_savvi_venv()
    if python is None:
        return None, why
    with tempfile.TemporaryDirectory(prefix="bench-savvi-") as tmp:
        path = Path(tmp) / "streams.npz"
        np.savez(path, aa_eb=aa["eb"], aa_ec=aa["ec"], x3_eb=x3["eb"], x3_ec=x3["ec"])
        proc = subprocess.run([str(python), "-c", SAVVI_RUN, str(path), str(SETTINGS.alpha), str(WEIGHT)],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        return None, "savvi run failed: " + proc.stderr.strip()[-500:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return {k: np.where(np.array(v) >= 0, np.array(v), NEVER) for k, v in got.items()}, ""


LABEL_WINDOW_S = 10
LABEL_RPS = 40
LABEL_POSITIVES = 0.25
LABEL_TOLERANCE = 0.02


def label_rollback_s(rng, canaries: int, windows: int, recall_canary: float, delays_s) -> dict:
    """Seconds to the first label rollback per canary (inf if none), for each delay, on
    the same request streams: labels of window t's requests are counted at t + delay."""
    alpha = alpha_shares(SETTINGS.alpha, ("labels:recall",))["labels:recall"]
    per = LABEL_RPS * LABEL_WINDOW_S
    nc = rng.binomial(per, WEIGHT, (canaries, windows))
    pc, pb = rng.binomial(nc, LABEL_POSITIVES), rng.binomial(per - nc, LABEL_POSITIVES)
    hc, hb = rng.binomial(pc, recall_canary), rng.binomial(pb, 0.95)
    cum = np.stack([np.cumsum(hc, 1), np.cumsum(pc, 1), np.cumsum(hb, 1), np.cumsum(pb, 1)], -1)
    m = margin(True, absolute=LABEL_TOLERANCE)
    out = {}
    for d in delays_s:
        lag = d // LABEL_WINDOW_S
        log_m, consumed = np.zeros((canaries, len(LAMBDAS))), np.zeros((canaries, 4))
        first = np.full(canaries, np.inf)
        for t in range(lag, windows + lag):
            src = t - lag  # the newest window whose labels have arrived by the end of window t
            log_m, consumed = comparison_update(log_m, consumed, cum[:, src], m, alpha)
            hit = (mixture(log_m) >= log_threshold(alpha)) & np.isinf(first)
            first[hit] = (t + 1) * LABEL_WINDOW_S
        out[d] = first
    return out


SCORE_BINS = 10


def shifted_probs() -> tuple[np.ndarray, np.ndarray, float]:
    """Champion bin probabilities (Beta(2, 5) on 10 equal-width bins) and a canary's whose
    PSI, as the drift gate computes it, is 0.2; plus that PSI on 10^6 sampled scores."""
    edges = np.linspace(0, 1, SCORE_BINS + 1)

    def probs(a):
        return np.diff(beta_dist.cdf(edges, a, 5))

    base = probs(2.0)
    lo, hi = 2.0, 6.0
    for _ in range(60):
        mid = (lo + hi) / 2
        pc = probs(mid)
        psi = float(np.sum((pc - base) * np.log(pc / base)))
        lo, hi = (mid, hi) if psi < 0.2 else (lo, mid)
    rng = np.random.default_rng(0)
    check = score_psi(rng.beta(2.0, 5, 1_000_000), rng.beta(lo, 5, 1_000_000), SCORE_BINS)
    return base, probs(lo), check


def shift_first(rng, canaries: int, batches: int, canary_probs, base_probs) -> np.ndarray:
    alpha = alpha_shares(SETTINGS.alpha, ("score_shift",))["score_shift"]
    nc = rng.binomial(BATCH, WEIGHT, (canaries, batches))
    hc = np.cumsum(rng.multinomial(nc, canary_probs), axis=1)
    hb = np.cumsum(rng.multinomial(BATCH - nc, base_probs), axis=1)
    log_e = score_shift_log_bf(hc, hb, WEIGHT)
    first = first_true(log_e >= math.log(1 / alpha))
    return requests_until({"nc": nc}, first)


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
    savvi, why = savvi_rule(scenarios["A/A"], scenarios["3x errors"])
    if savvi is None:
        print(f"savvi: not run ({why})")
        savvi_fr, savvi_3x = float("nan"), np.array([np.inf])
    else:
        savvi_fr = float((savvi["aa"] != NEVER).mean())
        savvi_3x = requests_until(scenarios["3x errors"], savvi["x3"])
        print(f"{'savvi':<10} {savvi_fr:>20.4f} {median_str(savvi_3x):>19} {np.isfinite(savvi_3x).mean():>12.1%} "
              f"{'(errors only)':>19}")
    print("  savvi: Lindon & Malek (2022) multinomial test, savvi 0.3.1 InhomogeneousPoissonProcess, alpha "
          f"{SETTINGS.alpha:g} on the error counts alone; anytime spends {SETTINGS.alpha_each:g} on them")

    delays = (0, 60, 600)
    label_windows = 3600 // LABEL_WINDOW_S
    label_aa = label_rollback_s(rng, args.canaries // 2, label_windows, 0.95, (0,))[0]
    label_bad = label_rollback_s(rng, args.canaries // 4, 2 * label_windows + 600 // LABEL_WINDOW_S, 0.85, delays)
    label_fr = float(np.isfinite(label_aa).mean())
    print()
    print(f"labels: recall 0.95 -> 0.85 (tolerance {LABEL_TOLERANCE}), {LABEL_RPS} requests/s, canary {WEIGHT:.0%}, "
          f"{LABEL_POSITIVES:.0%} positives, alpha {alpha_shares(SETTINGS.alpha, ('labels',))['labels']:g}")
    print(f"  A/A false rollbacks over 1 h: {label_fr:.4f} ({args.canaries // 2} canaries)")
    for d in delays:
        x = label_bad[d]
        print(f"  label delay {d:>4} s: median {median_str(x)} s to rollback, rolled back {np.isfinite(x).mean():.1%} "
              f"({args.canaries // 4} canaries)")

    base, moved, psi_check = shifted_probs()
    shift_aa = shift_first(rng, args.canaries, AA_BATCHES, base, base)
    shift_bad = shift_first(rng, args.canaries // 2, POWER_BATCHES, moved, base)
    shift_fr = float(np.isfinite(shift_aa).mean())
    print()
    print(f"score shift: PSI {psi_check:.3f} by the drift gate's score_psi on 10^6 scores, alpha "
          f"{alpha_shares(SETTINGS.alpha, ('score_shift',))['score_shift']:g}")
    print(f"  A/A false rollbacks: {shift_fr:.4f}; median canary requests to detect: {median_str(shift_bad)}, "
          f"detected {np.isfinite(shift_bad).mean():.1%}")

    print()
    for name, agree, n in checks:
        print(f"cross-check {name}: CanaryAnalysis agrees with the vectorised run on {agree}/{n} streams")
    print(f"elapsed {time.time() - started:.1f} s")
    fr = {rule: np.isfinite(table["A/A", rule]).mean() for rule in rules}

    def num(x):
        return median_str(x).replace(",", "")

    print(f"RESULT false_rollback_rate={fr['anytime']:.4f} threshold_false_rollback_rate={fr['threshold']:.4f} "
          f"ztest_false_rollback_rate={fr['z-test']:.4f} "
          f"median_requests_3x_error={num(table['3x errors', 'anytime'])} "
          f"median_requests_2x_latency={num(table['2x latency', 'anytime'])} "
          f"savvi_false_rollback_rate={savvi_fr:.4f} savvi_median_requests_3x_error={num(savvi_3x)} "
          f"label_false_rollback_rate={label_fr:.4f} label_median_s_delay60={num(label_bad[60])} "
          f"shift_median_requests={num(shift_bad)} shift_false_rollback_rate={shift_fr:.4f}")
    return 0 if all(a == n for _, a, n in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
