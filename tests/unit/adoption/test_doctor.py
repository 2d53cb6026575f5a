"""``promotion doctor <env>``: what the version lacks for its gates, with the code that logs it."""

from __future__ import annotations

import json

import pytest

import promotion
from promotion import cli
from tests.unit.adoption.conftest import churn_data, churn_pipeline, set_env


def _plain_log_model(registry):
    """How many teams register today: mlflow.sklearn.log_model and nothing else."""
    import mlflow
    import mlflow.sklearn

    from promotion.registry import EXPERIMENT

    X, y = churn_data(400)
    mlflow.set_tracking_uri(registry.uri)
    try:
        with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name(EXPERIMENT).experiment_id):
            mlflow.sklearn.log_model(churn_pipeline(X, y), name="model", registered_model_name="churn",
                                     pip_requirements=["scikit-learn"], skops_trusted_types=["sklearn.tree._tree.Tree"])
    finally:
        mlflow.set_tracking_uri(None)
    return registry.version("churn", 1)


def _doctor(project, capsys, env="dev", *extra):
    capsys.readouterr()
    rc = cli.main(["--root", str(project), "doctor", env, *extra])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_plain_log_model_lists_every_missing_item_with_the_code_that_logs_it(project, registry, capsys):
    mv = _plain_log_model(registry)
    set_env(project, "dev", 1, registry.artifact_digest("churn", 1))
    rc, out, err = _doctor(project, capsys)
    assert rc == 1
    assert ("MISSING  metrics: missing metric 'recall': promotion.register(...) logs it; "
            'or mlflow.log_metric("recall", ...)') in out
    assert "missing metric 'fpr'" in out
    assert "schema: v1 has no MLflow signature: promotion.register(...) infers it" in out
    for tag in ("data_snapshot", "code_commit", "params", "env_lock", "artifact_digest"):
        assert f"lineage: missing tag '{tag}'" in out and f'set_model_version_tag("churn", "1", "{tag}"' in out
    assert "model.digest matches the artifact" in out  # the environment file itself is right
    assert "8 item(s) missing" in err  # 2 metrics, the signature, 5 tags, and nothing else
    assert "artifact_digest" not in mv.tags


def test_prod_policy_adds_fairness_drift_and_the_champions_metrics(project, registry, capsys):
    _plain_log_model(registry)
    rc, out, _ = _doctor(project, capsys, "prod")
    assert rc == 1
    assert ("fairness: missing metric 'tpr_segment_<value>' for at least two segments (has 0): "
            'promotion.register(..., segment="segment") logs them') in out
    assert "drift: missing tag 'reference_sample'" in out and "reference=X_train" in out
    assert "names no drift.production_window" in out
    assert "promotion propose prod --version 1` writes it" in out  # the placeholder digest
    for metric in ("latency_p95_ms", "f1", "auc"):
        assert f"missing metric '{metric}'" in out


def test_after_register_nothing_is_missing(project, registry, code_repo, capsys):
    X, y = churn_data(800)
    mv = promotion.register(churn_pipeline(X[:500], y[:500]), X[500:], y[500:], name="churn", segment="region",
                            code_dir=code_repo, registry=registry, latency_reps=20)
    set_env(project, "dev", mv.version, mv.digest)
    rc, out, _ = _doctor(project, capsys)
    assert rc == 0, out
    assert "MISSING" not in out and "nothing missing: every gate of policies/dev.yaml has what it reads" in out

    rc, out, _ = _doctor(project, capsys, "dev", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["missing"] == 0 and doc["version"] == mv.version
    assert {f["gate"] for f in doc["findings"]} == {"metrics", "schema", "lineage"}

    # a fairness policy naming another attribute than the one registered says which to use
    rc, out, _ = _doctor(project, capsys, "staging")
    assert rc == 1
    assert "v1 logged its segments as 'region': set gates.fairness.segment: region in policies/staging.yaml" in out


def test_a_changed_artifact_is_a_finding(project, registry, code_repo, capsys):
    X, y = churn_data(400)
    mv = promotion.register(churn_pipeline(X, y), X, y, name="churn", code_dir=code_repo, registry=registry,
                            latency_reps=10)
    set_env(project, "dev", mv.version, "sha256:" + "1" * 64)
    rc, out, _ = _doctor(project, capsys)
    assert rc == 1
    assert f"environments/dev.yaml model.digest is sha256:111111111111… but the artifact of v1 is {mv.digest}" in out


@pytest.mark.parametrize("argv, code, message", [
    (["doctor", "qa"], 2, "no such environment"),
    (["doctor", "../prod"], 2, "not an environment name"),
])
def test_bad_input_is_exit_2(project, capsys, argv, code, message):
    assert cli.main(["--root", str(project), *argv]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_version_not_in_the_registry_is_one_line_exit_1(project, registry, capsys):
    rc, _, err = _doctor(project, capsys)
    assert rc == 1 and "model churn version 1: does not exist in the registry" in err and err.count("\n") == 1
