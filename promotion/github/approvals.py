"""Who approved a proposal: GitHub pull request reviews, or a local file for laptops.

GitHub rules (:class:`GitHubApprovals`), each one tested:

- only reviews on the pull request's current head commit count;
- each reviewer's latest review state wins: a later CHANGES_REQUESTED or DISMISSED
  cancels an APPROVED, a COMMENTED review changes nothing;
- the pull request's author never counts, nor anyone who authored or committed one of
  its commits (``GET /pulls/{n}/commits``: they pushed to its head), nor bots
  (``type: Bot`` or a ``[bot]`` login);
- a reviewer counts only if eligible: a member of one of the policy's teams, or else
  (``codeowners: true``) an owner of the environment file in CODEOWNERS as it is on the
  base branch (a pull request cannot name its own approvers), or else anyone; and in every
  case only with write access to the repository (non-members never count);
- an eligible reviewer whose latest review is CHANGES_REQUESTED blocks, until the review
  is dismissed or the same reviewer approves (``changes_requested_blocks``, on by default);
- one person counts once, however many times they approved.

Team membership is read with ``$PROMOTION_GITHUB_APP_TOKEN`` when set: ``GITHUB_TOKEN``
cannot read organisation teams (GitHub answers 404, which also means "not a member").
So a 404 on a membership is checked against the team itself: a team the token cannot see
blocks with that reason (:class:`TeamNotVisible`) instead of blaming the reviewers.

Outside GitHub, :class:`LocalApprovals` reads ``<state>/approvals/<env>-v<version>.json``
written by ``promotion approve``. It says plainly that it is not for production.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from promotion._internal.atomic import atomic_write
from promotion.config import file_key
from promotion.errors import GitHubError
from promotion.github import codeowners
from promotion.github.client import APP_TOKEN_ENV, Forbidden, GitHubClient, NotFound
from promotion.github.context import PullRequestRef

NOT_FOR_PRODUCTION = "local approvals: NOT FOR PRODUCTION"
WRITE = {"admin", "maintain", "write"}
MAX_PR_COMMITS = 250     # GitHub lists at most 250 commits of a pull request
WEB_FLOW = "web-flow"    # GitHub's committer of commits made in its web UI: not a person
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,99})$")


class TeamNotVisible(GitHubError):
    """The token cannot see a team, so nobody's membership of it can be told."""


@dataclass(frozen=True)
class Approvals:
    """Who counted, who did not and why, who blocks, and against what."""

    approvers: tuple[str, ...]
    ignored: tuple[tuple[str, str], ...]
    source: str
    eligible: str
    head_sha: str | None = None
    warning: str | None = None
    records: tuple[dict, ...] = field(default=())
    blocking: tuple[tuple[str, str], ...] = field(default=())

    def satisfied(self, required: int) -> bool:
        """Enough approvers and nobody eligible blocking."""
        return len(self.approvers) >= required and not self.blocking

    def message(self, required: int) -> str:
        parts = []
        if self.warning:
            parts.append(self.warning)
        parts.append(f"{len(self.approvers)} of {required} approval(s)"
                     + (f": {', '.join(self.approvers)}" if self.approvers else ""))
        if self.blocking:
            parts.append("blocked by: " + "; ".join(f"{who} ({why})" for who, why in self.blocking))
        if self.ignored:
            parts.append("not counted: " + "; ".join(f"{who} ({why})" for who, why in self.ignored))
        parts.append(f"eligible: {self.eligible}; source: {self.source}")
        return ". ".join(parts)


class ApprovalsSource(Protocol):
    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool, changes_requested_blocks: bool = True) -> Approvals:
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


def pushers(commits: list[dict]) -> dict[str, tuple[str, str]]:
    """login (lower case) -> (login, first sha) of everyone who authored or committed one of
    ``commits`` (``GET /pulls/{n}/commits`` items), GitHub's web-flow committer aside."""
    found: dict[str, tuple[str, str]] = {}
    for c in commits:
        if not isinstance(c, dict):
            continue
        for role in ("author", "committer"):
            u = c.get(role)
            login = u.get("login") if isinstance(u, dict) else None
            if isinstance(login, str) and login and login.lower() != WEB_FLOW:
                found.setdefault(login.lower(), (login, str(c.get("sha") or "")))
    return found


