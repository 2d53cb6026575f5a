"""Where local state lives: one git-ignored folder per project (``.promotion/``).

``$PROMOTION_STATE`` overrides it. It holds the embedded MLflow store (``mlflow.db`` and
``mlartifacts/``), the local signing key, rollout state and event logs, local approvals
and service state.

Everything in it is trusted as this machine's own, so it must never come from the
repository: :func:`tracked_state` names the files git tracks in it (a ``.promotion/``
committed with ``git add -f``), and every command that reads or acts on state refuses
them (:func:`refuse_tracked_state`).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir(root: str | Path | None = None) -> Path:
    override = os.environ.get("PROMOTION_STATE")
    base = Path(override) if override else Path(root or Path.cwd()) / ".promotion"
    base.mkdir(parents=True, exist_ok=True)
    return base.resolve()


def tracked_state(root: str | Path) -> tuple[str, list[str]]:
    """(the state folder as shown to a person, the files git tracks in it).

    The list is empty when the folder lies outside the repository at ``root`` (git
    refuses a path outside its work tree) or when nothing in it is tracked.
    """
    from promotion._internal.git import Git

    root = Path(root).resolve()
    state = state_dir(root)
    try:
        shown = state.relative_to(root).as_posix() or "."
    except ValueError:
        shown = str(state)
    # an absolute pathspec: git answers for the whole work tree (also above ``root``)
    # and fails, printing nothing, for a folder outside it
    out = Git(root)("ls-files", "--full-name", "--", str(state), check=False)
    return shown, [line for line in out.split("\n") if line]


def refuse_tracked_state(root: str | Path, error: type[Exception], who: str = "the repository") -> None:
    """Raise ``error`` when git tracks files in the state folder of ``root``.

    A committed rollout state would be resumed (and promoted) without the gates, a
    committed registry, key or approval would be taken as this machine's own.
    """
    shown, tracked = tracked_state(root)
    if tracked:
        raise error(f"{who} commits files in the local state folder {shown}/ "
                    f"({tracked[0]}{', ...' if len(tracked) > 1 else ''}): refusing to use them; "
                    "remove them, or set PROMOTION_STATE outside the checkout")
