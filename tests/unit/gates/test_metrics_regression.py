"""A regression model judged on RMSE and MAE relative to its champion, in a real MLflow registry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy

POLICY = """\
  metrics:
    relative:
      rmse: {max_ratio: 1.0}
      mae: {max_ratio: 1.02}
"""


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"size_m2": rng.uniform(20, 200, n), "rooms": rng.integers(1, 7, n).astype(float)})
    frame["price"] = 3.0 * frame["size_m2"] + 12.0 * frame["rooms"] + rng.normal(0, 20, n)
    return frame


def _fit(rows: int, noise: float, seed: int):
    """A linear regressor fitted on ``rows`` rows whose labels carry extra ``noise``; its holdout RMSE and MAE."""
    from sklearn.linear_model import LinearRegression

    train, holdout = _data(rows, seed), _data(2000, 99)
    labels = train["price"] + np.random.default_rng(seed + 1).normal(0, noise, rows)
    model = LinearRegression().fit(train[["size_m2", "rooms"]], labels)
    error = model.predict(holdout[["size_m2", "rooms"]]) - holdout["price"]
    return model, {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error)))}


@pytest.fixture
def versions(repo):
    reg = registry(repo)
    out = {}
    for label, rows, noise in (("champion", 60, 60.0), ("better", 3000, 0.0), ("worse", 12, 200.0)):
        model, metrics = _fit(rows, noise, seed=len(out) + 1)
        version, digest = log_version(reg, model, metrics=metrics, example=_data(20, 5)[["size_m2", "rooms"]],
                                      serialization_format="skops")
        out[label] = (version, digest, metrics)
    reg.set_alias("fraud-detector", "prod", out["champion"][0])
    write_policy(repo, POLICY)
    return repo, out


def test_a_better_regressor_passes_and_a_worse_one_blocks(versions, capsys):
    repo, v = versions
    assert v["better"][2]["rmse"] < v["champion"][2]["rmse"] < v["worse"][2]["rmse"]

    propose(repo, *v["better"][:2])
    code, doc = gate(repo, capsys, "metrics")
    found = checks(doc)
    assert code == 0 and doc["verdict"] == "PASS", doc
    # the policy names rmse and mae: no classification default (recall, fpr, f1, auc) is merged in
    assert set(found) == {"metrics.rmse vs champion", "metrics.mae vs champion"}
    assert found["metrics.rmse vs champion"]["threshold"].endswith(f"(1 x v{v['champion'][0]})")

    propose(repo, *v["worse"][:2])
    code, doc = gate(repo, capsys, "metrics")
    found = checks(doc)
    assert code == 1 and doc["verdict"] == "BLOCK"
    rmse = found["metrics.rmse vs champion"]
    assert rmse["verdict"] == "BLOCK" and rmse["value"] == pytest.approx(v["worse"][2]["rmse"])
    assert f"must be <= {v['champion'][2]['rmse']:.4g}" in rmse["message"]
    assert found["metrics.mae vs champion"]["verdict"] == "BLOCK"


def test_absolute_rmse_bound_alone_gets_no_classification_defaults(versions, capsys):
    repo, v = versions
    write_policy(repo, "  metrics:\n    absolute:\n      rmse: {max: 3000}\n")
    propose(repo, *v["better"][:2])
    code, doc = gate(repo, capsys, "metrics")
    assert code == 0, doc
    assert list(checks(doc)) == ["metrics.rmse"]


def test_an_empty_metrics_section_gets_the_classification_defaults(repo):
    from promotion.config import Project

    write_policy(repo, "  metrics: {}\n")
    project = Project(repo)
    gates = project.policy_for(project.environment("prod")).gates
    assert set(gates["metrics"]["absolute"]) == {"recall", "fpr", "latency_p95_ms"}
    assert set(gates["metrics"]["relative"]) == {"f1", "auc"}
