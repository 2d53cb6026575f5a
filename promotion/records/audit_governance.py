"""The audit's look at the files that decide how a promotion is judged and who signs it.

**Trust file.** Every change of ``environments/trust.yaml`` is a ``trust`` entry of the
timeline, judged by :mod:`promotion.records.validity` (the bootstrap rule): bootstrap,
merged through a pull request (also listed as a governance change), or a violation naming
the commit and the key, workflow or trusted root it added.

**Policy file.** The policy (``policy:`` in the environment file, e.g. ``policies/prod.yaml``) decides the
gates, the approvals and the promotion path; weakening it by hand weakens every promotion
after it. The audit reads its first-parent history, using at each point the path the
environment file named then:

* the content at the environment file's first commit is the baseline;
* every later change of that file (or its deletion) is a *governance change*, judged by
  the rule of the environment file's other fields: accepted only from a merged pull
  request (merge commit, or GitHub's merge button) that moves no model field and adds no
  record, and listed with its commit and author; anything else is a violation naming
  the commit and the file;
* every promote record's ``policy_digest`` must be the sha256 of the policy file as it
  stood at some point between the record's ``source_commit`` and the commit that added
  it (the rollout judges with the policy at ``HEAD`` when it runs); a record that claims
  another policy is a violation. When the file did not exist at the source commit there
  is nothing to compare (no rollout could have loaded it).

Usage (from :func:`promotion.records.audit.audit`)::

    rel = policy_rel(env_doc)                             # the path one environment file names
    check(report, git, commits, env, timeline, ...)      # violations, governance, timeline
    report.timeline.extend(trust_entries(report, history, commits))
"""

from __future__ import annotations

import hashlib
import posixpath


def policy_rel(doc) -> str | None:
    """The policy path an environment file's data names, normalised; None when it names
    none or one no repository path can be (absolute, outside, or not a plain path)."""
    value = doc.get("policy") if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value or value.startswith("/"):
        return None
    if any(ord(ch) < 32 for ch in value):
        return None  # a line break would split a git batch request
    rel = posixpath.normpath(value)
    if rel.startswith("../") or rel in (".", ".."):
        return None
    return rel


def check(report, git, commits, env: str, timeline: list[tuple], model_commits: set[str],
          record_commits: set[str], promotes: list[tuple]) -> None:
    """Judge the policy file's changes and each promote record's policy digest.

    ``timeline`` is ``[(commit index, policy path or None)]`` in order, one per state of
    the environment file (the first is the baseline); ``promotes`` is
    ``[(display, record, source Commit, added Commit)]`` for verified promote records
    whose source change was found.
    """
    from promotion.records.audit import Violation

    if not timeline or all(path is None for _, path in timeline):
        return
    baseline = timeline[0][0]
    touches: dict[str, list[tuple]] = {}   # path -> [(index, sha, status)], oldest first
    paths = {git.prefix + p: p for _, p in timeline if p}
    for commit in commits:
        for status, path in commit.changes:
            if path in paths:
                touches.setdefault(paths[path], []).append((commit.index, commit.sha, status))

    for commit in commits:
        if commit.index <= baseline:
            continue
        rel = _at(timeline, commit.index)
        if rel is None or not any(index == commit.index for index, _, _ in touches.get(rel, [])):
            continue
        status = next(s for i, _, s in touches[rel] if i == commit.index)
        what = "was deleted" if status == "D" else "changed"
        if commit.sha in model_commits:
            why = f"{what} in a commit that changes the model: a promotion never changes how it is judged"
        elif commit.sha in record_commits:
            why = f"{what} in a commit that adds a record: records change only the model"
        elif not commit.merged_by_github:
            why = f"the policy of {env} {what} outside a merged pull request (hand edit of a governance file)"
        else:
            entry = _entry(commit, rel, "governance", f"governance change: {rel} {what} "
                                                      f"(merged: {commit.subject[:80]})")
            report.timeline.append(entry)
            report.governance.append({"commit": commit.sha, "author": commit.author, "fields": [rel],
                                      "subject": commit.subject, "when": entry["when"]})
            continue
        report.timeline.append(_entry(commit, rel, "violation", f"{rel} {what} by hand"))
        report.violations.append(Violation(f"{rel}: {why}", commit.sha))

    wanted, checks = [], []
    for display, record, source, added in promotes:
        rel = _at(timeline, source.index)
        if rel is None:
            continue
        states = [t for t in touches.get(rel, []) if t[0] <= added.index]
        before = [t for t in states if t[0] <= source.index]
        window = before[-1:] + [t for t in states if t[0] > source.index]
        if not before or before[-1][2] == "D":
            continue  # no policy file at the source commit: nothing to compare
        specs = [f"{sha}:{git.prefix}{rel}" for _, sha, status in window if status != "D"]
        wanted += specs
        checks.append((display, record, source, added, rel, specs))
    blobs = git.cat(sorted(set(wanted))) if wanted else {}
    for display, record, source, added, rel, specs in checks:
        digests = ["sha256:" + hashlib.sha256(blobs[s]).hexdigest() for s in specs if s in blobs]
        claimed = record.predicate.get("policy_digest")
        if claimed in digests:
            continue
        said = f"claims policy {claimed}" if claimed else "names no policy_digest"
        has = f"has digest {digests[0]}" if digests else "cannot be read"
        report.violations.append(Violation(
            f"{display}: record {said}, but {rel} at its source commit {source.sha[:12]} {has}: "
            "it was not judged by the policy in force", added.sha))


