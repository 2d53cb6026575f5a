"""Who could sign a record when git received it: validity from the history of the trust file.

A signer's validity never comes from a time written inside the record (its signer
chooses that time). It comes from ``environments/trust.yaml`` as git history shows it:

* a record committed in commit ``R`` (first-parent line; see
  :mod:`promotion.records.history`) verifies only if the trust file *as of* ``R`` lists
  its key (not retired) or its workflow identity;
* a signer *retired* at commit ``C`` - its key marked ``retired_at``, or the key or
  identity removed from the file - can sign nothing added at or after ``C``, even if a
  later commit lists it again (retirement is final);
* a record that is not committed yet (a new file in the work tree, or one that differs
  from ``HEAD``) is judged by the work tree's trust file, and still fails for a signer
  retired anywhere in the history.

Who may *add* a signer (bootstrap rule). Until the repository's first record is
committed (that commit included), the trust file is being set up: every signer it lists
then is a first signer. After that, a commit that trusts a new key or workflow identity,
or changes the Sigstore trusted root, counts only if it is a merged pull request - a
merge commit or a commit by GitHub's merge button
(:attr:`~promotion.records.history.Commit.merged_by_github`) that adds no record and
moves no environment file's model (the gates judge such a pull request as a governance
change). A signer first trusted any other way signs nothing, ever (a later pull request
that leaves it listed does not launder it: trust a new key through a pull request); a
trusted root changed any other way is ignored. A signer only the work tree's trust file
lists can sign an uncommitted record only before the first record (the demo's first
rollout creates the key and commits it with its record). Retiring a signer needs no
pull request: it can only take trust away.

Usage::

    from promotion.records.validity import TrustHistory
    history = TrustHistory.load(root, git, commits)   # commits: a log that includes trust.yaml
    record = verify_signature(data, history.verifier, ...)   # any signer ever trusted
    problem = history.signer_problem(record, added)    # added: Added(index, sha) or None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from promotion.errors import ConfigError
from promotion.records.trust import TRUST_FILE, Trust


@dataclass(frozen=True)
class Added:
    """Where git received a record: the first-parent commit that put its current bytes at HEAD."""

    index: int
    sha: str


@dataclass
class _State:
    index: int
    sha: str
    trust: Trust | None
    error: str | None = None
    # what this commit changed of who may sign, and whether that change counts
    gained: list[str] = field(default_factory=list)   # labels: "key 4f0c...", "workflow https://..."
    lost: list[str] = field(default_factory=list)
    root_changed: bool = False
    bootstrap: bool = False      # made before (or with) the repository's first record
    refused: str | None = None   # why the change does not count (None: it counts, or nothing to judge)


@dataclass
class TrustHistory:
    """The trust file at every first-parent commit that changed it, and the work tree's."""

    states: list[_State] = field(default_factory=list)
    working: Trust | None = None
    retired: dict[str, Added] = field(default_factory=dict)  # signer -> first commit that retired it
    verifier: Trust = field(default_factory=Trust)           # every signer ever trusted: signatures only
    refused: dict[str, Added] = field(default_factory=dict)  # signer -> commit that trusted it outside a PR
    first_record: Added | None = None                        # the repository's first record commit
    working_new: set[str] = field(default_factory=set)       # signers only the work tree adds (after it)
    _root: tuple | None = None                               # (path, json) of the trusted root that counts

    # -- building ----------------------------------------------------------------------
    @classmethod
    def from_trust(cls, trust: Trust) -> "TrustHistory":
        """No history: ``trust`` is both what verifies signatures and who is valid now."""
        return cls(working=trust, verifier=trust)

    @classmethod
    def load(cls, root: str | Path, git=None, commits=None, *, working: bool = True) -> "TrustHistory":
        """The trust history of ``root``.

        ``git`` is a :class:`~promotion.records.history.GitHistory` (None: no history) and
        ``commits`` its log including the trust file and every environment's records
        (``environments/records/``: the first record closes the bootstrap); indices of
        records must come from the same log. ``working=False`` leaves the work tree's
        trust file out (the audit judges ``HEAD`` only).
        """
        from promotion.records.chain import RECORDS_DIR

        root = Path(root)
        current = Trust.load(root) if working else None
        history = cls(working=current)
        if git is not None:
            commits = commits if commits is not None else git.log(TRUST_FILE, RECORDS_DIR + "/")
            history._read_states(git, commits)
            history.first_record = _first_record(git, commits)
            history._judge_changes(git, commits)
        history._find_retirements()
        history.verifier = history._union()
        return history

    def _read_states(self, git, commits) -> None:
        from promotion._internal import yamlio

        path = git.prefix + TRUST_FILE
        touched = [(c, status) for c in commits for status, p in c.changes if p == path]
        texts = git.cat([f"{c.sha}:{path}" for c, status in touched if status != "D"])
        wanted, parsed = [], {}
        for c, status in touched:
            text = texts.get(f"{c.sha}:{path}")
            if status == "D" or text is None:
                continue
            try:
                raw = yamlio.loads(text.decode("utf-8")).data or {}
                rels = [k.get("public_key") for k in raw.get("keys") or [] if isinstance(k, dict)]
                rels.append((raw.get("sigstore") or {}).get("trusted_root"))
            except Exception:  # a broken file is reported by Trust.from_text below
                rels = []
            parsed[c.sha] = text
            wanted += [f"{c.sha}:{git.prefix}{rel}" for rel in rels if isinstance(rel, str)]
        files = git.cat(wanted)
        for c, status in touched:
            if c.sha not in parsed:  # deleted: nobody is trusted from here on
                self.states.append(_State(c.index, c.sha, Trust()))
                continue

            def read(rel: str, sha=c.sha) -> bytes:
                data = files.get(f"{sha}:{git.prefix}{rel}")
                if data is None:
                    raise KeyError(rel)
                return data

            display = f"{TRUST_FILE} (commit {c.sha[:12]})"
            try:
                trust = Trust.from_text(parsed[c.sha].decode("utf-8", "replace"), display, read)
            except ConfigError as exc:
                self.states.append(_State(c.index, c.sha, None, exc.problems[0]))
                continue
            except RecursionError:  # nested past any parser's limit: unreadable, like a syntax error
                self.states.append(_State(c.index, c.sha, None, f"{display}: nested too deeply"))
                continue
            self.states.append(_State(c.index, c.sha, trust))

    def _judge_changes(self, git, commits) -> None:
        """Mark each change of who may sign as bootstrap, merged (counts) or refused."""
        by_sha = {c.sha: c for c in commits}
        before: dict[str, str | None] = {}
        root_before: tuple = (None, None)
        last: Trust | None = None
        for state in self.states:
            if state.trust is None:
                continue  # an unreadable file trusts nobody, but changes nobody's standing either
            now = _facts(state.trust)
            root = (state.trust.sigstore_trusted_root, state.trust.sigstore_trusted_root_json)
            gained = sorted(s for s in now if s not in before or before[s] != now[s])
            state.gained = [_label(s) for s in gained]
            state.lost = [_label(s) for s in sorted(set(before) - set(now))]
            state.root_changed = root[1] != root_before[1]
            if gained or state.root_changed:
                if self.first_record is None or state.index <= self.first_record.index:
                    state.bootstrap = True
                else:
                    state.refused = pr_problem(git, by_sha.get(state.sha))
                if state.refused is None:
                    if state.root_changed:
                        self._root = root
                else:
                    for signer in gained:
                        self.refused.setdefault(signer, Added(state.index, state.sha))
            before, root_before, last = now, root, state.trust
        if self.working is not None and self.first_record is not None:
            committed = _facts(last) if last is not None else {}
            self.working_new = {s for s, detail in _facts(self.working).items()
                                if s not in committed or committed[s] != detail}

    def _find_retirements(self) -> None:
        active: set[str] = set()
        for state in self.states:
            if state.trust is None:
                continue  # an unreadable file trusts nobody, but retires nobody either
            now = _active(state.trust)
            for signer in active - now:
                self.retired.setdefault(signer, Added(state.index, state.sha))
            active = now

    def _union(self) -> Trust:
        union = Trust()
        sources = [s.trust for s in self.states if s.trust is not None]
        if self.working is not None:
            sources.append(self.working)
        for trust in sources:
            for keyid, key in trust.keys.items():
                union.keys.setdefault(keyid, key)
            for identity in trust.identities:
                if identity not in union.identities:
                    union.identities.append(identity)
        if any(s.trust is not None for s in self.states):
            # the trusted root that counts: changed only by the bootstrap or a merged pull
            # request, and read as of that commit (never the work tree's copy of its file)
            union.sigstore_trusted_root, union.sigstore_trusted_root_json = self._root or (None, None)
        elif self.working is not None:
            union.sigstore_trusted_root = self.working.sigstore_trusted_root
            union.sigstore_trusted_root_json = self.working.sigstore_trusted_root_json
        return union

    # -- judging -----------------------------------------------------------------------
    def state_at(self, index: int) -> _State | None:
        """The trust file as of first-parent position ``index`` (None: no trust file yet)."""
        found = None
        for state in self.states:
            if state.index > index:
                break
            found = state
        return found

    def signer_problem(self, record, added: Added | None) -> str | None:
        """Why ``record``'s signer could not sign it when git received it, or None."""
        signer, label = _signer(record)
        retired = self.retired.get(signer)
        if retired is not None and (added is None or retired.index <= added.index):
            when = f"the record was added after that, in commit {added.sha[:12]}" if added is not None \
                else "the record is not committed yet"
            return f"signed by {label}, which was retired in commit {retired.sha[:12]} ({TRUST_FILE}); {when}"
        refused = self.refused.get(signer)
        if refused is not None and (added is None or refused.index <= added.index):
            return (f"signed by {label}, which commit {refused.sha[:12]} trusted outside a merged pull request "
                    f"({TRUST_FILE}): after the repository's first record, a new signer counts only once a "
                    "pull request merged it")
        if added is None and signer in self.working_new:
            return (f"signed by {label}, which only {TRUST_FILE} in the work tree lists: after the repository's "
                    f"first record (commit {self.first_record.sha[:12]}), a new signer counts only once a pull "
                    "request merged it")
        if added is None:
            trust = self.working
            if trust is None:
                state = self.states[-1] if self.states else None
                trust = state.trust if state else Trust()
            where = f"{TRUST_FILE} in the work tree"
        else:
            state = self.state_at(added.index)
            if state is None:
                return (f"signed by {label}, but there was no {TRUST_FILE} when the record was added "
                        f"in commit {added.sha[:12]}")
            if state.trust is None:
                return (f"cannot tell who could sign it: {TRUST_FILE} as of commit {state.sha[:12]} is invalid "
                        f"({state.error})")
            trust = state.trust
            where = f"{TRUST_FILE} when the record was added in commit {added.sha[:12]}"
        if signer in _active(trust):
            return None
        key = trust.keys.get(signer)
        if key is not None and key.retired_at is not None:
            return f"signed by {label}, which {where} marks retired"
        return f"signed by {label}, which {where} does not list"


