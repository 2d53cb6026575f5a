"""Where local state lives: one git-ignored folder per project (``.promotion/``).

``$PROMOTION_STATE`` overrides it. It holds the embedded MLflow store (``mlflow.db`` and
``mlartifacts/``), the local signing key, rollout state and event logs, and service state.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir(root: str | Path | None = None) -> Path:
    override = os.environ.get("PROMOTION_STATE")
    base = Path(override) if override else Path(root or Path.cwd()) / ".promotion"
    base.mkdir(parents=True, exist_ok=True)
    return base.resolve()