def trust_entries(report, history, commits) -> list[dict]:
    """Changes of who may sign, as judged by :mod:`promotion.records.validity`: listed in
    the timeline; merged ones as governance changes, the others as violations."""
    from promotion.records.audit import Violation, _iso
    from promotion.records.trust import TRUST_FILE

    by_sha = {c.sha: c for c in commits}
    entries = []
    for state in history.states:
        commit = by_sha.get(state.sha)
        if commit is None:
            continue
        what = ", ".join(p for p in (
            ("trusts " + ", ".join(state.gained)) if state.gained else "",
            "changes the Sigstore trusted root" if state.root_changed else "") if p)
        note = "; ".join(p for p in (what, ("retires " + ", ".join(state.lost)) if state.lost else "",
                                     f"invalid: {state.error}" if state.trust is None else "") if p)
        note = note or "no change of signers"
        status = "governance"
        if state.refused is not None:
            status = "violation"
            note += f" (outside a merged pull request: {state.refused})"
            report.violations.append(Violation(
                f"{TRUST_FILE}: {what} outside a merged pull request ({state.refused}): after the repository's "
                "first record, a new signer counts only once a pull request merged it, so it signs nothing",
                commit.sha))
        elif state.bootstrap:
            note += " (bootstrap: set up before the repository's first record)"
        elif what:
            report.governance.append({"commit": commit.sha, "author": commit.author, "fields": [f"{TRUST_FILE} ({what})"],
                                      "subject": commit.subject, "when": _iso(commit.time)})
        entries.append({"_index": commit.index, "kind": "trust", "when": _iso(commit.time), "commit": commit.sha,
                        "action": "trust", "model": None, "version": None, "approvers": [], "keys": [],
                        "signer": commit.author, "record": TRUST_FILE, "status": status, "note": note})
    return entries


def _at(timeline: list[tuple], index: int) -> str | None:
    """The policy path in force at first-parent position ``index``."""
    found = None
    for at, rel in timeline:
        if at > index:
            break
        found = rel
    return found


def _entry(commit, rel: str, status: str, note: str) -> dict:
    from promotion.records.audit import _iso

    return {"_index": commit.index, "kind": "policy", "when": _iso(commit.time), "commit": commit.sha,
            "action": "policy", "model": None, "version": None, "approvers": [], "keys": [],
            "signer": commit.author, "record": rel, "status": status, "note": note}
