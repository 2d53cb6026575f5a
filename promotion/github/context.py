"""Which repository and pull request a run is about.

In GitHub Actions: ``GITHUB_REPOSITORY`` and the event payload at ``GITHUB_EVENT_PATH``
(``pull_request`` and ``pull_request_review`` events carry ``pull_request.number``).
Command-line flags override both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from promotion.errors import UsageError

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class PullRequestRef:
    owner: str
    repo: str
    number: int | None
    base_ref: str | None = None

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"


def parse_repo(text: str) -> tuple[str, str]:
    if not _REPO.match(text or ""):
        raise UsageError(f"repository must be OWNER/NAME, got {text!r}")
    owner, name = text.split("/")
    return owner, name


def from_env(repo: str | None = None, pr: int | None = None) -> PullRequestRef | None:
    """The pull request this run is about, or None when there is no repository at all."""
    repo = repo or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        return None
    owner, name = parse_repo(repo)
    base_ref = os.environ.get("GITHUB_BASE_REF") or None
    number = pr
    if number is None:
        event = _event()
        pull = event.get("pull_request") if isinstance(event.get("pull_request"), dict) else None
        if pull is not None:
            value = pull.get("number")
            number = value if isinstance(value, int) and not isinstance(value, bool) else None
            base_ref = base_ref or ((pull.get("base") or {}).get("ref") if isinstance(pull.get("base"), dict) else None)
    return PullRequestRef(owner, name, number, base_ref)


def _event() -> dict:
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    from promotion._internal import safeload

    try:
        data = safeload.read_json(path, limit=safeload.MAX_EVENT_BYTES)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
