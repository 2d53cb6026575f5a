import json
import re

import numpy as np
import pytest

from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome
from promotion.metrics.base import LATENCY_BUCKETS, VersionCounters, Window

CHAMPION, CANARY = 6, 7


def hist(latencies_s):
    lat = np.asarray(latencies_s)
    return tuple(float((lat <= b).sum()) for b in LATENCY_BUCKETS)


def traffic(rng, n, weight, error_c=0.01, error_b=0.01, latency_scale=1.0, canary_share=None, median_s=0.02):
    nc = rng.binomial(n, canary_share if canary_share is not None else weight / 100)
    nb = n - nc

    def version(k, err, scale):
        lat = rng.lognormal(np.log(median_s * scale), 0.5, k)
        return VersionCounters(requests=k, errors=float(rng.binomial(k, err)), latency_bounds=LATENCY_BUCKETS,
                               latency_counts=hist(lat))

    versions = {CANARY: version(nc, error_c, latency_scale)}
    if nb:
        versions[CHAMPION] = version(nb, error_b, 1.0)
    return Window(0.0, 1.0, versions)


def run(analysis, rng, windows, weight, **kw):
    verdict = None
    for _ in range(windows):
        verdict = analysis.observe(traffic(rng, 250, weight, **kw), CHAMPION, CANARY, weight)
        if verdict.outcome is Outcome.FAIL:
            break
    return verdict


def test_no_canary_requests_is_inconclusive_never_a_pass():
    analysis = CanaryAnalysis(AnalysisSettings())
    only_champion = Window(0, 1, {CHAMPION: VersionCounters(requests=10, latency_bounds=LATENCY_BUCKETS,
                                                            latency_counts=(10.0,) * len(LATENCY_BUCKETS))})
    verdict = analysis.observe(only_champion, CHAMPION, CANARY, 5)
    assert verdict.outcome is Outcome.INCONCLUSIVE and not verdict.completed
    assert "no data: canary 7 served no requests in this window" in verdict.reasons


def test_healthy_canary_passes_once_the_sample_minimum_is_met():
    rng = np.random.default_rng(1)
    analysis = CanaryAnalysis(AnalysisSettings(min_requests=50))
    first = analysis.observe(traffic(rng, 250, 5), CHAMPION, CANARY, 5)
    assert first.outcome is Outcome.INCONCLUSIVE
    assert first.reasons[0].startswith("canary served ") and "of the 50 requests needed in this step" in first.reasons[0]
    verdict = run(analysis, rng, 20, 5)
    assert verdict.outcome is Outcome.PASS and verdict.completed
    assert verdict.reasons[0].startswith("healthy: ")


def test_three_times_the_error_rate_rolls_back_with_the_numbers():
    rng = np.random.default_rng(2)
    analysis = CanaryAnalysis(AnalysisSettings())
    verdict = run(analysis, rng, 200, 5, error_c=0.03)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons[0].startswith("error rate regressed: canary ")
    ev = verdict.evidence["errors_vs_champion"]
    assert ev["e_value"] >= ev["threshold"] == 80
    assert ev["canary_requests"] < 2000


def test_doubled_latency_rolls_back_although_the_p95_slo_holds():
    rng = np.random.default_rng(3)
    verdict = run(CanaryAnalysis(AnalysisSettings()), rng, 100, 5, latency_scale=2.0)
    assert verdict.outcome is Outcome.FAIL
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("latency regressed: canary p90 ")
    assert verdict.evidence["step"]["canary_p95_ms"] < 100


def test_a_few_added_milliseconds_on_a_fast_service_pass_under_the_floor():
    # champion median 1.5 ms, canary 1.6x: past latency_ratio, about +1.7 ms at p90
    def verdict_with(floor_ms):
        rng = np.random.default_rng(7)
        analysis = CanaryAnalysis(AnalysisSettings(latency_min_added_ms=floor_ms))
        return run(analysis, rng, 60, 25, latency_scale=1.6, median_s=0.0015)

    without = verdict_with(0)
    assert without.outcome is Outcome.FAIL and without.reasons[0].startswith("latency regressed: canary p90 ")
    floored = verdict_with(3)
    assert floored.outcome is Outcome.PASS
    ev = floored.evidence["latency_vs_champion"]
    assert ev["e_value"] >= ev["threshold"] and ev["min_added_ms"] == 3
    assert ev["canary_quantile_ms"] / ev["champion_quantile_ms"] >= 1.5
    assert 0 < ev["canary_quantile_ms"] - ev["champion_quantile_ms"] < 3


