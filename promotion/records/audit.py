"""Replay git history of one environment: what ran when, and was every change accounted for.

Usage::

    from promotion.records.audit import audit
    report = audit(Path("."), "prod")
    for entry in report.timeline:
        print(entry["when"], entry["action"], entry["version"], entry["signer"])
    for v in report.violations:
        print(v.text())
    report.ok        # False on any violation

Rules (first-parent history of the current branch, read with two ``git log``/``cat-file``
calls, trust file and keys as of HEAD):

* every record is added once and never modified, deleted or re-added;
* every record at HEAD verifies (signature by a key valid at its time, or an accepted
  workflow identity), its name matches its signed content, and the hash chain links each
  record to the file before it; records are added in sequence order;
* every change of the environment file's model (name, version, digest) is explained by a
  record added in the same commit that matches the new content, or by a later record
  whose ``source_commit`` is that commit; a trailing change newer than every record is
  *pending* (its rollout has not run yet), anything else bypassed the process;
* every record is explained by such a change.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from promotion.errors import BadInput, ConfigError, GitError, VerificationError
from promotion.records.chain import RECORDS_DIR, link_problems, parse_name
from promotion.records.statement import format_time, parse_time
from promotion.records.trust import TRUST_FILE, Trust
from promotion.records.verify import verify_bytes


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
    at: dict | None = None
    records: int = 0

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict:
        return {
            "environment": self.environment, "head": self.head, "ok": self.ok, "records": self.records,
            "timeline": self.timeline, "violations": [v.to_dict() for v in self.violations],
            "pending": self.pending, "at": self.at,
        }


@dataclass
class _Commit:
    index: int
    sha: str
    time: int
    author: str
    subject: str
    changes: list[tuple[str, str]]


@dataclass
class _Change:
    commit: _Commit
    model: tuple | None   # (name, version, digest)
    explained_by: list[str] = field(default_factory=list)


class _Stub:
    """A record that failed verification: it keeps its place in the chain."""

    predicate = None

    def __init__(self, name: str, digest: str) -> None:
        self.name, self.digest = name, digest


def audit(root: str | Path, env: str, *, at: datetime | None = None) -> AuditReport:
    """Audit environment ``env`` of the git repository at ``root`` (see module docstring)."""
    from promotion._internal.digest import bytes_digest

    root = Path(root)
    git = _GitReader(root)
    env_rel = f"environments/{env}.yaml"
    rec_rel = f"{RECORDS_DIR}/{env}/"
    env_path, rec_path = git.prefix + env_rel, git.prefix + rec_rel
    commits = git.log(env_rel, rec_rel)
    report = AuditReport(env, git.head)
    if not commits:
        raise BadInput(f"{env_rel}: no history in git at {root} (is the environment name right?)")

    # -- what happened to each path --------------------------------------------------
    env_events: list[tuple[_Commit, str]] = []
    record_events: dict[str, list[tuple[_Commit, str]]] = {}
    for commit in commits:
        for status, path in commit.changes:
            if path == env_path:
                env_events.append((commit, status))
            elif path.startswith(rec_path):
                record_events.setdefault(path[len(rec_path):], []).append((commit, status))

    added: dict[str, _Commit] = {}
    last_touch: dict[str, _Commit] = {}
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

    # -- contents: trust, keys, records at HEAD, env file at each change ---------------
    head_records = sorted(n for n in git.ls_tree(rec_rel) if parse_name(n) is not None)
    wanted = [f"{git.head}:{git.prefix}{TRUST_FILE}"]
    wanted += [f"{git.head}:{rec_path}{n}" for n in head_records]
    wanted += [f"{c.sha}:{env_path}" for c, status in env_events if status != "D"]
    blobs = git.cat(wanted)
    trust = _load_trust(git, blobs.get(wanted[0]))

    verified = {}
    chain_items = []
    for name in head_records:
        data = blobs.get(f"{git.head}:{rec_path}{name}", b"")
        display = rec_rel + name
        blame = last_touch.get(name) or added.get(name)
        try:
            record = verify_bytes(data, trust, path=root / rec_rel / name, display=display)
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

    # -- changes of the environment file ----------------------------------------------
    changes: list[_Change] = []
    state = None
    seen_file = False
    for commit, status in env_events:
        if status == "D":
            report.violations.append(Violation(f"{env_rel}: environment file deleted", commit.sha))
            state = None
            continue
        model = _model_of(blobs.get(f"{commit.sha}:{env_path}"))
        if model is None:
            report.violations.append(Violation(f"{env_rel}: not a valid environment file in this commit", commit.sha))
            continue
        if not seen_file:
            seen_file = True
            state = model
            report.timeline.append(_entry_change(commit, model, "baseline", "initial content"))
            continue
        if model != state:
            changes.append(_Change(commit, model))
            state = model

    by_sha = {c.commit.sha: c for c in changes}
    by_commit_records: dict[str, list] = {}
    for name, record in verified.items():
        by_commit_records.setdefault(added[name].sha, []).append(record)

    for name, record in verified.items():
        commit = added[name]
        triple = _triple(record)
        same = by_sha.get(commit.sha)
        if same is not None and same.model == triple:
            same.explained_by.append(name)
            continue
        source = record.predicate.get("source_commit")
        change = _find_change(changes, source) if source else None
        if change is not None and change.commit.index <= commit.index and _explains(record, change.model):
            change.explained_by.append(name)
            continue
        if source and change is None:
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
    report.timeline.sort(key=lambda e: (e["_index"], e["kind"] != "change"))
    for entry in report.timeline:
        entry.pop("_index", None)
    report.violations.sort(key=lambda v: (commits_index(commits, v.commit), v.message))

    if at is not None:
        report.at = _state_at(at, [verified[n] for n in head_records if n in verified], env_events, blobs, env_path, changes)
    return report


def commits_index(commits: list[_Commit], sha: str | None) -> int:
    for c in commits:
        if c.sha == sha:
            return c.index
    return -1


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
    import yaml

    if blob is None:
        return None
    try:
        data = yaml.safe_load(blob)
        m = data["model"]
        return (str(m["name"]), int(m["version"]), str(m["digest"]))
    except Exception:  # any malformed file is reported the same way
        return None


def _iso(ts: int) -> str:
    return format_time(datetime.fromtimestamp(ts, tz=timezone.utc))


def _entry_change(commit: _Commit, model: tuple, status: str, note: str) -> dict:
    return {
        "_index": commit.index, "kind": "change", "when": _iso(commit.time), "commit": commit.sha,
        "action": "edit", "model": model[0], "version": model[1], "approvers": [], "keys": [],
        "signer": commit.author, "record": None, "status": status, "note": note,
    }


def _entry_record(display: str, commit: _Commit | None, record, bad: bool) -> dict:
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


def _state_at(at: datetime, records: list, env_events, blobs, env_path: str, changes) -> dict:
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


def _load_trust(git: "_GitReader", text: bytes | None) -> Trust:
    import yaml

    if text is None:
        return Trust()
    try:
        raw = yaml.safe_load(text) or {}
        paths = [k.get("public_key") for k in raw.get("keys") or [] if isinstance(k, dict)]
        root_json = (raw.get("sigstore") or {}).get("trusted_root")
    except Exception:
        raise ConfigError(f"{TRUST_FILE}:1 (document): invalid trust file at HEAD") from None
    rels = [p for p in paths + [root_json] if isinstance(p, str)]
    files = git.cat([f"{git.head}:{git.prefix}{p}" for p in rels])

    def read(rel: str) -> bytes:
        data = files.get(f"{git.head}:{git.prefix}{rel}")
        if data is None:
            raise KeyError(rel)
        return data

    return Trust.from_text(text.decode("utf-8"), TRUST_FILE, read)


class _GitReader:
    """The few git calls the audit needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        prefix = self._run("rev-parse", "--show-prefix")
        self.prefix = prefix.decode().strip()
        head = self._run("rev-parse", "--verify", "-q", "HEAD", check=False).decode().strip()
        if not head:
            raise BadInput(f"{root}: the repository has no commits to audit")
        self.head = head

    def _run(self, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
        try:
            proc = subprocess.run(["git", "-c", "core.quotepath=off", *args], cwd=self.root, input=input,
                                  capture_output=True)
        except FileNotFoundError:
            raise GitError("git is not installed") from None
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            if args[0] == "rev-parse":
                raise BadInput(f"{self.root}: not a git repository")
            raise GitError(f"git {args[0]} failed: {detail[-1] if detail else proc.returncode}")
        return proc.stdout

    def log(self, *paths: str) -> list[_Commit]:
        out = self._run("log", "--first-parent", "--diff-merges=first-parent", "--no-renames", "--reverse",
                        "--format=%x1e%H%x1f%ct%x1f%an%x1f%s", "--name-status", "HEAD", "--", *paths)
        commits = []
        for chunk in out.decode("utf-8", "replace").split("\x1e")[1:]:
            lines = chunk.split("\n")
            sha, ts, author, subject = lines[0].split("\x1f", 3)
            changes = []
            for line in lines[1:]:
                if "\t" in line:
                    status, path = line.split("\t", 1)
                    changes.append((status[0], path))
            commits.append(_Commit(len(commits), sha, int(ts), author, subject, changes))
        return commits

    def ls_tree(self, directory: str) -> list[str]:
        out = self._run("ls-tree", "--full-name", "--name-only", "HEAD", directory)
        full = self.prefix + directory
        return [line[len(full):] for line in out.decode().splitlines() if line.startswith(full)]

    def cat(self, specs: list[str]) -> dict[str, bytes]:
        """Contents of ``<rev>:<path>`` specs in one ``git cat-file --batch``; missing ones absent."""
        if not specs:
            return {}
        out = self._run("cat-file", "--batch", input=("\n".join(specs) + "\n").encode())
        result = {}
        pos = 0
        for spec in specs:
            end = out.index(b"\n", pos)
            header = out[pos:end].split()
            pos = end + 1
            if len(header) == 2 and header[1] == b"missing" or len(header) < 3:
                continue
            size = int(header[2])
            if header[1] == b"blob":
                result[spec] = out[pos:pos + size]
            pos += size + 1
        return result
