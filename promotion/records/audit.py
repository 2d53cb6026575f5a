"""Replay git history of one environment: what ran when, and was every change accounted for.

Usage::

    from promotion.records.audit import audit
    report = audit(Path("."), "prod", registry=Registry.for_root(root))
    for entry in report.timeline:
        print(entry["when"], entry["action"], entry["version"], entry["signer"])
    for v in report.violations:
        print(v.text())
    report.ok        # False on any violation

Rules (first-parent history of the current branch, read with a few ``git log`` and
``cat-file`` calls):

* every record is added once and never modified, deleted or re-added;
* every record at HEAD verifies: its signature, and a signer that was valid *when git
  received the record* - the trust file as of the commit that added it lists the key
  or identity, and no earlier commit retired it (:mod:`promotion.records.validity`);
  its name matches its signed content and the hash chain links it to the file before
  it; records are added in sequence order; no decision has two records; a
  ``probation_passed`` record directly follows the promotion (same rollout) it vouches for;
* every change of the environment file's model (name, version, digest) is explained by
  a rollback or reject record added in the same commit that matches the new content, or
  by a record in a later commit whose ``source_commit`` is that commit (a promote record
  never comes in the commit that makes the change); a trailing change newer than every record is
  *pending* (its rollout has not run yet), anything else bypassed the process;
* every change of any other field of the environment file (serving, metrics, registry,
  drift, policy, ...) is a *governance change*: accepted only from a merged pull request
  (a merge commit, or a commit by GitHub's merge button: the gates judge such a pull
  request as governance) that moves no model field and adds no record, and reported
  with its commit, author and fields; any other such change is a violation naming its
  commit and fields;
* the same holds for the environment's policy file (the path ``policy:`` names at each
  point), and every promote record's ``policy_digest`` is the policy file in force at
  its source commit (:mod:`promotion.records.audit_governance`);
* every change of who may sign (``environments/trust.yaml``) is listed; after the
  repository's first record, one that trusts a new key or workflow or changes the
  Sigstore trusted root outside a merged pull request is a violation naming the commit
  and the signer, and that signer signs nothing (:mod:`promotion.records.validity`);
* every record is explained by such a change;
* now (:mod:`promotion.records.audit_now`): the registry alias of the environment names
  what the last record says runs, else the history was truncated or the alias moved
  outside the process; keyless records are compared with the transparency log when
  the audit runs online.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from promotion.errors import BadInput, VerificationError
from promotion.records.chain import RECORDS_DIR, link_problems, parse_name
from promotion.records.history import Commit, GitHistory, load_yaml_blob, model_from
from promotion.records.statement import format_time, parse_time
from promotion.records.trust import TRUST_FILE
from promotion.records.validity import Added, TrustHistory
from promotion.records.verify import check_signer, verify_signature

MODEL_FIELDS = ("model.name", "model.version", "model.digest")


@dataclass(frozen=True)
class Violation:
    message: str          # starts with the file it is about
    commit: str | None    # the commit that introduced the problem

    def text(self) -> str:
        return f"{self.message} (commit {self.commit[:12]})" if self.commit else self.message

    def to_dict(self) -> dict:
        return {"message": self.message, "commit": self.commit}


@dataclass
class AuditReport:
    environment: str
    head: str
    timeline: list[dict] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    pending: list[dict] = field(default_factory=list)
    governance: list[dict] = field(default_factory=list)
    checks: dict = field(default_factory=dict)   # "registry", "transparency_log": {status, note}
    at: dict | None = None
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict:
        return {
            "environment": self.environment, "head": self.head, "ok": self.ok, "records": self.records,
            "timeline": self.timeline, "violations": [v.to_dict() for v in self.violations],
            "pending": self.pending, "governance": self.governance, "checks": self.checks, "at": self.at,
        }


@dataclass
class _Change:
    commit: Commit
    model: tuple | None   # (name, version, digest)
    explained_by: list[str] = field(default_factory=list)


class _Stub:
    """A record that failed verification: it keeps its place in the chain."""

    predicate = None

    def __init__(self, name: str, digest: str) -> None:
        self.name, self.digest = name, digest


def audit(root: str | Path, env: str, *, at: datetime | None = None, registry=None,
          online: bool = False) -> AuditReport:
    """Audit environment ``env`` of the git repository at ``root`` (see module docstring).

    ``registry`` (a :class:`~promotion.registry.Registry`, or None to skip) is compared
    with the last record; ``online`` asks the transparency log about keyless records.
    """
    from promotion._internal.digest import bytes_digest
    from promotion.records import audit_governance, audit_now

    root = Path(root)
    git = GitHistory(root)
    env_rel = f"environments/{env}.yaml"
    rec_rel = f"{RECORDS_DIR}/{env}/"
    env_path, rec_path = git.prefix + env_rel, git.prefix + rec_rel
    # every environment's records (the first one closes the trust file's bootstrap) and the
    # policy file the environment names now; one more log only if it named others before
    paths = [env_rel, rec_rel, TRUST_FILE, RECORDS_DIR + "/"]
    head_policy = audit_governance.policy_rel(load_yaml_blob(git.cat([f"{git.head}:{env_path}"]).get(
        f"{git.head}:{env_path}")))
    policies = {head_policy} - {None}
    commits = git.log(*paths, *sorted(policies))
    env_events = [(c, status) for c in commits for status, path in c.changes if path == env_path]
    if not env_events:
        raise BadInput(f"{env_rel}: no history in git at {root} (is the environment name right?)")
    env_blobs = git.cat([f"{c.sha}:{env_path}" for c, status in env_events if status != "D"])
    env_docs = {sha.split(":", 1)[0]: load_yaml_blob(blob) for sha, blob in env_blobs.items()}
    named = {audit_governance.policy_rel(doc) for doc in env_docs.values()} - {None}
    if named - policies:
        commits = git.log(*paths, *sorted(named | policies))
    report = AuditReport(env, git.head)

    # -- what happened to each path --------------------------------------------------
    env_events = []
    record_events: dict[str, list[tuple[Commit, str]]] = {}
    for commit in commits:
        for status, path in commit.changes:
            if path == env_path:
                env_events.append((commit, status))
            elif path.startswith(rec_path):
                record_events.setdefault(path[len(rec_path):], []).append((commit, status))

    added: dict[str, Commit] = {}
    last_touch: dict[str, Commit] = {}
    for name, events in record_events.items():
        display = rec_rel + name
        first_commit, first_status = events[0]
        added[name] = first_commit
        last_touch[name] = events[-1][0]
        if first_status != "A":
            report.violations.append(Violation(f"{display}: changed in history without being added", first_commit.sha))
        for commit, status in events[1:]:
            if status == "M":
                report.violations.append(Violation(f"{display}: record was modified after it was added in commit "
                                                   f"{first_commit.sha[:12]}", commit.sha))
            elif status == "D":
                report.violations.append(Violation(f"{display}: record was deleted", commit.sha))
            elif status == "A":
                report.violations.append(Violation(f"{display}: record was added again after being deleted", commit.sha))
        if parse_name(name) is None and events[-1][1] != "D":
            report.violations.append(Violation(f"{display}: unexpected file in the records directory", first_commit.sha))

    # -- contents: trust history, records at HEAD, env file at each change -------------
    head_records = sorted(n for n in git.ls_tree(rec_rel) if parse_name(n) is not None)
    wanted = [f"{git.head}:{rec_path}{n}" for n in head_records]
    blobs = {**git.cat(wanted), **env_blobs}
    history = TrustHistory.load(root, git, commits, working=False)

    verified = {}
    chain_items = []
    for name in head_records:
        data = blobs.get(f"{git.head}:{rec_path}{name}", b"")
        display = rec_rel + name
        blame = last_touch.get(name) or added.get(name)
        try:
            record = verify_signature(data, history.verifier, path=root / rec_rel / name, display=display)
            # judged from when git received these bytes: the commit that last put them there
            record = check_signer(record, history, Added(blame.index, blame.sha) if blame else None, display)
        except VerificationError as exc:
            report.violations.append(Violation(exc.message, blame.sha if blame else None))
            chain_items.append(_Stub(name, bytes_digest(data)))
            continue
        verified[name] = record
        chain_items.append(record)
    for record, message in link_problems(chain_items, env):
        blame = last_touch.get(record.name) or added.get(record.name)
        report.violations.append(Violation(f"{rec_rel}{record.name}: {message}", blame.sha if blame else None))
    previous_index = -1
    for name in head_records:
        commit = added.get(name)
        if commit is None:
            report.violations.append(Violation(f"{rec_rel}{name}: present at HEAD but never added on this branch", None))
            continue
        if commit.index < previous_index:
            report.violations.append(Violation(f"{rec_rel}{name}: added before the record preceding it "
                                               "(records reordered)", commit.sha))
        previous_index = max(previous_index, commit.index)
    report.records = len(head_records)
    _duplicates(report, rec_rel, [verified[n] for n in head_records if n in verified], added)
    _probations(report, rec_rel, [verified.get(n) for n in head_records], added)

    # -- changes of the environment file ----------------------------------------------
    record_commits = {added[n].sha for n in head_records if n in added}
    changes = _env_changes(report, env_rel, env_events, env_docs, record_commits)

    by_sha = {c.commit.sha: c for c in changes}
    by_commit_records: dict[str, list] = {}
    for name, record in verified.items():
        by_commit_records.setdefault(added[name].sha, []).append(record)

    for name, record in verified.items():
        commit = added[name]
        triple = _triple(record)
        same = by_sha.get(commit.sha)
        # a rollback reverts the file in its own commit; a promotion is recorded by the
        # rollout after the change merged, never in the commit that makes the change
        if same is not None and same.model == triple and record.action != "promote":
            same.explained_by.append(name)
            continue
        source = record.predicate.get("source_commit")
        change = _find_change(changes, source) if source else None
        later = change is not None and (change.commit.index < commit.index or
                                        (change.commit.index == commit.index and record.action != "promote"))
        if later and _explains(record, change.model):
            change.explained_by.append(name)
            continue
        if (same is not None and same.model == triple) or (change is not None and change.commit.index == commit.index):
            why = (f"it is added by the very commit that changes {env_rel} to {_show(triple)}: a promotion is "
                   "recorded by its rollout after the change is merged")
        elif source and change is None:
            why = f"its source_commit {source[:12]} did not change {env_rel} on this branch"
        elif change is not None and change.commit.index > commit.index:
            why = f"its source_commit {source[:12]} comes after the record"
        elif change is not None:
            why = (f"its source_commit {source[:12]} set {_show(change.model)}, "
                   f"but the record is {record.action} {_show(triple)}")
        else:
            why = f"its commit does not change {env_rel} to {_show(triple)} and it names no source_commit"
        report.violations.append(Violation(f"{rec_rel}{name}: record is not backed by a change of the "
                                           f"environment file: {why}", commit.sha))

    # -- the policy file: its changes and the policy each promotion claims -----------------
    promotes = []
    for name, record in verified.items():
        change = _find_change(changes, record.predicate.get("source_commit") or "\0")
        if record.action == "promote" and change is not None and change.commit.index < added[name].index:
            promotes.append((rec_rel + name, record, change.commit, added[name]))
    policy_timeline = [(c.index, audit_governance.policy_rel(env_docs.get(c.sha)) if status != "D" else None)
                       for c, status in env_events]
    audit_governance.check(report, git, commits, env, policy_timeline, {c.commit.sha for c in changes},
                           record_commits, promotes)

    # a promotion rejected by its rollout: the next change reverts it under a record
    for i, change in enumerate(changes[:-1]):
        if change.explained_by:
            continue
        nxt = changes[i + 1]
        for record in by_commit_records.get(nxt.commit.sha, []):
            if record.action in ("rollback", "reject") and record.predicate.get("replaced_version") == change.model[1] \
                    and record.name in nxt.explained_by:
                change.explained_by.append(record.name)

    last_record_index = max((added[n].index for n in head_records if n in added), default=-1)
    for change in changes:
        if change.explained_by:
            report.timeline.append(_entry_change(change.commit, change.model, "ok", "explained by " + ", ".join(change.explained_by)))
        elif change is changes[-1] and change.commit.index > last_record_index:
            entry = _entry_change(change.commit, change.model, "pending", "no record yet: rollout not run")
            report.timeline.append(entry)
            report.pending.append(entry)
        else:
            report.timeline.append(_entry_change(change.commit, change.model, "violation", "no record"))
            report.violations.append(Violation(
                f"{env_rel}: changed to {_show(change.model)} without a promotion record "
                f"(hand edit bypassed the process)", change.commit.sha))

    bad_files = {v.message.split(":", 1)[0] for v in report.violations}
    for name in head_records:
        commit = added.get(name)
        record = verified.get(name)
        report.timeline.append(_entry_record(rec_rel + name, commit, record, (rec_rel + name) in bad_files))
    report.timeline.extend(audit_governance.trust_entries(report, history, commits))
    report.timeline.sort(key=lambda e: (e["_index"], e["kind"] != "change"))
    for entry in report.timeline:
        entry.pop("_index", None)

    # -- now: does the world agree with the last record? ------------------------------
    ordered = [verified[n] for n in head_records if n in verified]
    head_model = _model_of(blobs.get(f"{env_events[-1][0].sha}:{env_path}")) if env_events[-1][1] != "D" else None
    audit_now.check_registry(report, registry, env, ordered[-1] if ordered else None,
                             bool(head_records) and head_records[-1] not in verified, head_model)
    audit_now.check_transparency_log(report, git, history, ordered, blobs, rec_path, online=online,
                                     head_model=head_model)

    index = {c.sha: c.index for c in commits}
    report.violations.sort(key=lambda v: (index.get(v.commit, -1 if v.commit else 10**9), v.message))
    if at is not None:
        report.at = _state_at(at, ordered, env_events, blobs, env_path)
    return report


def _duplicates(report: AuditReport, rec_rel: str, records: list, added: dict) -> None:
    """Two records of one decision: a rerun that wrote the same promotion or rollback twice."""
    seen: dict[tuple, str] = {}
    for record in records:
        p = record.predicate
        if not p.get("source_commit"):
            continue  # nothing identifies the decision
        key = (p["action"], record.model, record.version, p["model"]["digest"], p.get("replaced_version"),
               p["source_commit"])
        first = seen.setdefault(key, record.name)
        if first != record.name:
            report.violations.append(Violation(
                f"{rec_rel}{record.name}: a second record of one decision: {record.action} {record.model} "
                f"v{record.version} from source commit {p['source_commit'][:12]} is already recorded by {first}",
                added[record.name].sha if record.name in added else None))


def _probations(report: AuditReport, rec_rel: str, records: list, added: dict) -> None:
    """A probation_passed record vouches for the promotion just before it in the chain (same
    model, version, digest and rollout); one that follows anything else vouches for nothing."""
    for before, record in zip([None, *records], records):
        if record is None or record.action != "probation_passed":
            continue
        rollout = (record.predicate.get("evidence") or {}).get("rollout_id")
        if before is None or before.action != "promote" or _triple(before) != _triple(record) \
                or (before.predicate.get("evidence") or {}).get("rollout_id") != rollout:
            report.violations.append(Violation(
                f"{rec_rel}{record.name}: a probation_passed record must directly follow the promote record of "
                f"{record.model} v{record.version} by the same rollout", added[record.name].sha
                if record.name in added else None))


def _env_changes(report: AuditReport, env_rel: str, env_events, docs: dict,
                 record_commits: set[str]) -> list[_Change]:
    """Model changes (to be explained by records); other fields judged as governance here."""
    changes: list[_Change] = []
    state = None
    fields: dict | None = None
    seen_file = False
    for commit, status in env_events:
        if status == "D":
            report.violations.append(Violation(f"{env_rel}: environment file deleted", commit.sha))
            state, fields = None, None
            continue
        doc = docs.get(commit.sha)
        model = model_from(doc)
        if model is None:
            report.violations.append(Violation(f"{env_rel}: not a valid environment file in this commit", commit.sha))
            continue
        now = _flatten(doc)
        if not seen_file:
            seen_file = True
            report.timeline.append(_entry_change(commit, model, "baseline", "initial content"))
            state, fields = model, now
            continue
        if fields is None:  # re-created after a deletion (itself a violation)
            changes.append(_Change(commit, model))
            state, fields = model, now
            continue
        moved = sorted(k for k in set(fields) | set(now) if fields.get(k, _MISSING) != now.get(k, _MISSING))
        other = [k for k in moved if k not in MODEL_FIELDS]
        if other:
            _governance(report, env_rel, commit, other, model != state, commit.sha in record_commits)
        if model != state:
            changes.append(_Change(commit, model))
        state, fields = model, now
    return changes


_MISSING = object()


def _governance(report: AuditReport, env_rel: str, commit: Commit, other: list[str], moves_model: bool,
                adds_record: bool) -> None:
    """A change of fields that decide how the model is judged and served."""
    shown = ", ".join(other[:8]) + (f" (+{len(other) - 8} more)" if len(other) > 8 else "")
    if moves_model:
        why = "changes the model and also " + shown + ": a promotion never changes how it is judged or served"
    elif adds_record:
        why = f"{shown} changed in a commit that adds a record: records change only the model"
    elif not commit.merged_by_github:
        why = f"{shown} changed outside a merged pull request (hand edit of a governance field)"
    else:
        entry = {"_index": commit.index, "kind": "governance", "when": _iso(commit.time), "commit": commit.sha,
                 "action": "governance", "model": None, "version": None, "approvers": [], "keys": [],
                 "signer": commit.author, "record": None, "status": "governance",
                 "note": f"governance change: {shown} (merged: {commit.subject[:80]})"}
        report.timeline.append(entry)
        report.governance.append({"commit": commit.sha, "author": commit.author, "fields": other,
                                  "subject": commit.subject, "when": entry["when"]})
        return
    report.violations.append(Violation(f"{env_rel}: {why}", commit.sha))


def _explains(record, model: tuple) -> bool:
    if _triple(record) == model:
        return True
    return record.action in ("rollback", "reject") and record.predicate.get("replaced_version") == model[1] \
        and record.model == model[0]


def _find_change(changes: list[_Change], source: str) -> _Change | None:
    for change in changes:
        if change.commit.sha.startswith(source):
            return change
    return None


def _triple(record) -> tuple:
    m = record.predicate["model"]
    return (m["name"], m["version"], m["digest"])


def _show(model: tuple) -> str:
    return f"{model[0]} v{model[1]}"


def _model_of(blob: bytes | None) -> tuple | None:
    return model_from(load_yaml_blob(blob))


def _flatten(data, prefix: str = "", depth: int = 0) -> dict:
    """Every leaf of a YAML document as ``{"a.b.c": value}`` (lists, and anything nested
    deeper than any environment file needs, are compared whole)."""
    if not isinstance(data, dict):
        return {prefix or "(document)": data}
    out: dict = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value and depth < 8:
            out.update(_flatten(value, path, depth + 1))
        else:
            out[path] = value
    return out


def _iso(ts: int) -> str:
    return format_time(datetime.fromtimestamp(ts, tz=timezone.utc))


def _entry_change(commit: Commit, model: tuple, status: str, note: str) -> dict:
    return {
        "_index": commit.index, "kind": "change", "when": _iso(commit.time), "commit": commit.sha,
        "action": "edit", "model": model[0], "version": model[1], "approvers": [], "keys": [],
        "signer": commit.author, "record": None, "status": status, "note": note,
    }


def _entry_record(display: str, commit: Commit | None, record, bad: bool) -> dict:
    entry = {
        "_index": commit.index if commit else 10**9, "kind": "record", "commit": commit.sha if commit else None,
        "record": display, "status": "violation" if bad or record is None else "ok", "note": "",
    }
    if record is None:
        parsed = parse_name(display.rsplit("/", 1)[-1]) or (0, "?", 0)
        entry.update(when=_iso(commit.time) if commit else None, action=parsed[1], model=None, version=parsed[2],
                     approvers=[], keys=[], signer=None, note="does not verify")
        return entry
    entry.update(
        when=record.recorded_at, action=record.action, model=record.model, version=record.version,
        approvers=[a.get("login") for a in record.predicate["approvers"]],
        keys=[record.keyid[:12]] if record.keyid else [], signer=record.signer,
    )
    return entry


def _state_at(at: datetime, records: list, env_events, blobs, env_path: str) -> dict:
    """What ran at ``at`` by the records, and what git said should run."""
    running = None
    for record in records:
        if parse_time(record.recorded_at) <= at:
            running = record
    desired = None
    for commit, status in env_events:
        if commit.time > at.timestamp():
            break
        desired = (commit, _model_of(blobs.get(f"{commit.sha}:{env_path}")) if status != "D" else None)
    out = {"time": format_time(at), "running": None, "desired": None}
    if running is not None:
        out["running"] = {
            "model": running.model, "version": running.version, "digest": running.predicate["model"]["digest"],
            "record": running.name, "action": running.action, "since": running.recorded_at,
            "approvers": [a.get("login") for a in running.predicate["approvers"]], "signer": running.signer,
        }
    if desired is not None and desired[1] is not None:
        out["desired"] = {"model": desired[1][0], "version": desired[1][1], "commit": desired[0].sha,
                          "since": _iso(desired[0].time)}
    return out
