"""Who approved a proposal: GitHub pull request reviews, or a local file for laptops.

GitHub rules (:class:`GitHubApprovals`), each one tested:

- only reviews on the pull request's current head commit count;
- each reviewer's latest review state wins: a later CHANGES_REQUESTED or DISMISSED
  cancels an APPROVED, a COMMENTED review changes nothing;
- the pull request's author never counts, nor bots (``type: Bot`` or a ``[bot]`` login);
- a reviewer counts only if eligible: a member of one of the policy's teams, or else
  (``codeowners: true``) an owner of the environment file in CODEOWNERS as it is on the
  base branch (a pull request cannot name its own approvers), or else anyone; and in every
  case only with write access to the repository (non-members never count);
- one person counts once, however many times they approved.

Outside GitHub, :class:`LocalApprovals` reads ``<state>/approvals/<env>-v<version>.json``
written by ``promotion approve``. It says plainly that it is not for production.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from promotion._internal.atomic import atomic_write
from promotion.errors import GitHubError
from promotion.github import codeowners
from promotion.github.client import GitHubClient, NotFound
from promotion.github.context import PullRequestRef

NOT_FOR_PRODUCTION = "local approvals: NOT FOR PRODUCTION"
WRITE = {"admin", "maintain", "write"}


@dataclass(frozen=True)
class Approvals:
    """Who counted, who did not and why, and against what."""

    approvers: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]
    source: str
    eligible: str
    head_sha: str | None = None
    warning: str | None = None
    records: tuple[dict, ...] = field(default=())

    def message(self, required: int) -> str:
        parts = []
        if self.warning:
            parts.append(self.warning)
        parts.append(f"{len(self.approvers)} of {required} approval(s)"
                     + (f": {', '.join(self.approvers)}" if self.approvers else ""))
        if self.ignored:
            parts.append("not counted: " + "; ".join(f"{who} ({why})" for who, why in self.ignored))
        parts.append(f"eligible: {self.eligible}; source: {self.source}")
        return ". ".join(parts)


class ApprovalsSource(Protocol):
    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool) -> Approvals:
        ...


def _is_bot(user: dict) -> bool:
    return user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]")


def latest_states(reviews: list[dict]) -> dict[str, dict]:
    """Each reviewer's deciding review: the latest that is not COMMENTED or PENDING."""
    def order(r):
        return (r.get("submitted_at") or "", r.get("id") or 0)

    latest: dict[str, dict] = {}
    for r in sorted((r for r in reviews if isinstance(r, dict)), key=order):
        user = r.get("user")
        state = r.get("state")
        if not isinstance(user, dict) or not isinstance(user.get("login"), str):
            continue  # a deleted account ("ghost") has no user: it cannot count
        if state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            latest[user["login"].lower()] = r
    return latest