def _active(trust: Trust) -> set[str]:
    cached = getattr(trust, "_active_signers", None)  # asked once per record: 10,000 records, few states
    if cached is None:
        keys = {k.keyid for k in trust.keys.values() if k.retired_at is None}
        cached = keys | {f"identity:{i.san}" for i in trust.identities}
        trust._active_signers = cached
    return cached


def _facts(trust: Trust) -> dict[str, str | None]:
    """Who ``trust`` lets sign, with what identifies each: an identity's issuer counts too."""
    facts: dict[str, str | None] = {k.keyid: None for k in trust.keys.values() if k.retired_at is None}
    for identity in trust.identities:
        facts[f"identity:{identity.san}"] = identity.issuer
    return facts


def _label(signer: str) -> str:
    return f"workflow {signer[len('identity:'):]}" if signer.startswith("identity:") else f"key {signer[:12]}"


def _first_record(git, commits) -> Added | None:
    """The first commit on the first-parent line that adds a record of any environment."""
    from promotion.records.chain import RECORDS_DIR, parse_name
    from promotion.records.trust import KEYS_DIR

    records, keys = git.prefix + RECORDS_DIR + "/", git.prefix + KEYS_DIR + "/"
    for commit in commits:
        for status, path in commit.changes:
            if status == "A" and path.startswith(records) and not path.startswith(keys) \
                    and parse_name(path.rsplit("/", 1)[-1]) is not None:
                return Added(commit.index, commit.sha)
    return None


