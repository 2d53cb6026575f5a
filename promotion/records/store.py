"""Writing records and reading an environment's verified chain.

Whether a record's signer could sign it is decided by when git received the record
(:mod:`promotion.records.validity`): :func:`record_history` reads that for a set of
record files with a few git calls, however many records there are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from promotion.errors import RecordError, VerificationError
from promotion.records.chain import RECORDS_DIR, link_problems, parse_name, record_name, records_dir
from promotion.records.statement import ACTIONS, PAYLOAD_TYPE, build_statement, encode
from promotion.records.trust import KEYS_DIR, TRUST_FILE, Trust
from promotion.records.verify import VerifiedRecord, check_signer, read_record, verify_bytes, verify_signature


def _create_new(path: Path, data: bytes) -> None:
    """Write ``path`` atomically, failing if it exists (two writers never share a sequence)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise RecordError(f"{path.name} already exists; another record was written concurrently") from None
    finally:
        tmp.unlink(missing_ok=True)


def dumps(document: dict) -> bytes:
    """A record file's bytes (stable: the chain links to their digest)."""
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def record_files(root: str | Path, env: str) -> list[Path]:
    """Record files of ``env`` in sequence order; stray files raise VerificationError."""
    directory = records_dir(root, env)
    if not directory.is_dir():
        return []
    files = []
    for path in directory.iterdir():
        if path.name.startswith("."):
            continue
        if parse_name(path.name) is None:
            raise VerificationError(f"{path.relative_to(Path(root)).as_posix()}: unexpected file in the records "
                                    "directory (records are named <seq>-<action>-v<version>.json)")
        files.append(path)
    return sorted(files, key=lambda p: p.name)


def record_history(root: str | Path, paths: list[Path]):
    """``(TrustHistory, {path: Added})`` for record files under ``root``.

    A path maps to the first-parent commit that put its current bytes at ``HEAD``; paths
    that are not committed, differ from ``HEAD`` or lie outside the repository are
    absent (judged by the work tree's trust file). Outside git, there is no history.
    """
    from promotion.records.history import GitHistory
    from promotion.records.validity import Added, TrustHistory

    root = Path(root)
    git = GitHistory.open(root)
    if git is None:
        return TrustHistory.load(root), {}
    base = root.resolve()
    rels: dict[Path, str] = {}
    for path in paths:
        try:
            rels[path] = Path(path).resolve().relative_to(base).as_posix()
        except ValueError:
            continue  # not in this repository: judged as uncommitted
    dirs = sorted({rel.rsplit("/", 1)[0] + "/" if "/" in rel else rel for rel in rels.values()})
    # every environment's records: the repository's first record closes the trust file's bootstrap
    commits = git.log(TRUST_FILE, RECORDS_DIR + "/", *dirs)
    history = TrustHistory.load(root, git, commits)
    if not rels:
        return history, {}
    touched: dict[str, Added] = {}
    for commit in commits:
        for status, repo_path in commit.changes:
            if status == "D":
                touched.pop(repo_path, None)
            else:
                touched[repo_path] = Added(commit.index, commit.sha)
    dirty = git.uncommitted(*dirs)
    added = {}
    for path, rel in rels.items():
        repo_path = git.prefix + rel
        if repo_path in touched and repo_path not in dirty:
            added[path] = touched[repo_path]
    return history, added


def same_decision(record: VerifiedRecord, predicate: dict) -> bool:
    """Whether ``record`` already states the decision ``predicate`` describes.

    One decision is one (action, model, version, digest, version replaced, source
    commit) in one environment; without a source commit nothing identifies a decision.
    """
    p = record.predicate
    keys = ("action", "to_environment", "replaced_version", "source_commit")
    return predicate.get("source_commit") is not None and all(p.get(k) == predicate.get(k) for k in keys) \
        and p["model"] == predicate["model"]


def record_related_paths(root: str | Path, env: str) -> list[Path]:
    """The paths a caller must ``git add`` after :func:`write_record` (those that exist)."""
    root = Path(root)
    candidates = [records_dir(root, env), root / KEYS_DIR, root / TRUST_FILE]
    return [p for p in candidates if p.exists()]


