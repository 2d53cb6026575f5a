"""``promotion github ...``: the repository's side of GitHub.

- ``setup [--dry-run]``: apply branch protection or a ruleset from the policies
  (required checks, code-owner review, stale approvals dismissed, approvals count);
  always prints the difference first, ``--dry-run`` stops there.
- ``changed``: inside a workflow, the environments the triggering pull request or push
  changes, as JSON and as the step outputs ``environments`` (names) and ``targets`` (one
  matrix entry per environment file: ``{target: prod/<model>, environment: prod}``). For a push: an environment
  file, or the policy it uses. For a pull request: the environments whose proposed model
  (name, version, digest) it changes; anything else it changes is a governance change
  (:mod:`promotion.governance`), listed, with the step output ``governance=true``.
- ``push``: push the commits a rollout or rollback made (records, reverts) to the
  branch that triggered the workflow, with ``$PROMOTION_BOT_TOKEN`` passed to git in the
  environment (never persisted, never on a command line); rebases onto newer commits.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from promotion._internal import safeload
from promotion.commands._common import append_step_summary, emit_json, project
from promotion.commands.reconcile import matrix_targets
from promotion.errors import GitError, UsageError

HELP = "GitHub integration: setup branch protection, list changed environments, push bot commits"

ZERO_SHA = "0" * 40


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="github_command", metavar="ACTION")
    sub.required = True
    setup = sub.add_parser("setup", help="apply branch protection or a ruleset from the policies")
    setup.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY"), help="owner/name (default: $GITHUB_REPOSITORY)")
    setup.add_argument("--branch", help="branch to protect (default: the repository's default branch)")
    setup.add_argument("--mode", choices=("ruleset", "branch-protection"), default="ruleset")
    setup.add_argument("--check", action="append", dest="checks", metavar="NAME[@APP_ID]",
                       help="a required status check, reported by the GitHub Actions app unless @APP_ID "
                            "(or @any) says otherwise (repeatable; default: gates, test, workflows)")
    setup.add_argument("--bypass-app-id", type=int, help="GitHub App id of the rollout bot, allowed to push records (ruleset mode)")
    setup.add_argument("--dry-run", action="store_true", help="print the difference, change nothing")
    setup.add_argument("--json", action="store_true")
    setup.set_defaults(_action=_setup)

    changed = sub.add_parser("changed", help="environments changed by this workflow's pull request or push")
    changed.set_defaults(_action=_changed)

    push = sub.add_parser("push", help="push local commits (records, reverts) to the triggering branch")
    push.add_argument("--remote", help="push URL (default: $GITHUB_SERVER_URL/$GITHUB_REPOSITORY.git)")
    push.add_argument("--branch", help="branch (default: from $GITHUB_REF)")
    push.add_argument("--token-env", default="PROMOTION_BOT_TOKEN", help="variable holding the push token")
    push.add_argument("--attempts", type=int, default=3)
    push.set_defaults(_action=_push)


def run(args) -> int:
    return args._action(args)


# -- setup ---------------------------------------------------------------------------

def _setup(args) -> int:
    from promotion import github_setup as gs
    from promotion.github.context import parse_repo

    if not args.repo:
        raise UsageError("github setup: give --repo owner/name (or set $GITHUB_REPOSITORY)")
    parse_repo(args.repo)
    checks = tuple(args.checks or gs.DEFAULT_CHECKS)
    for check in checks:
        gs.parse_check(check)  # bad input stops here, before any call to GitHub
    proj = project(args)
    api = gs.Api.from_env()
    branch = args.branch or gs.default_branch(api, args.repo)
    want = gs.desired_protection(proj, branch, checks=checks, bypass_app_id=args.bypass_app_id)
    the_plan = gs.plan(api, args.repo, want, args.mode)
    applied = False
    if not args.dry_run and not the_plan.up_to_date:
        gs.apply(api, args.repo, want, the_plan)
        applied = True
    if args.json:
        emit_json({**the_plan.as_dict(), "applied": applied, "dry_run": args.dry_run})
    else:
        for line in the_plan.lines():
            print(line)
        if args.dry_run and not the_plan.up_to_date:
            print("dry run: nothing changed; run without --dry-run to apply")
        elif applied:
            print("applied")
    return 0


# -- changed -------------------------------------------------------------------------

def _event() -> tuple[str, dict]:
    name = os.environ.get("GITHUB_EVENT_NAME")
    path = os.environ.get("GITHUB_EVENT_PATH")
    if not name or not path:
        raise UsageError("github changed: runs inside a workflow ($GITHUB_EVENT_NAME and $GITHUB_EVENT_PATH unset)")
    try:
        return name, safeload.read_json(path, limit=safeload.MAX_EVENT_BYTES)
    except (OSError, ValueError) as exc:
        raise UsageError(f"github changed: cannot read the event payload {path}: {exc}") from exc


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise GitError(f"git {' '.join(args)} failed: {detail[-1] if detail else proc.returncode}")
    return proc.stdout


def changed_files(root: Path, event_name: str, payload: dict) -> list[str] | None:
    """Paths changed by the event; None when the event must not act (not the default branch)."""
    if event_name in ("pull_request", "pull_request_review"):
        pr = payload.get("pull_request") or {}
        base, head = (pr.get("base") or {}).get("sha"), (pr.get("head") or {}).get("sha")
        if not base or not head:
            raise UsageError("github changed: the payload has no pull_request.base.sha / head.sha")
        return _git(root, "diff", "--name-only", f"{base}...{head}").split()
    if event_name == "push":
        default = (payload.get("repository") or {}).get("default_branch")
        if payload.get("ref") != f"refs/heads/{default}":
            return None
        before, after = payload.get("before"), payload.get("after")
        if not after or after == ZERO_SHA:
            return []
        if not before or before == ZERO_SHA:
            before = f"{after}^"
        return _git(root, "diff", "--name-only", before, after).split()
    raise UsageError(f"github changed: does not apply to {event_name!r} events")


def environments_for(proj, files: list[str]) -> list[str]:
    """Environments whose file, or whose policy file, is among ``files``."""
    from promotion.errors import ConfigError

    files = set(files)
    out = []
    for name in proj.environment_names():
        if f"environments/{name}.yaml" in files:
            out.append(name)
            continue
        try:
            policy = proj.environment(name).policy_path
        except ConfigError:
            continue  # an invalid file unchanged by this event is not this event's business
        if policy and os.path.normpath(policy) in files:
            out.append(name)
    return out


def pull_request_changes(root: Path, payload: dict):
    """The pull request's changes (:class:`promotion.governance.Changes`) from its payload."""
    from promotion.governance import detect

    pr = payload.get("pull_request") or {}
    base, head = (pr.get("base") or {}).get("sha"), (pr.get("head") or {}).get("sha")
    if not isinstance(base, str) or not isinstance(head, str) or not base or not head:
        raise UsageError("github changed: the payload has no pull_request.base.sha / head.sha")
    return detect(root, base, head)


