"""A thin wrapper over the ``git`` command, translating failures into GitError."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from promotion.errors import GitError


class Git:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __call__(self, *args: str, check: bool = True, input: str | None = None) -> str:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=self.root, capture_output=True, text=True, input=input,
                env=None,
            )
        except FileNotFoundError:
            raise GitError("git is not installed") from None
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise GitError(f"git {' '.join(args[:2])} failed: {detail[-1] if detail else proc.returncode}")
        return proc.stdout

    def is_repo(self) -> bool:
        return self("rev-parse", "--git-dir", check=False) != ""

    def head(self) -> str:
        return self("rev-parse", "HEAD").strip()

    def current_branch(self) -> str:
        return self("rev-parse", "--abbrev-ref", "HEAD").strip()

    def commit(self, message: str, paths: list[str | Path]) -> str:
        """Stage ``paths`` (plus whatever is staged already) and commit; returns the sha."""
        rel = [str(Path(p).resolve().relative_to(self.root.resolve())) if Path(p).is_absolute() else str(p) for p in paths]
        if rel:
            self("add", "--", *rel)
        identity: list[str] = []
        if not (os.environ.get("GIT_COMMITTER_EMAIL") or self("config", "user.email", check=False).strip()):
            # a fresh machine or CI runner with no identity: commit as the tool, not fail
            identity = ["-c", "user.name=promotion", "-c", "user.email=promotion@localhost"]
        self(*identity, "commit", "-q", "-m", message)
        return self.head()