def write_record(
    root: str | Path,
    env: str,
    *,
    action: str,
    model: str,
    version: int,
    digest: str,
    from_env: str | None,
    to_env: str,
    checks: list[dict],
    approvers: list[dict],
    steps: list[dict],
    rollback_target: int | None,
    data_snapshot: str | None,
    code_commit: str | None,
    policy_digest: str | None,
    source_commit: str | None,
    reason: str | None = None,
    evidence: dict | None = None,
    signer=None,
    replaced_version: int | None = None,
    hooks: list[dict] | None = None,
    interventions: list[dict] | None = None,
) -> Path:
    """Sign and store the next record of ``env``; returns its path (not committed).

    ``hooks`` (the lifecycle hooks' results) and ``interventions`` (operators' resume or
    abort: action, reason, actor) enter the predicate only when there are any.

    ``version``/``digest`` are what the record puts in place (for a rollback, the
    version reverted to); ``replaced_version`` is the version taken out of service,
    when known. ``signer`` is a :class:`~promotion.records.signers.Signer`, a kind name
    (``"local"``, ``"sigstore"``) or None for the default. Commit the returned path and
    :func:`record_related_paths`.
    """
    from promotion.records.signers import default_kind, signer_for

    root = Path(root)
    if action not in ACTIONS:
        raise RecordError(f"unknown record action {action!r}; expected one of: {', '.join(ACTIONS)}")
    if to_env != env:
        raise RecordError(f"record for environment {env!r} names to_env {to_env!r}")
    if signer is None or isinstance(signer, str):
        signer = signer_for(signer or default_kind())
    signer.prepare(root)
    files = record_files(root, env)
    history, added = record_history(root, files[-1:])
    previous = None
    sequence = 1
    tip = None
    if files:
        display = files[-1].relative_to(root).as_posix()
        # never extend a chain whose tip is bad
        tip = verify_bytes(read_record(files[-1], display), history, path=files[-1], display=display,
                           added=added.get(files[-1]))
        previous = {"name": tip.name, "digest": tip.digest}
        sequence = tip.sequence + 1
    statement = build_statement(
        sequence=sequence, action=action, model=model, version=version, digest=digest,
        from_env=from_env, to_env=to_env, checks=checks, approvers=approvers, steps=steps,
        rollback_target=rollback_target, replaced_version=replaced_version,
        data_snapshot=data_snapshot, code_commit=code_commit, policy_digest=policy_digest,
        source_commit=source_commit, reason=reason, evidence=evidence, previous=previous,
        hooks=hooks, interventions=interventions,
    )
    if tip is not None and same_decision(tip, statement["predicate"]):
        # a rerun after a crash between writing the record and saving state: one
        # decision keeps one record (the audit flags a second one)
        return tip.path
    data = dumps(signer.sign(encode(statement), PAYLOAD_TYPE))
    path = records_dir(root, env) / record_name(sequence, action, version)
    try:
        verify_bytes(data, history, path=path, display=path.relative_to(root).as_posix())
    except VerificationError as exc:
        raise RecordError(f"the signed record would not verify, so it was not written: {exc.message}") from None
    _create_new(path, data)
    return path


_PARALLEL_FROM = 1000
_WORKER_TRUST: Trust | None = None  # inherited by forked workers: every signer ever trusted