class GitHubApprovals:
    """Approvals from the reviews of one pull request."""

    def __init__(self, client: GitHubClient, pr: PullRequestRef) -> None:
        self.client, self.pr = client, pr

    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool) -> Approvals:
        if self.pr.number is None:
            raise GitHubError("this run is not about a pull request (no pull_request in the event payload; pass --pr)")
        base = f"/repos/{self.pr.owner}/{self.pr.repo}"
        pull = self.client.get(f"{base}/pulls/{self.pr.number}")
        try:
            head_sha = pull["head"]["sha"]
            author = pull["user"]["login"]
            base_ref = pull["base"]["ref"]
        except (TypeError, KeyError):
            raise GitHubError(f"GitHub API GET {base}/pulls/{self.pr.number}: unexpected payload (no head.sha, user.login or base.ref)") from None
        reviews = self.client.paginate(f"{base}/pulls/{self.pr.number}/reviews")

        ignored: list[tuple[str, str]] = []
        candidates: list[str] = []
        for login_l, review in latest_states(reviews).items():
            login = review["user"]["login"]
            approved_before = any(r.get("state") == "APPROVED" and isinstance(r.get("user"), dict)
                                  and str(r["user"].get("login", "")).lower() == login_l for r in reviews)
            if review["state"] != "APPROVED":
                if approved_before:
                    ignored.append((login, f"latest review is {review['state']}"))
                continue
            if login_l == str(author).lower():
                ignored.append((login, "author of the pull request"))
            elif _is_bot(review["user"]):
                ignored.append((login, "bot"))
            elif review.get("commit_id") != head_sha:
                ignored.append((login, f"approved {str(review.get('commit_id'))[:7]}, not the head {head_sha[:7]}"))
            else:
                candidates.append(login)

        eligible_desc, is_eligible = self._eligibility(base, base_ref, env_file, teams, use_codeowners)
        approvers = []
        for login in candidates:
            reason = is_eligible(login)
            if reason is None:
                reason = self._permission_problem(base, login)
            if reason is None:
                approvers.append(login)
            else:
                ignored.append((login, reason))
        return Approvals(tuple(approvers), tuple(ignored),
                         f"GitHub {self.pr.full_name}#{self.pr.number} at {head_sha[:7]}", eligible_desc, head_sha,
                         records=tuple({"login": a, "commit": head_sha} for a in approvers))

    # -- who may approve ---------------------------------------------------------------

    def _eligibility(self, base: str, base_ref: str, env_file: str, teams: list[str], use_codeowners: bool):
        if teams:
            names = [t if "/" in t else f"{self.pr.owner}/{t}" for t in teams]
            return (f"members of {', '.join('@' + n for n in names)}",
                    lambda login: None if any(self._in_team(n, login) for n in names) else "not in a required team")
        if use_codeowners:
            text, where = self._codeowners(base, base_ref)
            owners = codeowners.owners(text, env_file)
            if not owners:
                raise GitHubError(f"{where} on {base_ref} names no owner for {env_file}; nobody can approve")
            users = {o.lower() for o in owners if "/" not in o}
            team_owners = [o for o in owners if "/" in o]

            def check(login: str) -> str | None:
                if login.lower() in users or any(self._in_team(t, login) for t in team_owners):
                    return None
                return f"not a code owner of {env_file}"
            return f"code owners of {env_file} ({', '.join('@' + o for o in owners)})", check
        return "anyone with write access", lambda login: None

    def _codeowners(self, base: str, ref: str) -> tuple[str, str]:
        for location in codeowners.LOCATIONS:
            resp = self.client.request("GET", f"{base}/contents/{location}", params={"ref": ref}, accept_404=True)
            if resp.status_code == 404:
                continue
            try:
                body = resp.json()
                return base64.b64decode(body["content"]).decode("utf-8"), location
            except (ValueError, KeyError, TypeError):
                raise GitHubError(f"GitHub API GET {base}/contents/{location}: unexpected payload") from None
        raise GitHubError(f"no CODEOWNERS file on {ref}; the policy requires code owners to approve")

    def _in_team(self, team: str, login: str) -> bool:
        org, slug = team.split("/", 1)
        resp = self.client.request("GET", f"/orgs/{org}/teams/{slug}/memberships/{login}", accept_404=True)
        if resp.status_code == 404:
            return False
        try:
            return resp.json().get("state") == "active"
        except (ValueError, AttributeError):
            raise GitHubError(f"GitHub API GET /orgs/{org}/teams/{slug}/memberships/{login}: unexpected payload") from None

    def _permission_problem(self, base: str, login: str) -> str | None:
        try:
            body = self.client.get(f"{base}/collaborators/{login}/permission")
        except NotFound:
            return "not a collaborator"
        permission = body.get("permission") if isinstance(body, dict) else None
        if permission not in WRITE:
            return f"permission {permission!r}, write needed"
        return None


# -- local ------------------------------------------------------------------------------

def local_file(state: Path, env_name: str, version: int) -> Path:
    return Path(state) / "approvals" / f"{env_name}-v{version}.json"


