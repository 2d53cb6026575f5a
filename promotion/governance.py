"""Governance changes: what a pull request changes besides the model it proposes.

A pull request *proposes* a model: ``model.version`` and ``model.digest`` of an
environment file. Everything else it changes decides how proposals are judged or what
runs — a new ``model.name``, policies, ``environments/trust.yaml``, records, the other
fields of an environment file (``serving.endpoint``, ``registry.tracking_uri``,
``drift.production_window``, ``policy``...), ``.github/`` (workflows, CODEOWNERS), ``promotion/``, ``services/``, the
Makefile, ``pyproject.toml``, the lock file, and anything else in the repository — and is a
*governance change*.

- :func:`detect` lists them with real git: every file changed between the merge base and
  the head (``git diff --raw``), and for each environment file every changed field.
- A new ``model.name`` in an existing environment file is a *model switch*: it changes
  what the environment serves, not which version of it, so the whole switch (name, version,
  digest) is a governance change and no promotion. The switch pull request is approved by
  the governance owners on its own; after the merge the rollout judges the new model
  against the version that runs, and later versions of it are ordinary promotions.
- :func:`judge` decides. No governance change passes. A governance change passes only when
  the governance owners of *every* base policy approved it (``governance: {owners,
  required}``: the strictest rule holds). A pull request that also promotes is blocked
  (split it: one never both changes the rules and uses them). A base commit whose
  policies name no governance owners blocks every governance change (fail closed); so does
  a base policy that cannot be read.

Approvals come from the approvals sources of :mod:`promotion.github.approvals`: the pull
request's reviews on GitHub, or, on a laptop, ``promotion approve --governance`` (local
approvals, not for production, bound to the head commit).

Usage::

    from promotion.governance import detect, judge

    changes = detect(root, base="origin/main")        # head: HEAD
    for change in changes.governance:
        print(change)                                  # environments/prod.yaml serving.endpoint
    report = judge(base_project, changes, approvals_source)
    raise SystemExit(0 if report.passed else 1)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion._internal import yamlio
from promotion._internal.git import Git
from promotion.config import environment_of_path
from promotion.errors import ConfigError, Error, GitError, UsageError
from promotion.gates.base import Check, GateResult

MODEL_FIELDS = ("model.name", "model.version", "model.digest")
LOCAL_KEY, LOCAL_VERSION = "governance", 0   # <state>/approvals/governance-v0.json (no env has v0)
_REGULAR = {"100644", "100755"}
_STATUS = {"A": "added", "D": "deleted", "M": "modified", "T": "type changed"}


@dataclass(frozen=True)
class Change:
    """One governance change: a file, and for an environment file the field."""

    path: str
    field: str | None = None
    status: str = "M"
    line: int | None = None
    note: str | None = None

    def __str__(self) -> str:
        if self.field:
            return f"{self.path} {self.field}" + (f" ({self.note})" if self.note else "")
        return f"{self.path} ({self.note or _STATUS.get(self.status, 'changed')})"


@dataclass(frozen=True)
class Changes:
    """What a pull request changes: the environments it promotes, and governance."""

    base: str
    merge_base: str
    head: str
    governance: tuple[Change, ...]
    promotions: tuple[str, ...]

    def listing(self) -> str:
        return "; ".join(str(c) for c in self.governance)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "merge_base": self.merge_base, "head": self.head,
                "promotions": list(self.promotions),
                "governance": [{"path": c.path, "field": c.field, "status": c.status, "line": c.line}
                               for c in self.governance]}


def resolve(root: str | Path, ref: str, what: str = "--base") -> str:
    """The commit sha ``ref`` names in the repository at ``root``; :class:`UsageError` if none."""
    if not isinstance(ref, str) or not ref or ref.startswith("-") or any(c in ref for c in "\0\n\r"):
        raise UsageError(f"{what} {ref!r}: not a git revision")
    try:
        return Git(root)("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except GitError:
        raise UsageError(f"{what} {ref!r}: no such commit in {root} (fetch it first: the checkout needs "
                         "the base commit's history)") from None


def detect(root: str | Path, base: str, head: str | None = None) -> Changes:
    """The changes of ``head`` (default ``HEAD``) since its merge base with ``base``."""
    git = Git(root)
    base_sha = resolve(root, base, "--base")
    head_sha = resolve(root, head or "HEAD", "--head")
    try:
        merge_base = git("merge-base", base_sha, head_sha).strip()
    except GitError:
        raise UsageError(f"--base {base!r} and --head {head or 'HEAD'!r} share no history") from None
    raw = git("diff", "--raw", "--no-renames", "--no-ext-diff", "-z", merge_base, head_sha)
    governance: list[Change] = []
    promotions: list[str] = []
    for old_mode, new_mode, status, path in _parse_raw(raw):
        env = environment_of_path(path)
        if not env:
            governance.append(Change(path, status=status))
        elif status in ("A", "D"):
            governance.append(Change(path, status=status,
                                     note="new environment" if status == "A" else "environment deleted"))
        elif old_mode not in _REGULAR or new_mode not in _REGULAR:
            governance.append(Change(path, status=status, note=f"file mode {old_mode} -> {new_mode}"))
        else:
            fields, promoted = _field_changes(git, path, merge_base, head_sha)
            governance.extend(fields)
            if promoted:
                promotions.append(env)
    return Changes(base_sha, merge_base, head_sha, tuple(governance), tuple(promotions))


def _parse_raw(raw: str):
    """(old mode, new mode, status, path) from ``git diff --raw -z``."""
    parts = raw.split("\0")
    i = 0
    while i < len(parts) and parts[i]:
        meta = parts[i].lstrip(":").split()
        path = parts[i + 1] if i + 1 < len(parts) else ""
        i += 2
        if len(meta) >= 5:
            yield meta[0], meta[1], meta[4][:1], path


def _field_changes(git: Git, path: str, old_rev: str, new_rev: str) -> tuple[list[Change], bool]:
    """Governance changes of one environment file, and whether its model fields changed."""
    try:
        old = yamlio.loads(git("show", f"{old_rev}:{path}"), f"{path}@{old_rev[:7]}")
        new = yamlio.loads(git("show", f"{new_rev}:{path}"), path)
    except (ConfigError, GitError) as exc:
        first = (exc.diagnostics().splitlines() or [""])[0]
        return [Change(path, note=f"cannot compare: {first}")], False
    if not isinstance(old.data, dict) or not isinstance(new.data, dict):
        return [Change(path, note="not a mapping")], False
    changes, promoted = [], False
    switch = _model_name(old.data) != _model_name(new.data)
    for field_path in _differences(old.data, new.data, ()):
        name = yamlio.dotted(field_path)
        if name in MODEL_FIELDS and not switch:
            promoted = True
        else:
            doc = new if _has(new.data, field_path) else old
            note = "model switch" if name in MODEL_FIELDS else None
            changes.append(Change(path, field=name, line=doc.line_of(field_path), note=note))
    return changes, promoted


def _model_name(data: dict) -> Any:
    model = data.get("model")
    return model.get("name") if isinstance(model, dict) else model


def _differences(old: Any, new: Any, path: tuple):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if key not in old or key not in new:
                yield path + (key,)
            else:
                yield from _differences(old[key], new[key], path + (key,))
    elif type(old) is not type(new) or old != new:
        yield path


def _has(data: Any, path: tuple) -> bool:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return False
        data = data[key]
    return True


# -- who approves ----------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One base policy's ``governance`` section."""

    policy: str
    line: int
    owners: tuple[str, ...]
    required: int

    @property
    def teams(self) -> list[str]:
        return [o for o in self.owners if "/" in o]

    @property
    def users(self) -> list[str]:
        return [o for o in self.owners if "/" not in o]


