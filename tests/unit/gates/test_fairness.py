"""Fairness on per-segment metrics named ``<rate>_<segment>_<value>``: classifiers and regressors alike."""

from __future__ import annotations

import numpy as np
import pytest

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy


def _model():
    from sklearn.linear_model import LinearRegression

    X = np.arange(20, dtype=float).reshape(-1, 1)
    return LinearRegression().fit(X, 2 * X[:, 0])


@pytest.fixture
def register(repo):
    reg = registry(repo)
    model = _model()

    def register(metrics: dict) -> None:
        propose(repo, *log_version(reg, model, metrics=metrics, serialization_format="skops"))

    return register


def test_a_regressor_is_judged_on_mae_by_region(repo, register, capsys):
    write_policy(repo, "  fairness:\n    segment: region\n    mae_gap_max: 2.0\n    mae_ratio_max: 1.25\n")
    register({"mae": 3.2, "mae_region_eu": 3.1, "mae_region_us": 3.4, "mae_region_apac": 3.6})
    code, doc = gate(repo, capsys, "fairness")
    found = checks(doc)
    assert code == 0, doc
    # only the rates the policy names: no TPR/FPR default merged into a regression policy
    assert set(found) == {"fairness.mae_gap", "fairness.mae_ratio"}
    assert found["fairness.mae_gap"]["value"] == pytest.approx(0.5)
    assert found["fairness.mae_ratio"]["value"] == pytest.approx(3.6 / 3.1, rel=1e-5)
    assert "MAE by region: apac=3.6, eu=3.1, us=3.4; gap 0.5 between region apac and eu" in found["fairness.mae_gap"]["message"]

    register({"mae_region_eu": 3.0, "mae_region_us": 5.5})
    code, doc = gate(repo, capsys, "fairness")
    found = checks(doc)
    assert code == 1
    assert found["fairness.mae_gap"]["verdict"] == "BLOCK" and found["fairness.mae_gap"]["threshold"] == "<= 2"
    assert found["fairness.mae_ratio"]["verdict"] == "BLOCK"
    assert "between region us and eu" in found["fairness.mae_ratio"]["message"]
    assert found["fairness.mae_ratio"]["file"] == "policies/prod.yaml" and found["fairness.mae_ratio"]["line"] == 7


def test_a_ratio_over_a_perfect_segment_is_infinite_and_blocks(repo, register, capsys):
    write_policy(repo, "  fairness:\n    segment: region\n    mae_ratio_max: 1.25\n")
    register({"mae_region_eu": 0.0, "mae_region_us": 0.4})
    code, doc = gate(repo, capsys, "fairness")
    assert code == 1 and checks(doc)["fairness.mae_ratio"]["value"] == "inf"


def test_one_segment_cannot_decide(repo, register, capsys):
    write_policy(repo, "  fairness:\n    segment: region\n    log_loss_gap_max: 0.05\n")
    register({"log_loss_region_eu": 0.3, "log_loss": 0.3})
    code, doc = gate(repo, capsys, "fairness")
    check = checks(doc)["fairness.log_loss_gap"]
    assert code == 1
    assert check["message"] == "cannot decide: v1 has 1 log_loss_region_* metric(s); at least two segments are needed"


def test_a_classifier_policy_without_rates_keeps_the_tpr_and_fpr_defaults(repo, register, capsys):
    write_policy(repo, "  fairness: {}\n")
    register({"tpr_segment_0": 0.97, "tpr_segment_1": 0.95, "fpr_segment_0": 0.01, "fpr_segment_1": 0.05})
    code, doc = gate(repo, capsys, "fairness")
    found = checks(doc)
    assert code == 1
    assert found["fairness.tpr_gap"]["verdict"] == "PASS" and found["fairness.tpr_gap"]["threshold"] == "<= 0.03"
    assert found["fairness.fpr_gap"]["verdict"] == "BLOCK" and found["fairness.fpr_gap"]["value"] == pytest.approx(0.04)


@pytest.mark.parametrize("setting, message", [
    ("mae_gap_max: -1", "gates.fairness.mae_gap_max: must be >= 0"),
    ("mae_ratio_max: 0.5", "gates.fairness.mae_ratio_max: must be >= 1"),
    ("tpr_gap_max: 2", "gates.fairness.tpr_gap_max: must be <= 1"),
    ("mae_gap: 1", "gates.fairness: unknown field(s): mae_gap"),
])
def test_bad_settings_name_file_line_and_field(repo, capsys, setting, message):
    from promotion.cli import main

    write_policy(repo, f"  fairness:\n    segment: region\n    {setting}\n")
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"policies/prod.yaml:6 {message}"]
