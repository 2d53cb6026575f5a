"""A team adopting the product: a scaffolded project, a committed training repo, a real
sqlite MLflow registry (copied from a session template: creating the tables takes seconds)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from promotion import cli


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """A state dir whose mlflow.db has its tables and the ``promotion`` experiment."""
    from promotion.registry import EXPERIMENT, Registry, embedded_uri

    state = tmp_path_factory.mktemp("mlflow-template")
    old = os.environ.get("PROMOTION_STATE")
    os.environ["PROMOTION_STATE"] = str(state)
    try:
        reg = Registry(embedded_uri(state)[0], state)
        reg.client.create_experiment(EXPERIMENT, artifact_location=reg.artifact_root)
    finally:
        if old is None:
            os.environ.pop("PROMOTION_STATE", None)
        else:
            os.environ["PROMOTION_STATE"] = old
    return state


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_template, capsys) -> Path:
    """A repository made by ``promotion init --model churn``, with its own copy of the registry."""
    root = tmp_path / "project"
    assert cli.main(["init", "--model", "churn", "--dir", str(root)]) == 0
    capsys.readouterr()
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(mlflow_template / "mlflow.db", state / "mlflow.db")
    monkeypatch.setenv("PROMOTION_STATE", str(state))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "promotion init")
    return root


@pytest.fixture
def registry(project):
    from promotion.registry import Registry

    return Registry(None, project)


@pytest.fixture
def code_repo(tmp_path) -> Path:
    """The team's training code, committed."""
    root = tmp_path / "training"
    root.mkdir()
    (root / "train.py").write_text("# trains the churn model\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "training code")
    return root


def churn_data(n: int = 800, seed: int = 0):
    """(X, y): a numeric feature, a string categorical one and a region; churn is learnable."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "tenure": rng.exponential(20, n),
        "plan": rng.choice(["basic", "pro", "max"], n),
        "region": rng.choice(["north", "south"], n),
    })
    y = ((X["tenure"] < 12) | (X["plan"] == "basic")).astype(int)
    return X, y


def churn_pipeline(X, y):
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    pre = make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]), remainder="passthrough")
    return make_pipeline(pre, RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0)).fit(X, y)


def set_env(project: Path, env: str, version: int, digest: str) -> None:
    from promotion._internal.envfile import set_model

    set_model(project / "environments" / f"{env}.yaml", version, digest)