def rules(project) -> tuple[list[Rule], list[Check]]:
    """Every governance rule of the project's policies, and a blocking check per policy that
    cannot be read (a rule that cannot be read cannot be satisfied)."""
    from promotion.config import POLICY_DIR, load_policy

    paths = {p.resolve() for p in (project.root / POLICY_DIR).rglob("*.yaml")}
    problems: list[Check] = []
    for name in project.environment_names():
        try:
            env = project.environment(name)
        except Error as exc:
            problems.append(Check.block("governance.rules", f"cannot decide: {_first(exc)}", file=f"environments/{name}.yaml"))
            continue
        if env.policy_path:
            path = (project.root / env.policy_path).resolve()
            if project.root.resolve() in path.parents and path.is_file():
                paths.add(path)
    found: list[Rule] = []
    for path in sorted(paths):
        try:
            policy = load_policy(path, project.root)
        except Error as exc:
            problems.append(Check.block("governance.rules", f"cannot decide: {_first(exc)}"))
            continue
        if policy.governance:
            owners = tuple(dict.fromkeys(o.lstrip("@") for o in policy.governance["owners"]))
            found.append(Rule(policy.display, policy.line_of("governance", "owners"), owners,
                              int(policy.governance.get("required", 1))))
    return found, problems


def _first(exc: Error) -> str:
    return (exc.diagnostics().splitlines() or [""])[0]


