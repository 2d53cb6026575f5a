"""The cost gate: size, memory at load and CPU per prediction, measured in a fresh process."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy

POLICY = """\
  cost:
    price_per_cpu_hour: 0.10
    predictions: 50
    rounds: 2
    budget: {artifact_mb: 100, cost_per_million: 10}
    max_ratio: {cpu_ms_per_prediction: 1.5}
  artifact: {}
"""


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.gamma(2, 20, n), "hour": rng.integers(0, 24, n).astype(float)})
    return frame, (frame["amount"] > 40).astype(int)


@pytest.fixture
def cheap_and_dear(repo):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    reg = registry(repo)
    cheap = log_version(reg, LogisticRegression().fit(X, y), reference=X, example=X.head(10),
                        serialization_format="skops")
    dear = log_version(reg, RandomForestClassifier(n_estimators=300, max_depth=8, random_state=0).fit(X, y),
                       reference=X, example=X.head(10), serialization_format="skops",
                       skops_trusted_types=["sklearn.tree._tree.Tree"])
    write_policy(repo, POLICY)
    return repo, reg, cheap, dear


def test_a_slower_challenger_blocks_against_the_champion_and_a_faster_one_passes(cheap_and_dear, capsys):
    repo, reg, cheap, dear = cheap_and_dear
    reg.set_alias("fraud-detector", "prod", cheap[0])
    propose(repo, *dear)
    code, doc = gate(repo, capsys, "cost")
    found = checks(doc)
    assert code == 1
    ratio = found["cost.cpu_ms_per_prediction vs champion"]
    assert ratio["verdict"] == "BLOCK" and ratio["threshold"].endswith(f"(1.5 x v{cheap[0]})")
    assert "more than 1.5 x the champion" in ratio["message"]
    details = doc["gates"][0]["details"]
    assert details["challenger"]["cpu_ms_per_prediction"] > 3 * details["champion"]["cpu_ms_per_prediction"]
    assert details["challenger"]["load_memory_mb"] > 0 and details["predictions"] == 50
    mb = details["challenger"]["artifact_mb"]
    assert found["cost.artifact_mb"] == {**found["cost.artifact_mb"], "verdict": "PASS", "value": mb, "threshold": "<= 100"}
    per_million = found["cost.cost_per_million"]
    # CPU seconds for a million predictions, at 0.10 per CPU hour
    assert per_million["value"] == pytest.approx(details["challenger"]["cpu_ms_per_prediction"] / 1000 * 1e6 / 3600 * 0.10,
                                                 rel=1e-3, abs=1e-6)

    reg.set_alias("fraud-detector", "prod", dear[0])
    propose(repo, *cheap)
    code, doc = gate(repo, capsys, "cost")
    assert code == 0, doc
    assert checks(doc)["cost.cpu_ms_per_prediction vs champion"]["verdict"] == "PASS"


def test_over_budget_blocks_and_every_check_can_be_recorded(cheap_and_dear, capsys):
    from promotion.records.statement import build_statement, statement_problem

    repo, reg, cheap, _ = cheap_and_dear
    write_policy(repo, POLICY.replace("artifact_mb: 100", "artifact_mb: 0.0001"))
    propose(repo, *cheap)
    code, doc = gate(repo, capsys, "cost", "artifact")
    found = checks(doc)
    assert code == 1
    assert found["cost.artifact_mb"]["verdict"] == "BLOCK" and "over the budget of 0.0001" in found["cost.artifact_mb"]["message"]
    assert found["cost.cpu_ms_per_prediction vs champion"]["threshold"] == "no champion"
    # what the rollout writes into the promotion record: every check, artifact and cost included
    recorded = [{**c, "verdict": c["verdict"].lower()} for g in doc["gates"] for c in g["checks"]]
    statement = build_statement(
        sequence=1, action="promote", model="fraud-detector", version=cheap[0], digest=cheap[1], from_env=None,
        to_env="prod", checks=recorded, approvers=[], steps=[{"weight": 100}], rollback_target=None,
        replaced_version=None, data_snapshot=None, code_commit=None, policy_digest=None, source_commit=None,
        reason=None, evidence=None, previous=None)
    assert statement_problem(statement, full=True) is None
    names = {c["name"] for c in statement["predicate"]["checks"]}
    assert {"artifact.pickle", "artifact.requirements", "cost.artifact_mb", "cost.cost_per_million"} <= names


def test_no_rows_to_time_cannot_decide(repo, capsys):
    from sklearn.linear_model import LogisticRegression

    X, y = _data()
    propose(repo, *log_version(registry(repo), LogisticRegression().fit(X, y), serialization_format="skops"))
    write_policy(repo, "  cost: {}\n")
    code, doc = gate(repo, capsys, "cost")
    (check,) = doc["gates"][0]["checks"]
    assert code == 1 and check["message"].startswith("cannot decide: v1: no rows to time predictions on")
