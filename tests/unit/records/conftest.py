from __future__ import annotations

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