def pr_problem(git, commit) -> str | None:
    """Why ``commit`` is not what merging a governance pull request leaves, or None.

    It must be a merge commit or one GitHub's merge button made, add no record and move
    no environment file's model (a promotion never changes how it is judged or signed).
    """
    from promotion.records.chain import RECORDS_DIR, parse_name
    from promotion.records.history import load_yaml_blob, model_from
    from promotion.records.trust import KEYS_DIR

    if commit is None:
        return "not on the first-parent line"
    if not commit.merged_by_github:
        return "not a merged pull request"
    changes = git.first_parent_changes(commit.sha, "environments/")
    if changes is None:
        return "not a merged pull request"
    records, keys = git.prefix + RECORDS_DIR + "/", git.prefix + KEYS_DIR + "/"
    for status, path in changes:
        if status == "A" and path.startswith(records) and not path.startswith(keys) \
                and parse_name(path.rsplit("/", 1)[-1]) is not None:
            return f"it also adds the record {path[len(git.prefix):]}"
    env_dir = git.prefix + "environments/"
    from promotion.config import environment_of_path

    env_files = [p for _, p in changes if p.startswith(env_dir) and environment_of_path(p[len(git.prefix):])]
    blobs = git.cat([f"{commit.sha}{side}:{p}" for p in env_files for side in ("^1", "")])
    for path in env_files:
        old = model_from(load_yaml_blob(blobs.get(f"{commit.sha}^1:{path}")))
        new = model_from(load_yaml_blob(blobs.get(f"{commit.sha}:{path}")))
        if old != new:
            return f"it also moves the model of {path[len(git.prefix):]}"
    return None


def _signer(record) -> tuple[str, str]:
    if record.signer_kind == "local":
        return record.keyid, f"key {record.keyid[:12]}"
    return f"identity:{record.signer}", f"workflow {record.signer}"
