"""Shared fixtures: a promotion repository in a temp dir, isolated state, free ports."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's GitHub or MLflow settings by accident."""
    for var in ("GITHUB_ACTIONS", "GITHUB_TOKEN", "GITHUB_EVENT_PATH", "GITHUB_STEP_SUMMARY", "GITHUB_SHA",
                "MLFLOW_TRACKING_URI", "PROMOTION_ROOT", "ACTIONS_ID_TOKEN_REQUEST_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.invalid")
    yield
    # mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI: never let one test's registry
    # become the next test's (or a session fixture's) default
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    try:
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils
    except ImportError:  # pragma: no cover - a test environment without MLflow
        return
    tracking_utils._tracking_uri = None
    registry_utils._registry_uri = None


def make_repo(path: Path) -> Path:
    """A git repository holding copies of this project's environments/ and policies/."""
    shutil.copytree(REPO / "environments", path / "environments",
                    ignore=shutil.ignore_patterns("records", "trust.yaml"))
    shutil.copytree(REPO / "policies", path / "policies")
    (path / ".gitignore").write_text(".promotion/\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(["git", "commit", "-qm", "init"], cwd=path, check=True)
    return path


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    root = make_repo(tmp_path / "repo")
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    return root
