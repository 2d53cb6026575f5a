"""Verify one record file: signature (either kind), signer validity, schema and file name.

A signature proves who signed; whether that signer could sign *this* record depends on
when git received it (:mod:`promotion.records.validity`), never on the record's own
``recorded_at``.

Usage::

    from promotion.records.verify import verify_record
    record = verify_record("environments/records/prod/000003-promote-v7.json", root)
    print(record.signer, record.added)    # added: the commit that brought it, None if uncommitted
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion._internal.digest import bytes_digest
from promotion.errors import VerificationError
from promotion.records._json import MAX_RECORD_BYTES, UnreadableRecord, load_json
from promotion.records.chain import name_problem
from promotion.records.signers import verify_document
from promotion.records.statement import PAYLOAD_TYPE, decode_payload


@dataclass(frozen=True)
class VerifiedRecord:
    """A record whose signature, signer and content checked out."""

    path: Path
    statement: dict
    predicate: dict
    signer: str            # "key:<keyid>" or the workflow identity that signed it
    digest: str            # sha256 of the record file's bytes (what the next record links to)
    signer_kind: str = "local"
    keyid: str | None = None
    added: Any = None      # validity.Added: the commit that added it; None when not committed

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sequence(self) -> int:
        return self.predicate["sequence"]

    @property
    def action(self) -> str:
        return self.predicate["action"]

    @property
    def model(self) -> str:
        return self.predicate["model"]["name"]

    @property
    def version(self) -> int:
        return self.predicate["model"]["version"]

    @property
    def recorded_at(self) -> str:
        return self.predicate["recorded_at"]


def verify_signature(data: bytes, trust, *, path: Path, display: str | None = None) -> VerifiedRecord:
    """Signature, content and file name only: ``trust`` says which signers are known at all."""
    display = display or str(path)
    document = load_json(data, display)
    try:
        check = verify_document(document, trust, display)
        if check.payload_type != PAYLOAD_TYPE:
            raise VerificationError(f"{display}: payload type is {check.payload_type!r}, expected {PAYLOAD_TYPE}")
        statement = decode_payload(check.payload, display)
    except RecursionError:
        raise UnreadableRecord(f"{display}: nested too deeply to be a record") from None
    predicate = statement["predicate"]
    problem = name_problem(Path(path).name, predicate)
    if problem:
        raise VerificationError(f"{display}: {problem}")
    return VerifiedRecord(Path(path), statement, predicate, check.signer, bytes_digest(data), check.kind, check.keyid)


def check_signer(record: VerifiedRecord, history, added, display: str) -> VerifiedRecord:
    """``record`` with ``added`` set, if its signer was valid when git received it."""
    problem = history.signer_problem(record, added)
    if problem:
        raise VerificationError(f"{display}: {problem}")
    if added is None:
        return record
    return VerifiedRecord(record.path, record.statement, record.predicate, record.signer, record.digest,
                          record.signer_kind, record.keyid, added)


def verify_bytes(data: bytes, trust, *, path: Path, display: str | None = None, added=None) -> VerifiedRecord:
    """Verify a record file's content; every failure names ``display`` (default: ``path``).

    ``trust`` is a :class:`~promotion.records.trust.Trust` (its keys must be active: how
    a record about to be written is judged) or a
    :class:`~promotion.records.validity.TrustHistory`; ``added`` is the commit that added
    the record (:class:`~promotion.records.validity.Added`), None if it is not committed.
    """
    from promotion.records.validity import TrustHistory

    history = trust if isinstance(trust, TrustHistory) else TrustHistory.from_trust(trust)
    display = display or str(path)
    record = verify_signature(data, history.verifier, path=path, display=display)
    return check_signer(record, history, added, display)


def read_record(path: Path, display: str) -> bytes:
    """A record file's bytes; unreadable files raise :class:`UnreadableRecord`."""
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_RECORD_BYTES + 1)  # load_json refuses anything longer
    except FileNotFoundError:
        raise VerificationError(f"{display}: no such record") from None
    except IsADirectoryError:
        raise UnreadableRecord(f"{display}: is a directory, not a record") from None
    except OSError as exc:
        raise UnreadableRecord(f"{display}: cannot read ({exc.strerror})") from None


def verify_record(path: str | Path, root: str | Path, trust=None) -> VerifiedRecord:
    """Verify the record file at ``path`` against ``root``'s trust history.

    The signer must have been valid when git received the record (the trust file as of
    the commit that added it, see :mod:`promotion.records.validity`); a record not yet
    committed is judged by the work tree's trust file. Passing ``trust`` (a ``Trust`` or
    ``TrustHistory``) skips reading git. Raises
    :class:`~promotion.errors.VerificationError` with a message naming the file.
    """
    path = Path(path)
    root = Path(root)
    display = display_path(path, root)
    data = read_record(path, display)
    if trust is not None:
        return verify_bytes(data, trust, path=path, display=display)
    from promotion.records.store import record_history

    history, added = record_history(root, [path])
    return verify_bytes(data, history, path=path, display=display, added=added.get(path))


def display_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` for messages (as given when it lies elsewhere)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)