def _changed(args) -> int:
    from promotion.commands._common import in_github_actions

    proj = project(args)
    name, payload = _event()
    governance: list[str] = []
    if name in ("pull_request", "pull_request_review"):
        changes = pull_request_changes(proj.root, payload)
        files: list[str] | None = []
        envs = list(changes.promotions)
        governance = [str(c) for c in changes.governance]
    else:
        files = changed_files(proj.root, name, payload)
        envs = [] if files is None else environments_for(proj, files)
    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as fh:
            fh.write(f"environments={json.dumps(envs)}\n")
            fh.write(f"targets={json.dumps(matrix_targets(envs))}\n")
            fh.write(f"governance={'true' if governance else 'false'}\n")
    print(json.dumps(envs))
    if files is None:
        note = "not the default branch: nothing to roll out"
    else:
        note = ("environments to act on: " + ", ".join(f"`{e}`" for e in envs)) if envs else \
            "no proposed model changed: no environment to gate or roll out"
    if governance:
        note += ("\n\ngovernance changes (the governance check decides; the owners named by the base "
                 "policies must approve):\n" + "\n".join(f"- `{g}`" for g in governance))
        if envs:
            note += "\n\nthis pull request also promotes: split it (one kind of change per pull request)"
    print(note, file=sys.stderr)
    if in_github_actions():
        append_step_summary(note)
    return 0


# -- push ----------------------------------------------------------------------------

def _push(args) -> int:
    proj = project(args)
    root = proj.root
    branch = args.branch or _branch_from_ref(os.environ.get("GITHUB_REF", ""))
    remote = args.remote or _default_remote()
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    token = os.environ.get(args.token_env)
    if remote.startswith(("https://", "http://")):
        if not token:
            raise UsageError(f"github push: ${args.token_env} is empty; add the bot token as a repository secret")
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        # handed to git through its environment: not in argv, not in .git/config
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraheader",
                    "GIT_CONFIG_VALUE_0": f"AUTHORIZATION: basic {basic}"})

    def git(*a: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(["git", *a], cwd=root, env=env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise GitError(f"git {a[0]} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    git("fetch", "--quiet", remote, f"refs/heads/{branch}")
    ahead = int(git("rev-list", "--count", "FETCH_HEAD..HEAD").stdout.strip())
    if ahead == 0:
        print(f"nothing to push: {branch} already has every local commit")
        return 0
    for attempt in range(1, max(1, args.attempts) + 1):
        proc = git("push", "--quiet", remote, f"HEAD:refs/heads/{branch}", check=False)
        if proc.returncode == 0:
            head = git("rev-parse", "HEAD").stdout.strip()
            print(f"pushed {ahead} commit(s) to {branch} ({head[:12]})")
            append_step_summary(f"Pushed {ahead} commit(s) to `{branch}`: `{head[:12]}`")
            return 0
        # someone merged meanwhile: records are new files, so a rebase normally applies
        git("fetch", "--quiet", remote, f"refs/heads/{branch}")
        rebase = git("rebase", "--quiet", "FETCH_HEAD", check=False)
        if rebase.returncode != 0:
            git("rebase", "--abort", check=False)
            raise GitError(f"github push: local commits conflict with newer commits on {branch}; "
                           "resolve by hand (the records are in the job's workspace)")
    raise GitError(f"github push: {branch} kept moving; gave up after {args.attempts} attempts")


def _branch_from_ref(ref: str) -> str:
    if not ref.startswith("refs/heads/"):
        raise UsageError(f"github push: $GITHUB_REF {ref!r} is not a branch; pass --branch")
    return ref[len("refs/heads/"):]


def _default_remote() -> str:
    repo = os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        raise UsageError("github push: pass --remote or set $GITHUB_REPOSITORY")
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return f"{server}/{repo}.git"
