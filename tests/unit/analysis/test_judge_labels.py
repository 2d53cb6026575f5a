"""The label signal inside the canary analysis: labels roll back (aggregate or one segment),
late labels count for their version across steps and a resumed state, labels never hold a
step except the last one with ``require_labels_to_promote``, A/A stays within alpha, and
the policy's ``analysis.labels`` is validated with file:line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome
from promotion.analysis.label_signal import LabelSettings
from promotion.metrics.base import LATENCY_BUCKETS, VersionCounters, Window
from promotion.metrics.quality import Quality

CHAMPION, CANARY = 6, 7
SEGMENTS = ("online", "pos")


def labels_settings(**kw) -> AnalysisSettings:
    rule = {"metric": "recall", "absolute": 0.02, "min_labels": 30, **kw}
    return AnalysisSettings(alpha=0.05, min_requests=20, labels=LabelSettings(**rule).to_dict())


def version(rng, served: int, labelled: int, recall: dict[str, float] | float) -> VersionCounters:
    """``served`` requests (healthy, fast) and ``labelled`` labels, half positives, per segment."""
    outcomes = {}
    for seg in SEGMENTS:
        r = recall[seg] if isinstance(recall, dict) else recall
        k = labelled // len(SEGMENTS)
        pos = rng.binomial(k, 0.5)
        tp = rng.binomial(pos, r)
        fp = rng.binomial(k - pos, 0.05)
        outcomes[seg] = {"tp": float(tp), "fn": float(pos - tp), "fp": float(fp), "tn": float(k - pos - fp)}
    lat = rng.lognormal(np.log(0.02), 0.3, served)
    return VersionCounters(requests=float(served), errors=0.0, latency_bounds=LATENCY_BUCKETS,
                           latency_counts=tuple(float((lat <= b).sum()) for b in LATENCY_BUCKETS),
                           quality=Quality(outcomes=outcomes) if labelled else Quality())


def window(rng, weight, labelled_c, labelled_b, recall_c, recall_b=0.95, served=400) -> Window:
    nc = int(served * weight / 100)
    versions = {CANARY: version(rng, nc, labelled_c, recall_c)}
    versions[CHAMPION] = version(rng, served - nc, labelled_b, recall_b)
    return Window(0.0, 1.0, versions)


def test_worse_recall_rolls_back_naming_the_signal_with_values_and_coverage():
    rng = np.random.default_rng(3)
    analysis = CanaryAnalysis(labels_settings())
    verdict = None
    for _ in range(30):
        verdict = analysis.observe(window(rng, 25, 40, 120, recall_c=0.6), CHAMPION, CANARY, 25)
        if verdict.outcome is Outcome.FAIL:
            break
    assert verdict.outcome is Outcome.FAIL
    reason = verdict.reasons[0]
    assert reason.startswith("label recall regressed: canary 0.") and "vs champion 0.9" in reason
    assert "labelled; coverage" in reason and "e=" in reason
    ev = verdict.evidence["labels"]
    assert ev["signal"] == "labels" and ev["rejected"] and ev["e_value"] >= ev["threshold"]
    assert ev["canary"] < 0.75 < 0.9 < ev["champion"]
    assert 0 < ev["coverage"]["canary"] < 1 and ev["served"]["canary"] > 0
    assert ev["alpha"] == pytest.approx(0.05 / 5)  # the four base tests plus the label metric


def test_healthy_canary_with_labels_passes_and_labels_never_hold_a_step():
    rng = np.random.default_rng(4)
    analysis = CanaryAnalysis(labels_settings())
    first = analysis.observe(window(rng, 25, 0, 0, 0.95), CHAMPION, CANARY, 25)  # no labels yet
    assert first.outcome is Outcome.PASS, first.reasons
    for _ in range(40):
        verdict = analysis.observe(window(rng, 25, 40, 120, recall_c=0.95), CHAMPION, CANARY, 25)
        assert verdict.outcome is Outcome.PASS, verdict.reasons
    assert not verdict.evidence["labels"]["rejected"]


def test_a_regression_in_one_segment_rolls_back_naming_it_while_the_aggregate_stays_quiet():
    rng = np.random.default_rng(5)
    analysis = CanaryAnalysis(labels_settings(segments="e-bh", absolute=0.3))
    verdict = None
    for _ in range(40):
        w = window(rng, 25, 60, 120, recall_c={"online": 0.97, "pos": 0.45}, recall_b=0.97)
        verdict = analysis.observe(w, CHAMPION, CANARY, 25)
        if verdict.outcome is Outcome.FAIL:
            break
    assert verdict.outcome is Outcome.FAIL
    assert len(verdict.reasons) == 1 and verdict.reasons[0].startswith("label recall regressed in segment pos:")
    seg = verdict.evidence["labels"]["segments"]
    assert seg["triggered"] == ["pos"] and seg["method"] == "e-bh" and seg["segments"] == 2
    assert seg["by_segment"]["pos"]["canary"] < 0.6 < seg["by_segment"]["online"]["canary"]
    assert not verdict.evidence["labels"]["rejected"]  # aggregate recall is within 0.3


def test_late_labels_count_across_steps_and_a_resumed_state_continues_the_test():
    rng = np.random.default_rng(6)
    analysis = CanaryAnalysis(labels_settings())
    for _ in range(3):  # served at 5 %, not labelled yet
        analysis.observe(window(rng, 5, 0, 0, 0.95), CHAMPION, CANARY, 5)
    verdict = None
    for i in range(30):
        # the 5 % step's labels arrive during the 25 % step; the state goes through JSON each tick
        analysis = CanaryAnalysis.from_dict(json.loads(json.dumps(analysis.to_dict())))
        verdict = analysis.observe(window(rng, 25, 40, 120, recall_c=0.6), CHAMPION, CANARY, 25)
        if verdict.outcome is Outcome.FAIL:
            break
    assert verdict.outcome is Outcome.FAIL and "label recall regressed" in verdict.reasons[0]
    # once rejected, more good labels do not undo the rollback
    after = analysis.observe(window(rng, 25, 200, 200, recall_c=0.99), CHAMPION, CANARY, 25)
    assert after.outcome is Outcome.FAIL


def test_below_min_labels_a_strong_signal_does_not_roll_back():
    rng = np.random.default_rng(7)
    analysis = CanaryAnalysis(labels_settings(min_labels=100000))
    for _ in range(20):
        verdict = analysis.observe(window(rng, 25, 40, 120, recall_c=0.2), CHAMPION, CANARY, 25)
    assert verdict.outcome is Outcome.PASS
    ev = verdict.evidence["labels"]
    assert ev["e_value"] >= ev["threshold"] and not ev["rejected"]


def test_require_labels_to_promote_holds_only_the_last_step():
    rng = np.random.default_rng(8)
    analysis = CanaryAnalysis(labels_settings(require_labels_to_promote=True, min_labels=40))
    assert analysis.observe(window(rng, 25, 0, 0, 0.95), CHAMPION, CANARY, 25).outcome is Outcome.PASS
    held = analysis.observe(window(rng, 100, 0, 0, 0.95), CHAMPION, CANARY, 100)
    assert held.outcome is Outcome.INCONCLUSIVE
    assert held.reasons[-1].startswith("waiting for labels: recall needs 40 labelled per version, canary has 0")
    # late labels for both versions arrive at 100 % (the champion serves nothing any more)
    for _ in range(3):
        w = window(rng, 100, 40, 0, 0.95)
        champ = version(rng, 0, 60, 0.95)
        w.versions[CHAMPION] = champ
        verdict = analysis.observe(w, CHAMPION, CANARY, 100)
    assert verdict.outcome is Outcome.PASS, verdict.reasons


def test_aa_false_rollback_rate_is_within_alpha():
    rng = np.random.default_rng(9)
    runs, rollbacks = 80, 0
    for _ in range(runs):
        analysis = CanaryAnalysis(labels_settings(segments="e-bh", absolute=0.0, min_labels=1))
        for _ in range(10):
            if analysis.observe(window(rng, 25, 30, 90, recall_c=0.9, recall_b=0.9), CHAMPION, CANARY, 25).outcome \
                    is Outcome.FAIL:
                rollbacks += 1
                break
    # the whole analysis at alpha 0.05 (labels get 2/6 of it); 3 sigma of simulation error
    assert rollbacks / runs <= 0.05 + 3 * (0.05 * 0.95 / runs) ** 0.5


BASE = ("apiVersion: promotion/v1\nenvironment: prod\ngates:\n  lineage: {}\nrollout:\n  strategy: steps\n"
        "  steps:\n    - {weight: 100}\nslo:\n  error_rate_max: 0.05\n  latency_p95_ms_max: 100\n  min_requests: 20\n")
LABELS_LINE = BASE.count("\n") + 3


@pytest.mark.parametrize("labels, message", [
    ("{metric: auc, tolerance: {absolute: 0.02}}", "analysis.labels.metric"),
    ("{metric: recall, tolerance: {absolute: 0.02, relative: 0.1}}", "analysis.labels.tolerance"),
    ("{metric: recall, tolerance: {absolute: 1.5}}", "analysis.labels.tolerance.absolute: must be < 1"),
    ("{metric: mae, loss_max: 2, tolerance: {absolute: 3}}", "analysis.labels.tolerance.absolute: must be < loss_max"),
    ("{metric: recall, tolerance: {relative: 0.1}, segments: {method: holm}}", "analysis.labels.segments.method"),
    ("{metric: recall, tolerance: {relative: 0.1}, min_labels: 0}", "analysis.labels.min_labels"),
])
def test_bad_label_rules_name_file_line_and_field(tmp_path, labels, message):
    from promotion.config import load_policy
    from promotion.errors import ConfigError
    from promotion.rollout.settings import RolloutSettings

    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "prod.yaml"
    path.write_text(BASE + "analysis:\n  alpha: 0.05\n  labels: " + labels + "\n")
    with pytest.raises(ConfigError) as err:
        RolloutSettings.from_policy(load_policy(path, tmp_path))
    text = str(err.value)
    assert f"policies/prod.yaml:{LABELS_LINE}" in text and message in text, text


def test_a_good_label_rule_reaches_the_analysis(tmp_path):
    from promotion.config import load_policy
    from promotion.rollout.settings import RolloutSettings

    (tmp_path / "policies").mkdir()
    path = tmp_path / "policies" / "prod.yaml"
    path.write_text(BASE + "analysis:\n  labels: {metric: fpr, tolerance: {relative: 0.1}, min_labels: 10, "
                    "segments: {method: bonferroni}, require_labels_to_promote: true}\n")
    policy = load_policy(path, tmp_path)
    settings = RolloutSettings.from_policy(policy).analysis
    assert settings == AnalysisSettings.from_policy(policy)
    ls = settings.label_settings
    assert (ls.metric, ls.relative, ls.min_labels, ls.segments, ls.require_labels_to_promote) == \
        ("fpr", 0.1, 10, "bonferroni", True)
    assert settings.alpha_each == pytest.approx(0.05 / 6)


def test_coverage_never_reads_above_all_served_when_labels_are_counted_before_their_requests():
    rng = np.random.default_rng(5)
    analysis = CanaryAnalysis(labels_settings())
    # the label counter's scrape saw more than the request counter's: 40 labels, 30 served
    analysis.observe(window(rng, 25, 40, 40, recall_c=0.95, served=120), CHAMPION, CANARY, 25)
    ev = analysis.evidence()["labels"]
    assert ev["labelled"]["canary"] > ev["served"]["canary"]
    assert ev["coverage"]["canary"] == 1.0