def test_the_floor_does_not_hide_a_large_regression():
    rng = np.random.default_rng(3)
    verdict = run(CanaryAnalysis(AnalysisSettings(latency_min_added_ms=3)), rng, 100, 5, latency_scale=2.0)
    assert verdict.outcome is Outcome.FAIL
    assert re.search(r"\d\.\d+x >= 1\.5x, \+\d+\.\d ms >= 3 ms; ", verdict.reasons[0]), verdict.reasons[0]


def test_small_real_regression_below_the_ratio_does_not_roll_back():
    # 1.25x the champion's error rate, heavy traffic: statistically clear, but under
    # error_rate_ratio 1.5, so it must not cost the rollout.
    rng = np.random.default_rng(4)
    analysis = CanaryAnalysis(AnalysisSettings())
    for _ in range(100):
        verdict = analysis.observe(traffic(rng, 5000, 50, error_c=0.025, error_b=0.02), CHAMPION, CANARY, 50)
    ev = verdict.evidence["errors_vs_champion"]
    assert ev["e_value"] >= ev["threshold"]
    assert verdict.outcome is Outcome.PASS


def test_gross_breach_at_full_weight_fails_on_the_slo():
    rng = np.random.default_rng(5)
    verdict = run(CanaryAnalysis(AnalysisSettings()), rng, 5, 100, error_c=0.5)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons[0].startswith("error-rate SLO breached: canary ")
    assert "objective 5.00%" in verdict.reasons[0]


def test_full_weight_needs_no_champion_traffic():
    rng = np.random.default_rng(6)
    verdict = run(CanaryAnalysis(AnalysisSettings()), rng, 3, 100)
    assert verdict.outcome is Outcome.PASS


def test_a_canary_that_gets_no_traffic_at_all_is_a_sample_ratio_mismatch():
    analysis = CanaryAnalysis(AnalysisSettings())
    verdict = analysis.observe(Window(0, 1, {CHAMPION: VersionCounters(requests=500)}), CHAMPION, CANARY, 5)
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons[0].startswith("sample ratio mismatch: canary received 0.00% of 500 requests")


def test_sample_ratio_mismatch_rolls_back():
    rng = np.random.default_rng(7)
    verdict = run(CanaryAnalysis(AnalysisSettings()), rng, 40, 5, canary_share=0.09)
    assert verdict.outcome is Outcome.FAIL
    assert any(r.startswith("sample ratio mismatch: canary received ") and "configured weight 5.00%" in r
               for r in verdict.reasons)


def test_weight_change_starts_a_new_step_and_keeps_evidence():
    rng = np.random.default_rng(8)
    analysis = CanaryAnalysis(AnalysisSettings())
    assert run(analysis, rng, 20, 5).outcome is Outcome.PASS
    e_before = analysis.evidence()["errors_vs_champion"]["e_value"]
    verdict = analysis.observe(Window(0, 1, {CANARY: VersionCounters(), CHAMPION: VersionCounters(requests=10)}),
                               CHAMPION, CANARY, 25)
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert "canary served 0 of the 50 requests needed in this step" in verdict.reasons
    assert analysis.evidence()["errors_vs_champion"]["e_value"] == e_before


def test_state_survives_json_and_resumes_identically():
    rng = np.random.default_rng(9)
    a = CanaryAnalysis(AnalysisSettings(alpha=0.05))
    run(a, rng, 6, 5, error_c=0.03)
    b = CanaryAnalysis.from_dict(json.loads(json.dumps(a.to_dict())))
    w = traffic(rng, 250, 5, error_c=0.03)
    va, vb = a.observe(w, CHAMPION, CANARY, 5), b.observe(w, CHAMPION, CANARY, 5)
    assert va == vb


def test_a_fail_is_final():
    rng = np.random.default_rng(10)
    analysis = CanaryAnalysis(AnalysisSettings())
    assert run(analysis, rng, 5, 100, error_c=0.6).outcome is Outcome.FAIL
    assert run(analysis, rng, 3, 100).outcome is Outcome.FAIL


def test_other_versions_are_refused():
    analysis = CanaryAnalysis(AnalysisSettings())
    analysis.observe(Window(0, 1, {}), CHAMPION, CANARY, 5)
    with pytest.raises(ValueError, match="this analysis is of canary 7 vs champion 6"):
        analysis.observe(Window(0, 1, {}), CHAMPION, 8, 5)
    with pytest.raises(ValueError, match="percentage"):
        analysis.observe(Window(0, 1, {}), CHAMPION, CANARY, 250)


def test_settings_come_from_the_policy():
    from pathlib import Path

    from promotion.config import load_policy

    root = Path(__file__).resolve().parents[3]
    settings = AnalysisSettings.from_policy(load_policy(root / "policies" / "prod.yaml", root))
    assert (settings.alpha, settings.error_rate_max, settings.latency_p95_ms_max, settings.min_requests) == (0.05, 0.05, 100.0, 50)
    assert settings.alpha_each == pytest.approx(0.0125)
