"""Module-scoped isolation for tests that start real services: state folder, admin token,
embedded registry and a git identity, undone when the module is done."""

from __future__ import annotations

from pathlib import Path

import pytest


def isolated_env(root: Path, token: str) -> pytest.MonkeyPatch:
    """A MonkeyPatch with PROMOTION_STATE under ``root``, the admin ``token``, no inherited
    MLFLOW_TRACKING_URI and a git identity; call ``.undo()`` at teardown."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMOTION_STATE", str(Path(root) / "state"))
    mp.setenv("PROMOTION_ADMIN_TOKEN", token)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        mp.setenv(var, "Test")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        mp.setenv(var, "t@example.invalid")
    return mp