class LocalApprovals:
    """Approvals recorded on this machine by ``promotion approve`` (not for production)."""

    def __init__(self, state: Path, root: Path | None = None) -> None:
        self.state, self.root = Path(state), root

    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool) -> Approvals:
        path = local_file(self.state, env_name, version)
        entries: list[dict[str, Any]] = []
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                entries = [e for e in data.get("approvals", []) if isinstance(e, dict)]
            except (OSError, ValueError, AttributeError):
                raise GitHubError(f"{path}: unreadable local approvals file") from None
        author = self._author(env_file)
        approvers: list[str] = []
        ignored: list[tuple[str, str]] = []
        for e in entries:
            who = str(e.get("by", "")).strip()
            if not who or who.lower() in (a.lower() for a in approvers):
                continue
            if e.get("digest") != digest:
                ignored.append((who, "approved a different artifact digest"))
            elif author and who.lower() == author.lower():
                ignored.append((who, f"author of the last change to {env_file}"))
            else:
                approvers.append(who)
        return Approvals(tuple(approvers), tuple(ignored), f"{path}", "anyone (local approvals check no teams or CODEOWNERS)",
                         warning=NOT_FOR_PRODUCTION,
                         records=tuple({"login": a, "commit": None} for a in approvers))

    def _author(self, env_file: str) -> str | None:
        if not self.root:
            return None
        from promotion._internal.git import Git
        from promotion.errors import GitError

        try:
            return Git(self.root)("log", "-1", "--format=%an", "--", env_file).strip() or None
        except GitError:
            return None


def record_local(state: Path, env_name: str, version: int, digest: str, by: str) -> tuple[Path, int]:
    """Add ``by``'s approval of (version, digest); returns the file and the approver count."""
    from datetime import datetime, timezone

    path = local_file(state, env_name, version)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"environment": env_name, "version": version, "note": NOT_FOR_PRODUCTION, "approvals": []}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            pass
    approvals = [e for e in data.get("approvals", []) if isinstance(e, dict)
                 and not (str(e.get("by", "")).lower() == by.lower() and e.get("digest") == digest)]
    approvals.append({"by": by, "digest": digest, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    data["approvals"] = approvals
    atomic_write(path, json.dumps(data, indent=2) + "\n")
    return path, len({e["by"].lower() for e in approvals if e.get("digest") == digest})


def source_from_env(*, root: Path, state: Path, repo: str | None = None, pr: int | None = None,
                    local: bool = False):
    """The approvals source for this run: GitHub in Actions or with ``--pr``; else local."""
    from promotion.github import context

    in_actions = os.environ.get("GITHUB_ACTIONS") == "true"
    if local and not in_actions:
        return LocalApprovals(state, root)
    if in_actions or pr is not None:
        ref = context.from_env(repo, pr)
        if ref is None:
            return Unavailable("no repository: set GITHUB_REPOSITORY or pass --repo OWNER/NAME")
        return GitHubApprovals(GitHubClient.from_env(), ref)
    return LocalApprovals(state, root)


def source_for_rollout(*, root: Path, state: Path):
    """Approvals for a rollout after merge: the reviews of the pull request that merged
    ``$GITHUB_SHA`` (so an admin merge that skipped review is caught); local elsewhere."""
    from promotion.github import context

    if os.environ.get("GITHUB_ACTIONS") != "true":
        return LocalApprovals(state, root)
    ref = context.from_env()
    if ref is None:
        return Unavailable("no repository: GITHUB_REPOSITORY is not set")
    if ref.number is not None:
        return GitHubApprovals(GitHubClient.from_env(), ref)
    sha = os.environ.get("GITHUB_SHA", "")
    if not sha:
        return Unavailable("no GITHUB_SHA: cannot find the pull request that merged this change")
    client = GitHubClient.from_env()
    try:
        pulls = client.get(f"/repos/{ref.full_name}/commits/{sha}/pulls")
        merged = [p for p in pulls if isinstance(p, dict) and p.get("merge_commit_sha") == sha]
    except GitHubError as exc:
        return Unavailable(f"cannot find the pull request that merged {sha[:7]}: {exc.message}")
    if not merged:
        return Unavailable(f"commit {sha[:7]} did not come from a merged pull request: no reviews to count")
    pull = merged[0]
    return GitHubApprovals(client, context.PullRequestRef(ref.owner, ref.repo, int(pull["number"]),
                                                         (pull.get("base") or {}).get("ref")))


class Unavailable:
    """A source that cannot say anything: the approvals gate blocks with its reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def collect(self, **_: Any) -> Approvals:
        raise GitHubError(self.reason)