def collect(source, rule: Rule, head: str):
    """The approvals of the head commit that count for ``rule`` (an ``Approvals``)."""
    from promotion.github.approvals import Approvals, LocalApprovals

    def ask(teams: list[str]):
        return source.collect(env_file=".", env_name=LOCAL_KEY, version=LOCAL_VERSION, digest=f"git:{head}",
                              teams=teams, use_codeowners=False)

    if isinstance(source, LocalApprovals):
        return ask([])  # local approvals check no teams (and say they are not for production)
    parts = []
    if rule.teams:
        parts.append((ask(rule.teams), None))
    if rule.users:
        parts.append((ask([]), {u.lower() for u in rule.users}))
    approvers: dict[str, str] = {}
    ignored: dict[str, str] = {}
    blocking: dict[str, str] = {}
    first = parts[0][0]
    for found, only in parts:
        for login in found.approvers:
            if only is None or login.lower() in only:
                approvers.setdefault(login.lower(), login)
            else:
                ignored.setdefault(login, "not a governance owner")
        for login, why in found.ignored:
            ignored.setdefault(login, why)
        for login, why in getattr(found, "blocking", ()):
            if only is None or login.lower() in only:
                blocking.setdefault(login, why)
    kept = [(who, why) for who, why in ignored.items() if who.lower() not in approvers]
    extra = {"blocking": tuple(blocking.items())} if "blocking" in Approvals.__dataclass_fields__ else {}
    return Approvals(tuple(approvers.values()), tuple(kept), first.source,
                     f"governance owners of {rule.policy} ({', '.join('@' + o for o in rule.owners)})",
                     first.head_sha, first.warning,
                     records=tuple({"login": a, "commit": first.head_sha} for a in approvers.values()), **extra)


def _approval_check(source, rule: Rule, head: str, notes: list[str]) -> Check:
    name = f"governance.approvals ({rule.policy})"
    threshold = f">= {rule.required}"
    try:
        found = collect(source, rule, head)
    except Error as exc:
        return Check.block(name, f"cannot decide: {_first(exc)}", threshold, rule.policy, rule.line)
    if found.warning:
        notes.append(found.warning)
    blocking = getattr(found, "blocking", ())
    ok = len(found.approvers) >= rule.required and not blocking
    return Check.judge(name, len(found.approvers), threshold, ok, found.message(rule.required), rule.policy, rule.line)


# -- the verdict ---------------------------------------------------------------------

