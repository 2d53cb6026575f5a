"""The trusted view of a pull request: the base commit judges, the pull request proposes.

In a pull request the checkout holds the pull request's files, and every one of them can
be edited by its author. So the gates take from it only the proposed model —
``model.name``, ``model.version`` and ``model.digest`` of ``environments/<env>.yaml`` —
and everything that decides how the proposal is judged from the *base* commit: the
policy, ``environments/trust.yaml`` and the records (with their git history), the
registry location, the production window, the serving endpoint and its token variable,
the metrics source. CODEOWNERS is read from the base branch by the approvals source.

:func:`trusted_view` materialises the base commit as a shared clone (``git clone
--shared``: no copy of the objects, full history, nothing written to the checkout's own
``.git``) in a temporary directory, loads the base environment file there, and overlays
the proposed model. :mod:`promotion.governance` lists what else the pull request changes.

Usage::

    from promotion.trusted import trusted_view
    from promotion.gates import run_gates

    with trusted_view(Path("pr"), "prod", base="origin/main") as view:
        report = run_gates(view.project, "prod", view=view)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from promotion.config import Environment, Project, check_environment_name, load_environment
from promotion.errors import ConfigError, Error, GitError, UsageError
from promotion.governance import Changes, detect


class NotJudgeable(Error):
    """The base commit has nothing to judge this proposal with (exit 1: blocked)."""


@dataclass(frozen=True)
class TrustedView:
    """The base commit's project, with the pull request's proposed model overlaid."""

    project: Project          # the base commit, checked out in a temporary directory
    env: Environment          # the base environment file, model fields from the pull request
    base_env: Environment     # the base environment file as it is
    proposal: Environment     # the pull request's environment file (only its model is used)
    state_root: Path          # where local state lives: the checkout's root, never read as config
    changes: Changes
    base_ref: str = ""        # the ref as given (--base)

    @property
    def base(self) -> str:
        return self.changes.base

    @property
    def base_label(self) -> str:
        short = self.changes.base[:7]
        if not self.base_ref or self.changes.base.startswith(self.base_ref):
            return f"the base commit {short}"
        return f"{self.base_ref} ({short})"


def event_shas() -> tuple[str | None, str | None]:
    """(base sha, head sha) of the pull request in ``$GITHUB_EVENT_PATH``; (None, None) outside one."""
    if not os.environ.get("GITHUB_EVENT_NAME", "").startswith("pull_request"):
        return None, None
    path = os.environ.get("GITHUB_EVENT_PATH")
    try:
        with open(path or "", encoding="utf-8") as fh:
            pull = json.load(fh).get("pull_request") or {}
        base, head = (pull.get("base") or {}).get("sha"), (pull.get("head") or {}).get("sha")
    except (OSError, ValueError, AttributeError):
        return None, None
    return (base if isinstance(base, str) else None), (head if isinstance(head, str) else None)


def default_refs(base: str | None, head: str | None) -> tuple[str | None, str | None]:
    """``--base``/``--head`` with their defaults in a pull request: the event payload's
    ``pull_request.base.sha`` and ``head.sha``, else ``origin/$GITHUB_BASE_REF``."""
    event_base, event_head = event_shas()
    if base is None:
        base = event_base or (f"origin/{os.environ['GITHUB_BASE_REF']}" if os.environ.get("GITHUB_BASE_REF") else None)
    if head is None:
        head = event_head
    return base, head


@contextmanager
def base_checkout(root: str | Path, sha: str) -> Iterator[Path]:
    """The tree of commit ``sha`` of the repository at ``root``, with its history, in a
    temporary directory removed on exit."""
    tmp = Path(tempfile.mkdtemp(prefix="promotion-base-"))
    dest = tmp / "base"
    # no filter of the base tree runs (LFS smudge would fetch from the network)
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_LFS_SKIP_SMUDGE": "1"}
    try:
        for args, cwd in ((["clone", "--quiet", "--shared", "--no-checkout", "--", str(Path(root).resolve()), str(dest)], tmp),
                          (["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha, "--"], dest)):
            proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip().splitlines()
                raise GitError(f"cannot check out the base commit {sha[:12]}: {detail[-1] if detail else proc.returncode}")
        yield dest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _proposal(root: Path, env_name: str) -> Environment:
    """The pull request's environment file, refused if it is not a plain file in the checkout."""
    path = root / "environments" / f"{env_name}.yaml"
    display = f"environments/{env_name}.yaml"
    if path.is_symlink() or (path.exists() and root.resolve() not in path.resolve().parents):
        raise ConfigError(f"{display}:1 (document): must be a regular file in the repository, not a link")
    if not path.is_file():
        raise ConfigError(f"{display}:1 (document): no such environment in the pull request")
    return load_environment(path, root)


def _state_guard(root: Path) -> None:
    """The local state folder (registry, artifact cache, approvals) must not come from the
    pull request: a committed ``.promotion/`` would plant a registry or a cached artifact."""
    from promotion._internal.paths import refuse_tracked_state

    refuse_tracked_state(root, NotJudgeable, "the pull request")


@contextmanager
def trusted_view(root: str | Path, env_name: str, base: str, head: str | None = None) -> Iterator[TrustedView]:
    """The trusted view of ``env_name`` for the checkout at ``root`` against commit ``base``.

    ``head`` (default ``HEAD``) bounds the governance changes (:func:`promotion.governance.detect`).
    Raises :class:`ConfigError` (exit 2) when the pull request's environment file is
    invalid, :class:`NotJudgeable` (exit 1) when the base commit has no such environment.
    """
    root = Path(root).resolve()
    check_environment_name(env_name)
    changes = detect(root, base, head)
    proposal = _proposal(root, env_name)
    _state_guard(root)
    with base_checkout(root, changes.base) as tree:
        project = Project(tree)
        path = tree / "environments" / f"{env_name}.yaml"
        if not path.is_file():
            raise NotJudgeable(f"environments/{env_name}.yaml does not exist on the base commit {changes.base[:7]}: "
                               "a new environment is a governance change; merge it on its own first")
        try:
            base_env = load_environment(path, tree)
        except ConfigError as exc:
            raise NotJudgeable(f"the base commit's environments/{env_name}.yaml is invalid, so nothing can be "
                               f"judged with it: {exc.problems[0]}") from None
        lines = dict(base_env.lines)
        lines.update({k: v for k, v in proposal.lines.items() if k[:1] == ("model",)})
        env = dataclasses.replace(base_env, model=proposal.model, lines=lines)
        yield TrustedView(project, env, base_env, proposal, root, changes, base)


def require_base(base: str | None) -> str:
    """``base``, or the reason a pull request's gate cannot run without one."""
    if not base:
        raise UsageError("in a pull request the gate judges with the base commit: pass --base REF "
                         "(or run where $GITHUB_EVENT_PATH holds the pull_request event)")
    return base
