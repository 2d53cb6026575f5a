"""Branch protection for a promotion repository, applied through GitHub's REST API.

Usage::

    from promotion.github_setup import Api, desired_protection, plan, apply
    api = Api.from_env()                                  # $GITHUB_API_URL, $GITHUB_TOKEN
    want = desired_protection(project, branch="main")     # from the policies
    changes = plan(api, "acme/models", want, mode="ruleset")
    for line in changes.lines(): print(line)              # what would change
    apply(api, "acme/models", want, changes)

What the repository needs from GitHub follows from its policies: the ``gates`` check
(and CI) must pass, a code owner must approve (CODEOWNERS names who owns environment
and policy files), a new push dismisses earlier approvals, and the number of approvals
is the largest ``gates.approvals.required`` of any policy. Two ways to enforce it:
a repository ruleset (``mode="ruleset"``, lets the rollout bot bypass) or classic
branch protection (``mode="branch-protection"``).

Also here: the drift issue the reconcile workflow keeps open while an environment
drifts (:func:`upsert_issue`, :func:`close_issue`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from promotion.errors import BadInput, GitHubError

RULESET_NAME = "promotion"
DEFAULT_CHECKS = ("gates", "test", "workflows")
MAX_APPROVALS = {"branch-protection": 6, "ruleset": 10}  # GitHub's limits
DRIFT_LABEL = "promotion-drift"


class Api:
    """JSON in and out over :class:`promotion.github.client.GitHubClient`."""

    def __init__(self, base_url: str, token: str | None, timeout: float = 20.0) -> None:
        from promotion.github.client import GitHubClient

        self.client = GitHubClient(token, base_url, timeout)

    @classmethod
    def from_env(cls, token_env: str = "GITHUB_TOKEN") -> "Api":
        token = os.environ.get(token_env) or os.environ.get("GH_TOKEN")
        if not token:
            raise BadInput(f"no GitHub token: set ${token_env} (a token that may administer the repository)")
        return cls(os.environ.get("GITHUB_API_URL") or "https://api.github.com", token)

    def request(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        resp = self.client.request(method, path, json=body, accept_404=missing_ok)
        if resp.status_code == 404 or resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as exc:
            raise GitHubError(f"{method} {path}: the answer is not JSON") from exc


# -- what the repository should enforce ----------------------------------------------

@dataclass(frozen=True)
class Protection:
    """The rules the default branch should carry (normalised, comparable)."""

    branch: str
    required_checks: tuple[str, ...] = DEFAULT_CHECKS
    strict: bool = True
    approvals: int = 1
    code_owner_review: bool = True
    dismiss_stale_reviews: bool = True
    require_last_push_approval: bool = True
    bypass_app_id: int | None = None

    def view(self, mode: str) -> dict[str, Any]:
        """The fields this mode can express, as ``plan`` compares them."""
        out = {
            "required_checks": sorted(self.required_checks),
            "strict": self.strict,
            "required_approving_review_count": self.approvals,
            "require_code_owner_review": self.code_owner_review,
            "dismiss_stale_reviews": self.dismiss_stale_reviews,
            "require_last_push_approval": self.require_last_push_approval,
        }
        if mode == "ruleset":
            out["bypass_app_id"] = self.bypass_app_id
        else:
            out["enforce_admins"] = True
        return out


def desired_protection(project, branch: str, *, checks: tuple[str, ...] = DEFAULT_CHECKS,
                       bypass_app_id: int | None = None) -> Protection:
    """What the policies ask of the branch: the strictest approvals rule of any policy."""
    approvals, codeowners = 0, False
    for name in project.environment_names():
        env = project.environment(name)
        settings = project.policy_for(env).gates.get("approvals")
        if settings is None:
            continue
        approvals = max(approvals, int(settings.get("required", 0)))
        codeowners = codeowners or bool(settings.get("codeowners", False))
    return Protection(branch=branch, required_checks=tuple(checks), approvals=approvals,
                      code_owner_review=codeowners, bypass_app_id=bypass_app_id)


# -- what the repository enforces now ------------------------------------------------

def _current_branch_protection(api: Api, repo: str, branch: str) -> dict[str, Any] | None:
    data = api.request("GET", f"/repos/{repo}/branches/{branch}/protection", missing_ok=True)
    if data is None:
        return None
    checks = data.get("required_status_checks") or {}
    contexts = [c["context"] for c in checks.get("checks") or []] or list(checks.get("contexts") or [])
    reviews = data.get("required_pull_request_reviews") or {}
    return {
        "required_checks": sorted(contexts),
        "strict": bool(checks.get("strict", False)),
        "required_approving_review_count": int(reviews.get("required_approving_review_count", 0)),
        "require_code_owner_review": bool(reviews.get("require_code_owner_reviews", False)),
        "dismiss_stale_reviews": bool(reviews.get("dismiss_stale_reviews", False)),
        "require_last_push_approval": bool(reviews.get("require_last_push_approval", False)),
        "enforce_admins": bool((data.get("enforce_admins") or {}).get("enabled", False)),
    }


def _find_ruleset(api: Api, repo: str) -> dict[str, Any] | None:
    for summary in api.request("GET", f"/repos/{repo}/rulesets") or []:
        if summary.get("name") == RULESET_NAME:
            return api.request("GET", f"/repos/{repo}/rulesets/{summary['id']}")
    return None


def _ruleset_view(ruleset: dict[str, Any]) -> dict[str, Any]:
    rules = {r.get("type"): r.get("parameters") or {} for r in ruleset.get("rules") or []}
    pr = rules.get("pull_request", {})
    checks = rules.get("required_status_checks", {})
    bypass = [a.get("actor_id") for a in ruleset.get("bypass_actors") or [] if a.get("actor_type") == "Integration"]
    return {
        "required_checks": sorted(c["context"] for c in checks.get("required_status_checks") or []),
        "strict": bool(checks.get("strict_required_status_checks_policy", False)),
        "required_approving_review_count": int(pr.get("required_approving_review_count", 0)),
        "require_code_owner_review": bool(pr.get("require_code_owner_review", False)),
        "dismiss_stale_reviews": bool(pr.get("dismiss_stale_reviews_on_push", False)),
        "require_last_push_approval": bool(pr.get("require_last_push_approval", False)),
        "bypass_app_id": bypass[0] if bypass else None,
    }


@dataclass
class Plan:
    """The difference between what the branch enforces and what it should."""

    mode: str
    repo: str
    branch: str
    exists: bool
    current: dict[str, Any] | None
    desired: dict[str, Any]
    ruleset_id: int | None = None
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.exists and not self.changes

    def lines(self) -> list[str]:
        what = f"ruleset {RULESET_NAME!r}" if self.mode == "ruleset" else f"branch protection of {self.branch}"
        if self.up_to_date:
            return [f"{self.repo}: {what} is up to date"]
        head = f"{self.repo}: {what} " + ("would change:" if self.exists else "does not exist; would create:")
        return [head] + [f"  {k}: {_show(old)} -> {_show(new)}" for k, old, new in self.changes]

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "repository": self.repo, "branch": self.branch, "exists": self.exists,
                "up_to_date": self.up_to_date,
                "changes": [{"field": k, "current": old, "desired": new} for k, old, new in self.changes]}


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def plan(api: Api, repo: str, want: Protection, mode: str = "ruleset") -> Plan:
    """Read what the branch enforces now and list every field that differs."""
    if mode not in MAX_APPROVALS:
        raise BadInput(f"unknown mode {mode!r}: use ruleset or branch-protection")
    if want.approvals > MAX_APPROVALS[mode]:
        raise BadInput(f"the policies require {want.approvals} approvals; GitHub's {mode} allows at most {MAX_APPROVALS[mode]}")
    ruleset_id = None
    if mode == "ruleset":
        found = _find_ruleset(api, repo)
        current = _ruleset_view(found) if found else None
        ruleset_id = found.get("id") if found else None
    else:
        current = _current_branch_protection(api, repo, want.branch)
    desired = want.view(mode)
    changes = [(k, (current or {}).get(k), v) for k, v in desired.items() if (current or {}).get(k) != v or current is None]
    return Plan(mode, repo, want.branch, current is not None, current, desired, ruleset_id, changes)


def _ruleset_body(want: Protection) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": RULESET_NAME, "target": "branch", "enforcement": "active",
        "conditions": {"ref_name": {"include": [f"refs/heads/{want.branch}"], "exclude": []}},
        "rules": [
            {"type": "deletion"},
            {"type": "non_fast_forward"},
            {"type": "pull_request", "parameters": {
                "required_approving_review_count": want.approvals,
                "dismiss_stale_reviews_on_push": want.dismiss_stale_reviews,
                "require_code_owner_review": want.code_owner_review,
                "require_last_push_approval": want.require_last_push_approval,
                "required_review_thread_resolution": False}},
            {"type": "required_status_checks", "parameters": {
                "strict_required_status_checks_policy": want.strict,
                "required_status_checks": [{"context": c} for c in sorted(want.required_checks)]}},
        ],
        "bypass_actors": [],
    }
    if want.bypass_app_id is not None:
        # the rollout bot commits records and reverts straight to the branch
        body["bypass_actors"] = [{"actor_id": want.bypass_app_id, "actor_type": "Integration", "bypass_mode": "always"}]
    return body


def _branch_protection_body(want: Protection) -> dict[str, Any]:
    return {
        "required_status_checks": {"strict": want.strict,
                                   "checks": [{"context": c} for c in sorted(want.required_checks)]},
        "enforce_admins": True,
        "required_pull_request_reviews": {
            "dismiss_stale_reviews": want.dismiss_stale_reviews,
            "require_code_owner_reviews": want.code_owner_review,
            "required_approving_review_count": want.approvals,
            "require_last_push_approval": want.require_last_push_approval},
        "restrictions": None,
        "allow_force_pushes": False,
        "allow_deletions": False,
    }


def apply(api: Api, repo: str, want: Protection, the_plan: Plan) -> None:
    """Write ``want`` to GitHub (nothing when ``the_plan`` is up to date)."""
    if the_plan.up_to_date:
        return
    if the_plan.mode == "ruleset":
        body = _ruleset_body(want)
        if the_plan.ruleset_id is not None:
            api.request("PUT", f"/repos/{repo}/rulesets/{the_plan.ruleset_id}", body)
        else:
            api.request("POST", f"/repos/{repo}/rulesets", body)
    else:
        api.request("PUT", f"/repos/{repo}/branches/{want.branch}/protection", _branch_protection_body(want))


def default_branch(api: Api, repo: str) -> str:
    data = api.request("GET", f"/repos/{repo}")
    branch = (data or {}).get("default_branch")
    if not branch:
        raise GitHubError(f"GET /repos/{repo}: no default_branch in the answer")
    return branch


# -- the drift issue -------------------------------------------------------------------

def _drift_issue(api: Api, repo: str, environment: str) -> dict[str, Any] | None:
    title = drift_title(environment)
    issues = api.request("GET", f"/repos/{repo}/issues?state=open&labels={DRIFT_LABEL}&per_page=100") or []
    for issue in issues:
        if issue.get("title") == title and "pull_request" not in issue:
            return issue
    return None


def drift_title(environment: str) -> str:
    return f"Drift in {environment}: live state differs from git"


def upsert_issue(api: Api, repo: str, environment: str, body: str) -> dict[str, Any]:
    """Open the environment's drift issue, or refresh its body if it is open already."""
    issue = _drift_issue(api, repo, environment)
    if issue is None:
        return api.request("POST", f"/repos/{repo}/issues",
                           {"title": drift_title(environment), "body": body, "labels": [DRIFT_LABEL]})
    return api.request("PATCH", f"/repos/{repo}/issues/{issue['number']}", {"body": body})


def close_issue(api: Api, repo: str, environment: str, comment: str) -> dict[str, Any] | None:
    """Close the environment's open drift issue (if any) with ``comment``."""
    issue = _drift_issue(api, repo, environment)
    if issue is None:
        return None
    api.request("POST", f"/repos/{repo}/issues/{issue['number']}/comments", {"body": comment})
    return api.request("PATCH", f"/repos/{repo}/issues/{issue['number']}", {"state": "closed", "state_reason": "completed"})


__all__ = ["Api", "Protection", "Plan", "desired_protection", "plan", "apply", "default_branch",
           "upsert_issue", "close_issue", "drift_title"]