@dataclass(frozen=True)
class GovernanceReport:
    """The verdict on a pull request's governance changes."""

    changes: Changes
    results: tuple[GateResult, ...]
    notes: tuple[str, ...] = ()
    environment = ":governance"   # names the sticky PR comment (no environment name has a colon)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def checks(self) -> list[Check]:
        return [c for r in self.results for c in r.checks]

    @property
    def headline(self) -> str:
        verdict = "PASS" if self.passed else "BLOCKED"
        n = len(self.changes.governance)
        what = f"{n} governance change(s)" if n else "no governance change"
        return f"governance of {self.changes.head[:7]} (base {self.changes.base[:7]}): {what}: {verdict}"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": "PASS" if self.passed else "BLOCK", "changes": self.changes.to_dict(),
                "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes)}


SPLIT = ("split it: one pull request changes governance (approved by its owners), another "
         "promotes, judged by the rules already on the base branch")


def split_check(changes: Changes, name: str = "governance.split") -> Check:
    """For a promotion's gate: PASS when the pull request changes no governance, else BLOCK
    (a promotion is judged only by rules already on the base branch)."""
    threshold = "promotion or governance, not both"
    if not changes.governance:
        return Check.judge(name, 0, threshold, True, "this pull request changes nothing besides the proposed model(s)")
    promotes = f"promotes {', '.join(changes.promotions)} and " if changes.promotions else ""
    return Check.block(name, f"this pull request {promotes}changes governance ({changes.listing()}): {SPLIT}",
                       threshold)


def judge(project, changes: Changes, source) -> GovernanceReport:
    """Decide on ``changes`` with the governance rules of ``project`` (the base commit's)."""
    if not changes.governance:
        check = Check.judge("governance.changes", 0, "approved by the governance owners", True,
                            "this pull request changes nothing besides the proposed model(s)")
        return GovernanceReport(changes, (GateResult("governance", (check,)),))
    notes: list[str] = []
    found, problems = rules(project)
    checks = [split_check(changes)] if changes.promotions else []
    checks += problems
    if not found:
        checks.append(Check.block("governance.approvals",
                                  "no policy on the base commit names governance owners (governance: {owners: [...], "
                                  "required: N}), so a governance change cannot be approved; an administrator must "
                                  "add one first", "approved by the governance owners"))
    checks += [_approval_check(source, rule, changes.head, notes) for rule in found]
    ok = all(c.passed for c in checks)
    listing = Check.judge("governance.changes", len(changes.governance), "approved by the governance owners", ok,
                          f"{len(changes.governance)} governance change(s): {changes.listing()}")
    return GovernanceReport(changes, (GateResult("governance", (listing, *checks)),), tuple(dict.fromkeys(notes)))


def markdown(report: GovernanceReport) -> str:
    """The verdict as GitHub-flavoured markdown (job summary and PR comment)."""
    from promotion.github.report import fmt_value

    def cell(text: Any) -> str:
        return fmt_value(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")

    verdict = "✅ PASS" if report.passed else "❌ BLOCKED"
    lines = [f"### Governance: {cell(report.headline.rsplit(':', 1)[0])} — {verdict}", ""]
    if report.changes.governance:
        lines += ["Changed besides the proposed model(s):", ""]
        lines += [f"- `{cell(str(c))}`" for c in report.changes.governance[:500]]
        if len(report.changes.governance) > 500:
            lines.append(f"- …and {len(report.changes.governance) - 500} more")
        lines.append("")
    lines += ["| Check | Value | Threshold | Verdict | Details |", "| --- | --- | --- | --- | --- |"]
    for check in report.checks:
        mark = "✅ PASS" if check.passed else "❌ BLOCK"
        lines.append(f"| {cell(check.name)} | {cell(check.value)} | {cell(check.threshold)} | {mark} | {cell(check.message)} |")
    for note in report.notes:
        lines += ["", f"> **{note}**"]
    return "\n".join(lines) + "\n"
