"""``promotion.register``: one call logs what every gate needs, for any flavour, or refuses."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

import promotion
from promotion import cli
from promotion._internal.holdout import CLASSIFICATION_METRICS, REGRESSION_METRICS
from promotion.errors import RegistryError
from promotion.registration import LINEAGE_TAGS, RegisterError
from tests.unit.adoption.conftest import churn_data, churn_pipeline, git, set_env

FAST = {"latency_reps": 20, "reference_rows": 300}


def _reference(registry, mv) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        path = registry.download_run_artifact(mv.run_id, mv.tags["reference_sample"], tmp)
        return pd.read_parquet(path)


def _mlmodel(registry, mv) -> dict:
    import yaml

    return yaml.safe_load((registry.artifact_path(mv.name, mv.version) / "MLmodel").read_text())


def test_sklearn_pipeline_with_a_categorical_column_gets_everything_the_gates_read(registry, code_repo, project, capsys):
    X, y = churn_data(1200)
    model = churn_pipeline(X[:800], y[:800])
    mv = promotion.register(model, X[800:], y[800:], name="churn", segment="region", reference=X[:800],
                            train=(X[:800], y[:800]), params={"owner": "growth"}, code_dir=code_repo, registry=registry,
                            **FAST)

    assert mv.version == 1
    for metric in (*CLASSIFICATION_METRICS, "latency_p95_ms", "holdout_rows",
                   "tpr_region_north", "tpr_region_south", "fpr_region_north", "fpr_region_south"):
        assert metric in mv.metrics, metric
    assert mv.metrics["holdout_rows"] == 400 and 0 < mv.metrics["latency_p95_ms"] < 1000
    assert mv.metrics["recall"] > 0.9 and mv.metrics["auc"] > 0.9
    for tag in LINEAGE_TAGS:
        assert mv.tags[tag].strip(), tag
    assert mv.tags["code_commit"] == git(code_repo, "rev-parse", "HEAD").strip()
    assert mv.tags["task"] == "classification" and mv.tags["flavor"] == "sklearn" and mv.tags["segment"] == "region"
    assert mv.digest == registry.artifact_digest("churn", 1)
    assert mv.params["owner"] == "growth" and mv.params["decision_threshold"] == "0.5"

    mlmodel = _mlmodel(registry, mv)
    inputs = {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs == {"tenure": "double", "plan": "string", "region": "string"}
    assert mlmodel["metadata"]["decision_threshold"] == 0.5
    requirements = (registry.artifact_path("churn", 1) / "requirements.txt").read_text()
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in requirements  # pinned, not inferred

    ref = _reference(registry, mv)
    assert len(ref) == 300 and {"tenure", "plan", "region", "score"} <= set(ref.columns)
    assert ref["plan"].isin(["basic", "pro", "max"]).all() and ref["score"].between(0, 1).all()

    # the gates see it: a scaffolded dev policy passes once the environment file names the version
    set_env(project, "dev", mv.version, mv.digest)
    assert cli.main(["--root", str(project), "gate", "dev", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c["verdict"] for g in report["gates"] for c in g["checks"]}
    assert checks["metrics.recall"] == "PASS" and checks["lineage.tags"] == "PASS" and checks["lineage.digest"] == "PASS"


def test_regression_model_logs_rmse_mae_r2_and_per_segment_errors(registry, code_repo):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    X, _ = churn_data(600, seed=3)
    y = 3 * X["tenure"] + X["plan"].map({"basic": 0, "pro": 10, "max": 30}) + np.random.default_rng(0).normal(0, 1, 600)
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["plan"]), remainder="drop"),
                          Ridge()).fit(X, y)
    mv = promotion.register(model, X, y, name="price", segment="region", code_dir=code_repo, registry=registry, **FAST)

    assert mv.tags["task"] == "regression"
    assert set(REGRESSION_METRICS) <= set(mv.metrics) and not set(CLASSIFICATION_METRICS) & set(mv.metrics)
    for s in ("north", "south"):
        assert f"rmse_region_{s}" in mv.metrics and f"mae_region_{s}" in mv.metrics
    assert mv.metrics["rmse"] >= mv.metrics["mae"] > 0
    assert "decision_threshold" not in mv.tags
    assert "prediction" in _reference(registry, mv).columns


class Rule(mlflow.pyfunc.PythonModel):
    """A custom model: answers a label and a score column."""

    def predict(self, context, model_input, params=None):
        score = 1 / (1 + np.exp(model_input["tenure"].to_numpy() - 12))
        basic = (model_input["plan"] == "basic").to_numpy()
        score = np.where(basic, np.maximum(score, 0.9), score)
        return pd.DataFrame({"label": (score >= 0.5).astype(int), "score": score})


def test_custom_pythonmodel_is_measured_through_its_logged_pyfunc(registry, code_repo):
    X, y = churn_data(500, seed=4)
    X["plan"] = X["plan"].astype("category")  # arrives as strings from a request; the signature says string
    mv = promotion.register(Rule(), X, y, name="rule", segment="region", code_dir=code_repo, registry=registry, **FAST)

    assert mv.tags["flavor"] == "pyfunc" and mv.tags["task"] == "classification"
    assert mv.metrics["auc"] > 0.9 and "tpr_region_north" in mv.metrics
    inputs = {c["name"]: c["type"] for c in json.loads(_mlmodel(registry, mv)["signature"]["inputs"])}
    assert inputs["plan"] == "string"
    assert mv.digest == registry.artifact_digest("rule", mv.version)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_boosted_trees_are_logged_in_their_own_flavour(registry, code_repo, library):
    X, y = churn_data(600, seed=5)
    X = X.assign(plan=X["plan"].astype("category"), region=X["region"].astype("category"))
    if library == "xgboost":
        import xgboost as xgb

        model = xgb.XGBClassifier(n_estimators=10, max_depth=3, enable_categorical=True, tree_method="hist", n_jobs=1)
    else:
        import lightgbm as lgb

        model = lgb.LGBMClassifier(n_estimators=10, verbose=-1, n_jobs=1)
    model.fit(X, y)
    mv = promotion.register(model, X, y, name=f"churn-{library}", code_dir=code_repo, registry=registry, **FAST)
    assert mv.tags["flavor"] == library and library in _mlmodel(registry, mv)["flavors"]
    assert mv.metrics["auc"] > 0.9


def test_an_already_logged_model_uri_gets_its_metrics_in_its_own_run(registry, code_repo):
    import mlflow
    import mlflow.sklearn

    from promotion.registry import EXPERIMENT

    X, y = churn_data(600, seed=6)
    model = churn_pipeline(X, y)
    mlflow.set_tracking_uri(registry.uri)
    try:
        with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name(EXPERIMENT).experiment_id) as run:
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"],
                                            skops_trusted_types=["sklearn.tree._tree.Tree"])
    finally:
        mlflow.set_tracking_uri(None)  # the team's setting, not the next test's
    mv = promotion.register(info.model_uri, X, y, name="churn", segment="region", code_dir=code_repo,
                            registry=registry, **FAST)
    assert mv.run_id == run.info.run_id
    assert "recall" in mv.metrics and "tpr_region_south" in mv.metrics and mv.tags["flavor"] == "sklearn"
    assert _mlmodel(registry, mv)["signature"]["inputs"]  # added to the logged model, which had none


def _no_versions(registry, name: str) -> bool:
    return not registry.client.search_model_versions(f"name='{name}'")


def test_uncommitted_training_code_is_refused_and_nothing_is_registered(registry, code_repo):
    X, y = churn_data(300)
    (code_repo / "train.py").write_text("# changed after the last commit\n")
    with pytest.raises(RegisterError, match=r"uncommitted changes \(train.py\)"):
        promotion.register(churn_pipeline(X, y), X, y, name="churn", code_dir=code_repo, registry=registry, **FAST)
    assert _no_versions(registry, "churn")


def test_code_outside_git_is_refused(registry, tmp_path):
    X, y = churn_data(300)
    loose = tmp_path / "loose"
    loose.mkdir()
    with pytest.raises(RegisterError, match="not inside a git repository"):
        promotion.register(churn_pipeline(X, y), X, y, name="churn", code_dir=loose, registry=registry, **FAST)
    assert _no_versions(registry, "churn")


def test_untracked_training_script_is_refused(code_repo):
    from promotion._internal.provenance import code_commit

    script = code_repo / "new_train.py"
    script.write_text("# never committed\n")
    with pytest.raises(RegisterError, match="new_train.py .the training code. is not committed"):
        code_commit(code_repo, script)
    assert code_commit(code_repo, code_repo / "train.py") == git(code_repo, "rev-parse", "HEAD").strip()


def test_data_without_a_computable_digest_is_refused(registry, code_repo):
    X, y = churn_data(300)
    model = churn_pipeline(X, y)
    train = X.assign(history=[[1, 2]] * len(X))  # lists: nothing pandas can hash
    with pytest.raises(RegisterError, match="cannot compute a data snapshot digest: column 'history'"):
        promotion.register(model, X, y, name="churn", train=train, code_dir=code_repo, registry=registry, **FAST)
    assert _no_versions(registry, "churn")


def test_a_version_whose_digest_cannot_be_written_is_deleted_again(registry, code_repo, monkeypatch):
    X, y = churn_data(300)
    real = registry.set_tag

    def failing(name, version, key, value):
        if key == "artifact_digest":
            raise RegistryError(f"model {name} version {version}: registry error: database is locked")
        return real(name, version, key, value)

    monkeypatch.setattr(registry, "set_tag", failing)
    with pytest.raises(RegistryError, match="database is locked"):
        promotion.register(churn_pipeline(X, y), X, y, name="churn", code_dir=code_repo, registry=registry, **FAST)
    assert _no_versions(registry, "churn")


def test_bad_arguments_are_one_line_errors(registry, code_repo):
    X, y = churn_data(300)
    model = churn_pipeline(X, y)
    cases = [
        (dict(X_holdout=X.to_numpy()), "X_holdout: must be a pandas DataFrame"),
        (dict(y_holdout=y[:10]), "y_holdout: must hold one value per row"),
        (dict(segment="country"), "segment='country': not a column of X_holdout"),
        (dict(task="ranking"), "task='ranking': must be one of classification, regression"),
        (dict(threshold=7), "threshold=7: must be a number between 0 and 1"),
        (dict(model=object()), "cannot tell the MLflow flavour of a builtins.object"),
    ]
    for change, message in cases:
        kwargs = dict(model=model, X_holdout=X, y_holdout=y, name="churn", code_dir=code_repo, registry=registry, **FAST)
        kwargs.update(change)
        with pytest.raises(RegisterError, match=message) as exc:
            promotion.register(kwargs.pop("model"), kwargs.pop("X_holdout"), kwargs.pop("y_holdout"), **kwargs)
        assert "\n" not in exc.value.diagnostics() and exc.value.exit_code == 2
    assert _no_versions(registry, "churn")


def test_import_promotion_stays_light():
    import subprocess
    import sys

    code = "import promotion, sys; print('mlflow' in sys.modules, 'pandas' in sys.modules, callable(promotion.register))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[3])
    assert out.stdout.split() == ["False", "False", "True"], out.stderr


def test_a_model_that_cannot_predict_on_the_holdout_is_the_callers_error(registry, code_repo):
    X, y = churn_data(300)
    model = churn_pipeline(X, y)
    with pytest.raises(RegisterError, match=r"model churn: cannot predict on X_holdout \(ValueError: .*plan"):
        promotion.register(model, X.drop(columns=["plan"]), y, name="churn", code_dir=code_repo, registry=registry,
                           **FAST)
    assert _no_versions(registry, "churn")


def test_own_tags_cannot_replace_lineage(registry, code_repo):
    X, y = churn_data(300)
    with pytest.raises(RegisterError, match="tags=: code_commit are set by register itself"):
        promotion.register(churn_pipeline(X, y), X, y, name="churn", tags={"code_commit": "trust me", "team": "growth"},
                           code_dir=code_repo, registry=registry, **FAST)
    assert _no_versions(registry, "churn")
