from __future__ import annotations

import subprocess

import pytest

DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """An empty promotion repository with its own key state and a clean signer environment."""
    root = tmp_path / "repo"
    (root / "environments").mkdir(parents=True)
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER", "ACTIONS_ID_TOKEN_REQUEST_URL", "PROMOTION_ROOT",
                 "GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture
def git_repo(repo):
    """``repo`` as a git repository with one commit (an environment file for prod)."""
    from _records_helpers import commit, set_env

    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "config", "commit.gpgsign", "false"], cwd=repo, check=True)
    set_env(repo, 1)
    commit(repo, "initial")
    return repo