def _display(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _verify_chunk(root: Path, files: list[Path]) -> list:
    """Check signatures in a worker; return small picklable tuples (full objects cost more to ship back)."""
    trust = _WORKER_TRUST if _WORKER_TRUST is not None else record_history(root, files)[0].verifier
    out = []
    folder = _display(root, files[0].parent) + "/" if files else ""  # one directory: no per-file path maths
    for path in files:
        try:
            display = folder + path.name
            r = verify_signature(read_record(path, display), trust, path=path, display=display)
        except VerificationError as exc:
            out.append(exc.message)
            break
        out.append((encode(r.statement), r.signer, r.digest, r.signer_kind, r.keyid))
    return out


def _verify_parallel(root: Path, files: list[Path], trust: Trust) -> list[VerifiedRecord]:
    """Check signatures of long chains on every core: they dominate and are independent."""
    global _WORKER_TRUST
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 1, 8)
    size = -(-len(files) // workers)
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    _WORKER_TRUST = trust
    try:
        with ProcessPoolExecutor(max_workers=len(chunks), mp_context=context) as pool:
            results = list(pool.map(_verify_chunk, [root] * len(chunks), chunks))
    finally:
        _WORKER_TRUST = None
    records = []
    for chunk, result in zip(chunks, results):
        for path, item in zip(chunk, result):
            if isinstance(item, str):
                raise VerificationError(item)
            payload, signer, digest, kind, keyid = item
            statement = json.loads(payload)
            records.append(VerifiedRecord(path, statement, statement["predicate"], signer, digest, kind, keyid))
    return records


class RecordStore:
    """The verified record chain of one environment.

    Usage::

        store = RecordStore(root, "prod")
        for record in store.records():       # verified, in order, chain checked
            print(record.name, record.action, record.version, record.signer)
        store.last_known_good("fraud-detector")
        store.has_promotion("fraud-detector", 7)
    """

    def __init__(self, root: str | Path, env: str, trust=None) -> None:
        """``trust`` (a ``Trust`` or ``TrustHistory``) replaces reading the trust history from git."""
        self.root = Path(root)
        self.env = env
        self._trust = trust
        self._records: list[VerifiedRecord] | None = None

    def records(self) -> list[VerifiedRecord]:
        """Every record, verified and chain-checked; the first problem raises VerificationError."""
        if self._records is None:
            files = record_files(self.root, self.env)
            if self._trust is not None:
                from promotion.records.validity import TrustHistory

                history = self._trust if isinstance(self._trust, TrustHistory) else TrustHistory.from_trust(self._trust)
                added = {}
            else:
                history, added = record_history(self.root, files)
            folder = f"{RECORDS_DIR}/{self.env}/"
            if len(files) >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
                signed = _verify_parallel(self.root, files, history.verifier)
            else:
                signed = [verify_signature(read_record(p, folder + p.name), history.verifier, path=p,
                                           display=folder + p.name) for p in files]
            # whether each signer could sign: judged here, from git, never from the record's time
            records = [check_signer(r, history, added.get(r.path), folder + r.path.name) for r in signed]
            problems = link_problems(records, self.env)
            if problems:
                record, message = problems[0]
                raise VerificationError(f"{record.path.relative_to(self.root).as_posix()}: {message}")
            self._records = records
        return self._records

    def latest(self) -> VerifiedRecord | None:
        records = self.records()
        return records[-1] if records else None

    def last_known_good(self, model: str, excluding: int | None = None) -> int | None:
        """The version of ``model`` most recently promoted here and not rolled back since.

        A version counts as rolled back when a later rollback or reject record takes it
        out of service (its ``replaced_version``, or for a rollback without one, the
        version that was in place before it). ``excluding`` skips one version (pass the
        running version to get a rollback target).
        """
        records = self.records()
        away: list[int | None] = []
        running = None
        for record in records:
            replaced = record.predicate.get("replaced_version")
            if record.action in ("rollback", "reject"):
                if replaced is None and record.action == "rollback":
                    replaced = running
                away.append(replaced if replaced != record.version else None)
            else:
                away.append(None)
            running = record.version if record.model == model else None
        rolled_back_later: set[int] = set()
        for record, gone in zip(reversed(records), reversed(away)):
            if record.model != model:
                continue
            if gone is not None:
                rolled_back_later.add(gone)
            if record.action == "promote" and record.version not in rolled_back_later and record.version != excluding:
                return record.version
        return None

    def has_promotion(self, model: str, version: int) -> VerifiedRecord | None:
        """The latest valid promote record of ``model`` ``version`` into this environment."""
        for record in reversed(self.records()):
            if record.action == "promote" and record.model == model and record.version == version:
                return record
        return None
