"""Writing records and reading an environment's verified chain."""

from __future__ import annotations

import json
import os
from pathlib import Path

from promotion.errors import RecordError, VerificationError
from promotion.records.chain import link_problems, parse_name, record_name, records_dir
from promotion.records.statement import ACTIONS, PAYLOAD_TYPE, build_statement, encode
from promotion.records.trust import KEYS_DIR, TRUST_FILE, Trust
from promotion.records.verify import VerifiedRecord, verify_bytes, verify_record


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
) -> Path:
    """Sign and store the next record of ``env``; returns its path (not committed).

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
    trust = Trust.load(root)
    files = record_files(root, env)
    previous = None
    sequence = 1
    if files:
        tip = verify_record(files[-1], root, trust)  # never extend a chain whose tip is bad
        previous = {"name": tip.name, "digest": tip.digest}
        sequence = tip.sequence + 1
    statement = build_statement(
        sequence=sequence, action=action, model=model, version=version, digest=digest,
        from_env=from_env, to_env=to_env, checks=checks, approvers=approvers, steps=steps,
        rollback_target=rollback_target, replaced_version=replaced_version,
        data_snapshot=data_snapshot, code_commit=code_commit, policy_digest=policy_digest,
        source_commit=source_commit, reason=reason, evidence=evidence, previous=previous,
    )
    data = dumps(signer.sign(encode(statement), PAYLOAD_TYPE))
    path = records_dir(root, env) / record_name(sequence, action, version)
    try:
        verify_bytes(data, trust, path=path, display=path.relative_to(root).as_posix())
    except VerificationError as exc:
        raise RecordError(f"the signed record would not verify, so it was not written: {exc.message}") from None
    _create_new(path, data)
    return path


_PARALLEL_FROM = 1000


def _verify_chunk(root: Path, files: list[Path]) -> list:
    """Verify in a worker; return small picklable tuples (full objects cost more to ship back)."""
    trust = Trust.load(root)
    out = []
    for path in files:
        try:
            r = verify_record(path, root, trust)
        except VerificationError as exc:
            out.append(exc.message)
            break
        out.append((encode(r.statement), r.signer, r.digest, r.signer_kind, r.keyid))
    return out


def _verify_parallel(root: Path, files: list[Path]) -> list[VerifiedRecord]:
    """Verify long chains on every core: signature checks dominate and are independent."""
    import multiprocessing
    import sys
    from concurrent.futures import ProcessPoolExecutor

    workers = min(os.cpu_count() or 1, 8)
    size = -(-len(files) // workers)
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(max_workers=len(chunks), mp_context=context) as pool:
        results = list(pool.map(_verify_chunk, [root] * len(chunks), chunks))
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

    def __init__(self, root: str | Path, env: str, trust: Trust | None = None) -> None:
        self.root = Path(root)
        self.env = env
        self._trust = trust
        self._records: list[VerifiedRecord] | None = None

    @property
    def trust(self) -> Trust:
        if self._trust is None:
            self._trust = Trust.load(self.root)
        return self._trust

    def records(self) -> list[VerifiedRecord]:
        """Every record, verified and chain-checked; the first problem raises VerificationError."""
        if self._records is None:
            files = record_files(self.root, self.env)
            if len(files) >= _PARALLEL_FROM and (os.cpu_count() or 1) > 1:
                records = _verify_parallel(self.root, files)
            else:
                records = [verify_record(p, self.root, self.trust) for p in files]
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
