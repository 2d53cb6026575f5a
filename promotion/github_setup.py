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

Required checks are bound to the app that must report them (the GitHub Actions app,
:data:`GITHUB_ACTIONS_APP_ID`, for the workflows' checks): unbound, any integration or
anyone with write access could post a status named ``gates`` and satisfy it.

The ruleset compared is the repository's own ruleset named ``promotion`` (listed with
``includes_parents=false``; an organisation's ruleset or one of another name is not
ours and is left alone), field by field: enforcement (``active``), target (``branch``),
the ``ref_name`` conditions, every rule and every parameter (a parameter GitHub fills in
with its default is not a difference), and the bypass actors. Any difference is drift:
``--dry-run`` lists it, otherwise the ruleset is replaced (PUT).

Also here: the drift issue the reconcile workflow keeps open while an environment
drifts (:func:`upsert_issue`, :func:`close_issue`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from promotion.errors import BadInput, GitHubError

RULESET_NAME = "promotion"
GITHUB_ACTIONS_APP_ID = 15368  # GET /apps/github-actions: the app behind every workflow check run
DEFAULT_CHECKS = ("gates", "test", "workflows")
MAX_APPROVALS = {"branch-protection": 6, "ruleset": 10}  # GitHub's limits
DRIFT_LABEL = "promotion-drift"
# parameters GitHub fills in when a ruleset is read back; equal to these they are no drift
GITHUB_DEFAULTS = {
    "rules.pull_request.allowed_merge_methods": ["merge", "rebase", "squash"],
    "rules.pull_request.required_reviewers": [],
    "rules.pull_request.automatic_copilot_code_review_enabled": False,
    "rules.required_status_checks.do_not_enforce_on_create": False,
}
_CHECK = re.compile(r"^(?P<context>[^@\s][^@]{0,199}?)(?:@(?P<app>\d{1,12}|any))?$")


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

    def paginate(self, path: str, params: dict | None = None) -> list:
        return self.client.paginate(path, params)


# -- what the repository should enforce ----------------------------------------------

def parse_check(text: str) -> tuple[str, int | None]:
    """``NAME`` (reported by GitHub Actions), ``NAME@APP_ID`` or ``NAME@any`` (any app)."""
    m = _CHECK.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise BadInput(f"--check {text!r}: use NAME, NAME@APP_ID or NAME@any")
    app = m.group("app")
    return m.group("context").strip(), (GITHUB_ACTIONS_APP_ID if app is None else None if app == "any" else int(app))


def _check_label(context: str, app: int | None) -> str:
    return f"{context}@{app if app is not None else 'any'}"


@dataclass(frozen=True)
class Protection:
    """The rules the default branch should carry (normalised, comparable)."""

    branch: str
    required_checks: tuple[tuple[str, int | None], ...] = tuple((c, GITHUB_ACTIONS_APP_ID) for c in DEFAULT_CHECKS)
    strict: bool = True
    approvals: int = 1
    code_owner_review: bool = True
    dismiss_stale_reviews: bool = True
    require_last_push_approval: bool = True
    bypass_app_id: int | None = None

    def view(self, mode: str) -> dict[str, Any]:
        """The fields this mode can express, as ``plan`` compares them."""
        if mode == "ruleset":
            return _flatten_ruleset(_ruleset_body(self))
        return {
            "required_checks": sorted(_check_label(c, a) for c, a in self.required_checks),
            "strict": self.strict,
            "required_approving_review_count": self.approvals,
            "require_code_owner_review": self.code_owner_review,
            "dismiss_stale_reviews": self.dismiss_stale_reviews,
            "require_last_push_approval": self.require_last_push_approval,
            "enforce_admins": True,
        }


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
    parsed = tuple(dict.fromkeys(parse_check(c) for c in checks))
    return Protection(branch=branch, required_checks=parsed, approvals=approvals,
                      code_owner_review=codeowners, bypass_app_id=bypass_app_id)


# -- what the repository enforces now ------------------------------------------------

def _current_branch_protection(api: Api, repo: str, branch: str) -> dict[str, Any] | None:
    data = api.request("GET", f"/repos/{repo}/branches/{branch}/protection", missing_ok=True)
    if data is None:
        return None
    checks = data.get("required_status_checks") or {}
    listed = checks.get("checks")
    if listed is None:
        listed = [{"context": c, "app_id": None} for c in checks.get("contexts") or []]
    reviews = data.get("required_pull_request_reviews") or {}

    def app(check: dict) -> int | None:
        value = check.get("app_id")
        return value if isinstance(value, int) and value > 0 else None  # -1 or null: any app

    return {
        "required_checks": sorted(_check_label(c.get("context"), app(c)) for c in listed if isinstance(c, dict)),
        "strict": bool(checks.get("strict", False)),
        "required_approving_review_count": int(reviews.get("required_approving_review_count", 0)),
        "require_code_owner_review": bool(reviews.get("require_code_owner_reviews", False)),
        "dismiss_stale_reviews": bool(reviews.get("dismiss_stale_reviews", False)),
        "require_last_push_approval": bool(reviews.get("require_last_push_approval", False)),
        "enforce_admins": bool((data.get("enforce_admins") or {}).get("enabled", False)),
    }


def _find_ruleset(api: Api, repo: str) -> dict[str, Any] | None:
    """This repository's own ruleset named ``promotion`` (not an organisation's)."""
    for summary in api.paginate(f"/repos/{repo}/rulesets", {"includes_parents": "false"}):
        if not isinstance(summary, dict) or summary.get("name") != RULESET_NAME:
            continue
        if summary.get("source_type", "Repository") != "Repository":
            continue  # an organisation's ruleset that applies here is not ours to edit
        return api.request("GET", f"/repos/{repo}/rulesets/{summary['id']}")
    return None


def _flatten_ruleset(ruleset: dict[str, Any]) -> dict[str, Any]:
    """A ruleset as ``path -> value``, lists in a canonical order, so two compare field by field."""
    out: dict[str, Any] = {"enforcement": ruleset.get("enforcement"), "target": ruleset.get("target")}
    conditions = ruleset.get("conditions") or {}
    ref_name = conditions.get("ref_name") or {}
    out["conditions.ref_name.include"] = sorted(map(str, ref_name.get("include") or []))
    out["conditions.ref_name.exclude"] = sorted(map(str, ref_name.get("exclude") or []))
    for key, value in conditions.items():
        if key != "ref_name":
            out[f"conditions.{key}"] = value
    for rule in ruleset.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        kind = str(rule.get("type"))
        out[f"rules.{kind}"] = "present"
        for param, value in (rule.get("parameters") or {}).items():
            if kind == "required_status_checks" and param == "required_status_checks":
                value = sorted(_check_label(c.get("context"), c.get("integration_id"))
                               for c in value or [] if isinstance(c, dict))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = sorted(value)
            out[f"rules.{kind}.{param}"] = value
    if "bypass_actors" in ruleset:
        out["bypass_actors"] = sorted(f"{a.get('actor_type')}:{a.get('actor_id')}:{a.get('bypass_mode')}"
                                      for a in ruleset.get("bypass_actors") or [] if isinstance(a, dict))
    else:  # GitHub shows bypass actors only to a token that may edit the ruleset
        out["bypass_actors"] = "(not visible to this token)"
    return out


def _drift(current: dict[str, Any], desired: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    changes = []
    for key in sorted(set(current) | set(desired), key=lambda k: (k not in desired, k)):
        old, new = current.get(key), desired.get(key)
        if key not in desired:
            rule = ".".join(key.split(".")[:2])
            if rule in desired and (key in GITHUB_DEFAULTS and _same(old, GITHUB_DEFAULTS[key])
                                    or key not in GITHUB_DEFAULTS and old in (None, False, 0, [], {}, "")):
                continue  # a parameter GitHub reads back at its default
        if not _same(old, new):
            changes.append((key, old, new))
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list) and all(isinstance(x, str) for x in a + b):
        return sorted(a) == sorted(b)
    return a == b


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
        head = f"{self.repo}: {what} " + ("has drifted; would change:" if self.exists else "does not exist; would create:")
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
        current = _flatten_ruleset(found) if found else None
        ruleset_id = found.get("id") if found else None
    else:
        current = _current_branch_protection(api, repo, want.branch)
    desired = want.view(mode)
    changes = _drift(current, desired) if current is not None else [(k, None, v) for k, v in desired.items()]
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
                "required_status_checks": [{"context": c, **({"integration_id": a} if a is not None else {})}
                                           for c, a in sorted(want.required_checks, key=lambda x: x[0])]}},
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
                                   "checks": [{"context": c, "app_id": a if a is not None else -1}
                                              for c, a in sorted(want.required_checks, key=lambda x: x[0])]},
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
    for issue in api.paginate(f"/repos/{repo}/issues", {"state": "open", "labels": DRIFT_LABEL}):
        # GitHub lists pull requests among issues; and an issue a person opened under the
        # same title is theirs, not the bot's to rewrite
        if (isinstance(issue, dict) and issue.get("title") == title and "pull_request" not in issue
                and (issue.get("user") or {}).get("type") == "Bot"):
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


__all__ = ["Api", "Protection", "Plan", "desired_protection", "parse_check", "plan", "apply", "default_branch",
           "upsert_issue", "close_issue", "drift_title"]
