"""Business KPIs, the experiment's lift and score shift inside the canary analysis, and the
policy's ``analysis.kpis``, ``analysis.score_shift`` and ``rollout.experiment`` validated
with file:line errors (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome
from promotion.analysis.kpi_signal import KpiSettings
from promotion.contract.metrics import SCORE_BOUNDS
from promotion.metrics.base import LATENCY_BUCKETS, VersionCounters, Window
from promotion.metrics.quality import Quality

CHAMPION, CANARY = 6, 7
CTR = KpiSettings("ctr", 'sum(clicks_total{version="{version}"})', 'sum(views_total{version="{version}"})',
                  tolerance=0.01)


def settings(**kw) -> AnalysisSettings:
    return AnalysisSettings(alpha=0.05, min_requests=20, **{"kpis": [CTR.to_dict()], **kw})


def version(served: int, scores=None) -> VersionCounters:
    lat = np.full(served, 0.02)
    quality = Quality()
    if scores is not None:
        counts = tuple(float((scores <= b).sum()) for b in SCORE_BOUNDS)
        quality = Quality(score_bounds=SCORE_BOUNDS, score_counts=counts, score_sum=float(scores.sum()))
    return VersionCounters(requests=float(served), errors=0.0, latency_bounds=LATENCY_BUCKETS,
                           latency_counts=tuple(float((lat <= b).sum()) for b in LATENCY_BUCKETS), quality=quality)


def window(served=400, weight=25, scores_c=None, scores_b=None) -> Window:
    nc = int(served * weight / 100)
    return Window(0.0, 1.0, {CANARY: version(nc, scores_c), CHAMPION: version(served - nc, scores_b)})


class Ctr:
    """Cumulative clicks/views per version, as Prometheus would read them."""

    def __init__(self, seed=1):
        self.rng = np.random.default_rng(seed)
        self.c, self.b = [0.0, 0.0], [0.0, 0.0]

    def reading(self, rate_c, rate_b, n_c=100, n_b=300):
        self.c = [self.c[0] + self.rng.binomial(n_c, rate_c), self.c[1] + n_c]
        self.b = [self.b[0] + self.rng.binomial(n_b, rate_b), self.b[1] + n_b]
        return {"ctr": {"canary": tuple(self.c), "champion": tuple(self.b)}}


def test_a_kpi_worse_beyond_tolerance_rolls_back_with_its_evidence_and_alpha_share():
    analysis, ctr = CanaryAnalysis(settings()), Ctr()
    verdict = None
    for _ in range(40):
        verdict = analysis.observe(window(), CHAMPION, CANARY, 25, kpis=ctr.reading(0.05, 0.10))
        if verdict.outcome is Outcome.FAIL:
            break
    assert verdict.outcome is Outcome.FAIL
    assert verdict.reasons[0].startswith("kpi ctr regressed: canary 0.0"), verdict.reasons
    ev = verdict.evidence["kpis"]["ctr"]
    assert ev["rejected"] and ev["e_value"] >= ev["threshold"] and ev["alpha"] == pytest.approx(0.05 / 5)
    assert ev["canary"] < ev["champion"] and ev["counts"]["canary"]["denominator"] > 0
    assert json.loads(json.dumps(verdict.evidence, allow_nan=False))  # records are JSON


def test_a_kpi_within_tolerance_passes_and_only_counts_since_the_canary_started():
    analysis, ctr = CanaryAnalysis(settings()), Ctr()
    ctr.c, ctr.b = [5_000.0, 10_000.0], [900.0, 90_000.0]  # history before the canary: not judged
    first = analysis.observe(window(), CHAMPION, CANARY, 25, kpis=ctr.reading(0.1, 0.1))
    assert analysis.kpis.counts("ctr", "canary").denominator == 0  # the first reading is the baseline
    verdict = first
    for _ in range(10):
        verdict = analysis.observe(window(), CHAMPION, CANARY, 25, kpis=ctr.reading(0.1, 0.1))
    assert verdict.outcome is Outcome.PASS, verdict.reasons
    assert analysis.kpis.counts("ctr", "canary").denominator == 1000
    # a counter that began again (a restarted exporter): its new value is what it counted since
    analysis.observe(window(), CHAMPION, CANARY, 25, kpis={"ctr": {"canary": (3, 30), "champion": tuple(ctr.b)}})
    assert analysis.kpis.counts("ctr", "canary").denominator == 1030
    resumed = CanaryAnalysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
    assert resumed.kpis.counts("ctr", "canary").denominator == 1030


@pytest.mark.parametrize("reading", [
    lambda i: None,
    lambda i: {"ctr": "numerator query for v7 returned no series"},
    lambda i: {"ctr": {"canary": (50 * i, 10 * i), "champion": (i, 10 * i)}},  # more clicks than views
])
def test_a_kpi_that_cannot_be_read_never_passes_the_step(reading):
    analysis = CanaryAnalysis(settings())
    verdict = None
    for i in range(5):
        verdict = analysis.observe(window(), CHAMPION, CANARY, 25, kpis=reading(i))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert any(r.startswith("kpi ctr cannot be judged:") for r in verdict.reasons), verdict.reasons


def test_the_experiment_passes_only_once_the_lift_is_shown():
    ex = {"kpi": "ctr", "min_effect": 0.05, "alpha": 0.05}
    same, ctr = CanaryAnalysis(settings(experiment=ex)), Ctr(2)
    for _ in range(10):
        verdict = same.observe(window(weight=50), CHAMPION, CANARY, 50, kpis=ctr.reading(0.1, 0.1, 200, 200))
    assert verdict.outcome is Outcome.INCONCLUSIVE
    assert any(r.startswith("experiment: ctr lift not shown: lower bound") for r in verdict.reasons)
    assert verdict.evidence["experiment"]["shown"] is False
    # promoted (a probation at 100 %): the experiment is decided and no longer holds anything
    at_100 = same.observe(window(weight=100), CHAMPION, CANARY, 100, kpis=ctr.reading(0.1, 0.1, 200, 0))
    assert not any(r.startswith("experiment:") for r in at_100.reasons), at_100.reasons
    better, ctr = CanaryAnalysis(settings(experiment=ex)), Ctr(3)
    for _ in range(30):
        verdict = better.observe(window(weight=50), CHAMPION, CANARY, 50, kpis=ctr.reading(0.3, 0.1, 200, 200))
        if verdict.outcome is Outcome.PASS:
            break
    assert verdict.outcome is Outcome.PASS and verdict.evidence["experiment"]["lift"]["lower"] > 0.05


def test_a_score_shift_rolls_back_naming_the_signal_and_equal_scores_do_not():
    rng = np.random.default_rng(4)
    shifted = CanaryAnalysis(AnalysisSettings(alpha=0.05, min_requests=20, score_shift=True))
    verdict = None
    for _ in range(30):
        verdict = shifted.observe(window(scores_c=rng.beta(3, 2, 100), scores_b=rng.beta(2, 3, 300)),
                                  CHAMPION, CANARY, 25)
        if verdict.outcome is Outcome.FAIL:
            break
    assert verdict.outcome is Outcome.FAIL and verdict.reasons[0].startswith("score shift: canary scores differ")
    ev = verdict.evidence["score_shift"]
    assert ev["rejected"] and ev["e_value"] >= ev["threshold"] == pytest.approx(5 / 0.05)
    same = CanaryAnalysis(AnalysisSettings(alpha=0.05, min_requests=20, score_shift=True))
    for _ in range(30):
        verdict = same.observe(window(scores_c=rng.beta(2, 3, 100), scores_b=rng.beta(2, 3, 300)),
                               CHAMPION, CANARY, 25)
    assert verdict.outcome is Outcome.PASS and not verdict.evidence["score_shift"]["rejected"]


BASE = ("apiVersion: promotion/v1\nenvironment: prod\ngates:\n  lineage: {}\nrollout:\n  strategy: steps\n"
        "  steps:\n    - {weight: 100}\nslo:\n  error_rate_max: 0.05\n  latency_p95_ms_max: 100\n  min_requests: 20\n")
KPI = "{name: ctr, numerator: 'sum(c{version=\"{version}\"})', denominator: 'sum(v{version=\"{version}\"})', direction: higher}"
EXPERIMENT = BASE.replace("strategy: steps\n  steps:\n    - {weight: 100}\n",
                          "strategy: experiment\n  experiment: {weights: {canary: 10}, kpi: ctr, min_effect: 0.02, "
                          "max_duration_s: 3600}\n")


def load(tmp_path, text):
    from promotion.config import load_policy
    from promotion.rollout.settings import RolloutSettings

    (tmp_path / "policies").mkdir(exist_ok=True)
    path = tmp_path / "policies" / "prod.yaml"
    path.write_text(text)
    return RolloutSettings.from_policy(load_policy(path, tmp_path))


@pytest.mark.parametrize("kpis, where", [
    ("[{name: ctr, numerator: 'sum(c)', denominator: 'sum(v{version=\"{version}\"})', direction: higher}]",
     "analysis.kpis[0].numerator: 'sum(c)' does not match"),
    (f"[{KPI}, {KPI}]", "analysis.kpis[1].name: 'ctr' is defined twice"),
    ("[{name: ctr, numerator: 'a{version}', denominator: 'b{version}', direction: up}]", "analysis.kpis"),
    ("[{name: ctr, numerator: 'a{version}', denominator: 'b{version}', direction: higher, tolerance: 1}]",
     "analysis.kpis"),
])
def test_bad_kpis_name_file_line_and_field(tmp_path, kpis, where):
    from promotion.errors import ConfigError

    line = BASE.count("\n") + 2
    with pytest.raises(ConfigError) as err:
        load(tmp_path, BASE + "analysis:\n  kpis: " + kpis + "\n")
    text = str(err.value)
    assert f"policies/prod.yaml:{line}" in text and where in text, text


@pytest.mark.parametrize("change, where", [
    (("kpi: ctr", "kpi: clicks"), "rollout.experiment.kpi: must name one of analysis.kpis (ctr)"),
    (("{canary: 10}", "{canary: 10, champion: 80}"), "rollout.experiment.weights.champion: canary + champion must be 100"),
    (("max_duration_s: 3600", "max_duration_s: 0"), "rollout.experiment"),
    (("  experiment: {weights: {canary: 10}, kpi: ctr, min_effect: 0.02, max_duration_s: 3600}\n", ""), "rollout"),
])
def test_bad_experiments_name_file_line_and_field(tmp_path, change, where):
    from promotion.errors import ConfigError

    text = EXPERIMENT.replace(*change) + f"analysis:\n  kpis: [{KPI}]\n"
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert "policies/prod.yaml:" in str(err.value) and where in str(err.value), str(err.value)


def test_a_good_experiment_reaches_the_analysis_and_one_step_holds_the_split(tmp_path):
    s = load(tmp_path, EXPERIMENT + f"analysis:\n  alpha: 0.05\n  score_shift: {{}}\n  kpis: [{KPI}]\n")
    assert [(st.weight, st.max_s) for st in s.steps] == [(10.0, 3600.0)]
    assert (s.experiment.kpi, s.experiment.min_effect, s.experiment.alpha) == ("ctr", 0.02, 0.05)
    a = s.analysis
    assert a.experiment == {"kpi": "ctr", "min_effect": 0.02, "alpha": 0.05} and a.score_shift
    assert a.shares["kpi:ctr"] == a.shares["score_shift"] == pytest.approx(0.05 / 6)
    assert a.kpi_settings[0].query("numerator", 7, 'job="x"') == 'sum(c{version="7"})'


def test_a_bad_kpi_policy_exits_2_naming_file_line_and_field(repo, capsys):
    from promotion.cli import main

    policy = repo / "policies" / "prod.yaml"
    text = policy.read_text()
    assert "\nanalysis:\n" in text
    policy.write_text(text.replace("\nanalysis:\n", "\nanalysis:\n  kpis: [{name: ctr, numerator: 'sum(c)', "
                                   "denominator: 'sum(v{version})', direction: up}]\n"))
    line = text[:text.index("\nanalysis:\n")].count("\n") + 3
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr().err
    assert f"policies/prod.yaml:{line} analysis.kpis[0].numerator: 'sum(c)' does not match" in err, err
    assert f"policies/prod.yaml:{line} analysis.kpis[0].direction: must be one of 'higher', 'lower'" in err, err