class GitHubApprovals:
    """Approvals from the reviews of one pull request.

    ``teams_client`` reads team membership (an App installation token with organisation
    *Members: read*); without it the main client is used, and on GitHub that token's
    404s block as "the token cannot see team ...".
    """

    def __init__(self, client: GitHubClient, pr: PullRequestRef, teams_client: GitHubClient | None = None) -> None:
        self.client, self.pr = client, pr
        self.teams_client = teams_client or client
        self._visible: dict[str, bool] = {}

    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool, changes_requested_blocks: bool = True) -> Approvals:
        if self.pr.number is None:
            raise GitHubError("this run is not about a pull request (no pull_request in the event payload; pass --pr)")
        base = f"/repos/{self.pr.owner}/{self.pr.repo}"
        number = self.pr.number
        pull = self.client.get(f"{base}/pulls/{number}")
        try:
            head_sha = pull["head"]["sha"]
            author = pull["user"]["login"]
            base_ref = pull["base"]["ref"]
        except (TypeError, KeyError):
            raise GitHubError(f"GitHub API GET {base}/pulls/{number}: unexpected payload (no head.sha, user.login or base.ref)") from None
        pushed = self._pushers(base, number, pull, head_sha)
        reviews = self.client.paginate(f"{base}/pulls/{number}/reviews")

        ignored: list[tuple[str, str]] = []
        candidates: list[str] = []
        requesters: list[tuple[str, dict]] = []
        for login_l, review in latest_states(reviews).items():
            login = review["user"]["login"]
            state = review["state"]
            excluded = self._excluded(login_l, review["user"], author, pushed)
            if state == "APPROVED":
                if excluded:
                    ignored.append((login, excluded))
                elif review.get("commit_id") != head_sha:
                    ignored.append((login, f"approved {str(review.get('commit_id'))[:7]}, not the head {head_sha[:7]}"))
                else:
                    candidates.append(login)
                continue
            approved_before = any(r.get("state") == "APPROVED" and isinstance(r.get("user"), dict)
                                  and str(r["user"].get("login", "")).lower() == login_l for r in reviews)
            if approved_before:
                ignored.append((login, f"latest review is {state}"))
            if state == "CHANGES_REQUESTED" and changes_requested_blocks and not excluded:
                requesters.append((login, review))

        eligible_desc, is_eligible = self._eligibility(base, base_ref, env_file, teams, use_codeowners)
        approvers = []
        for login in candidates:
            reason = is_eligible(login) or self._permission_problem(base, login)
            if reason is None:
                approvers.append(login)
            else:
                ignored.append((login, reason))
        blocking = []
        for login, review in requesters:
            reason = is_eligible(login) or self._permission_problem(base, login)
            commit = str(review.get("commit_id") or "")[:7]
            if reason is None:
                blocking.append((login, f"requested changes at {commit}; blocks until that review is dismissed "
                                        f"or {login} approves"))
            else:
                ignored.append((login, f"requested changes, which does not block: {reason}"))
        return Approvals(tuple(approvers), tuple(ignored),
                         f"GitHub {self.pr.full_name}#{number} at {head_sha[:7]}", eligible_desc, head_sha,
                         records=tuple({"login": a, "commit": head_sha} for a in approvers),
                         blocking=tuple(blocking))

    @staticmethod
    def _excluded(login_l: str, user: dict, author: str, pushed: dict[str, tuple[str, str]]) -> str | None:
        if login_l == str(author).lower():
            return "author of the pull request"
        if _is_bot(user):
            return "bot"
        if login_l in pushed:
            return f"pushed commits to the pull request ({pushed[login_l][1][:7]})"
        return None

    def _pushers(self, base: str, number: int, pull: dict, head_sha: str) -> dict[str, tuple[str, str]]:
        count = pull.get("commits")
        if isinstance(count, int) and count > MAX_PR_COMMITS:
            raise GitHubError(f"pull request #{number} has {count} commits; GitHub lists only {MAX_PR_COMMITS}, "
                              "so who pushed to it cannot be told: split it")
        commits = self.client.paginate(f"{base}/pulls/{number}/commits")
        # read after the pull request, the list holds every commit up to its head, unless a
        # force-push replaced the head in between: then who pushed what cannot be told
        if head_sha not in {c.get("sha") for c in commits if isinstance(c, dict)}:
            raise GitHubError(f"pull request #{number} moved while it was read (its head {head_sha[:7]} is not among "
                              "its commits); re-run the check")
        return pushers(commits)

    # -- who may approve ---------------------------------------------------------------

    def _eligibility(self, base: str, base_ref: str, env_file: str, teams: list[str], use_codeowners: bool):
        if teams:
            names = [t if "/" in t else f"{self.pr.owner}/{t}" for t in teams]
            return (f"members of {', '.join('@' + n for n in names)}", lambda login: self._in_any(names, login))
        if use_codeowners:
            text, where = self._codeowners(base, base_ref)
            owners = codeowners.owners(text, env_file)
            if not owners:
                raise GitHubError(f"{where} on {base_ref} names no owner for {env_file}; nobody can approve")
            users = {o.lower() for o in owners if "/" not in o}
            team_owners = [o for o in owners if "/" in o]

            def check(login: str) -> str | None:
                if login.lower() in users:
                    return None
                if team_owners and self._in_any(team_owners, login) is None:
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

    def _in_any(self, teams: list[str], login: str) -> str | None:
        """None when ``login`` is an active member of one of ``teams``; else why not."""
        reasons = []
        for team in teams:
            reason = self._in_team(team, login)
            if reason is None:
                return None
            reasons.append(reason)
        return reasons[0] if len(reasons) == 1 else "not in a required team (" + "; ".join(reasons) + ")"

    def _in_team(self, team: str, login: str) -> str | None:
        org, _, slug = team.partition("/")
        if not (_NAME.match(org) and _NAME.match(slug)):
            raise GitHubError(f"team {team!r} is not an ORG/TEAM-SLUG name")
        path = f"/orgs/{org}/teams/{slug}/memberships/{quote(login, safe='')}"
        try:
            resp = self.teams_client.request("GET", path, accept_404=True)
        except Forbidden as exc:
            raise self._cannot_see(team, exc.message) from None
        if resp.status_code == 404:
            self._require_visible(team)  # a 404 from a token that cannot see the team says nothing
            return f"not a member of @{team}"
        try:
            state = resp.json().get("state")
        except (ValueError, AttributeError):
            raise GitHubError(f"GitHub API GET {path}: unexpected payload") from None
        if state == "active":
            return None
        if state == "pending":
            return f"invitation to @{team} still pending"
        return f"membership of @{team} is {state!r}"

    def _require_visible(self, team: str) -> None:
        if team not in self._visible:
            org, _, slug = team.partition("/")
            try:
                resp = self.teams_client.request("GET", f"/orgs/{org}/teams/{slug}", accept_404=True)
            except Forbidden as exc:
                raise self._cannot_see(team, exc.message) from None
            self._visible[team] = resp.status_code != 404
        if not self._visible[team]:
            raise self._cannot_see(team, f"GitHub API GET /orgs/{team.replace('/', '/teams/', 1)}: 404 not found")

    def _cannot_see(self, team: str, detail: str) -> TeamNotVisible:
        org = team.split("/", 1)[0]
        if self.teams_client.token_name == APP_TOKEN_ENV:
            fix = (f"check the team name, and that the GitHub App behind ${APP_TOKEN_ENV} is installed on {org} "
                   "with organisation permission Members: read")
        else:
            fix = (f"${self.teams_client.token_name} cannot read organisation teams; set ${APP_TOKEN_ENV} to a GitHub "
                   "App installation token with organisation permission Members: read (gates.yml creates one "
                   "when the variable PROMOTION_APP_ID is set)")
        return TeamNotVisible(f"the token cannot see team @{team} ({detail}), so nobody's membership can be "
                              f"checked: {fix}")

    def _permission_problem(self, base: str, login: str) -> str | None:
        try:
            body = self.client.get(f"{base}/collaborators/{quote(login, safe='')}/permission")
        except NotFound:
            return "not a collaborator"
        # "permission" is the legacy base role: maintain reads as write, triage as read
        permission = body.get("permission") if isinstance(body, dict) else None
        if permission not in WRITE:
            return f"permission {permission!r}, write needed"
        return None


# -- local ------------------------------------------------------------------------------

def local_file(state: Path, env_name: str, version: int) -> Path:
    return Path(state) / "approvals" / f"{file_key(env_name)}-v{version}.json"


class LocalApprovals:
    """Approvals recorded on this machine by ``promotion approve`` (not for production)."""

    def __init__(self, state: Path, root: Path | None = None) -> None:
        self.state, self.root = Path(state), root

    def collect(self, *, env_file: str, env_name: str, version: int, digest: str,
                teams: list[str], use_codeowners: bool, changes_requested_blocks: bool = True) -> Approvals:
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
        return GitHubApprovals(GitHubClient.from_env(), ref, GitHubClient.app_from_env())
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
        return GitHubApprovals(GitHubClient.from_env(), ref, GitHubClient.app_from_env())
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
                                                         (pull.get("base") or {}).get("ref")),
                           GitHubClient.app_from_env())


class Unavailable:
    """A source that cannot say anything: the approvals gate blocks with its reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def collect(self, **_: Any) -> Approvals:
        raise GitHubError(self.reason)
