"""A thin wrapper over the ``git`` command, translating failures into GitError."""

from __future__ import annotations

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

    def commit(self, message: str, paths: list[str | Path], author: str | None = None) -> str:
        """Stage ``paths`` and commit them; returns the new commit's sha."""
        rel = [str(Path(p).resolve().relative_to(self.root.resolve())) if Path(p).is_absolute() else str(p) for p in paths]
        self("add", "--", *rel)
        args = ["commit", "-q", "-m", message]
        if author:
            args += ["--author", author]
        self(*args)
        return self.head()
