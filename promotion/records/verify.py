"""Verify one record file: signature (either kind), trust period, schema and file name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from promotion._internal.digest import bytes_digest
from promotion.errors import VerificationError
from promotion.records.chain import name_problem
from promotion.records.signers import verify_document
from promotion.records.statement import PAYLOAD_TYPE, decode_payload, parse_time


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


def verify_bytes(data: bytes, trust, *, path: Path, display: str | None = None) -> VerifiedRecord:
    """Verify a record file's content; every failure names ``display`` (default: ``path``)."""
    display = display or str(path)
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise VerificationError(f"{display}: not JSON (not a signed record)") from None
    check = verify_document(document, trust, display)
    if check.payload_type != PAYLOAD_TYPE:
        raise VerificationError(f"{display}: payload type is {check.payload_type!r}, expected {PAYLOAD_TYPE}")
    statement = decode_payload(check.payload, display)
    predicate = statement["predicate"]
    key = check.trusted_key
    if key is not None:
        when = parse_time(predicate["recorded_at"])
        if not key.valid_at(when):
            if when < key.valid_from:
                raise VerificationError(f"{display}: signed by key {key.keyid[:12]} at {predicate['recorded_at']}, "
                                        f"before the key became valid ({key.valid_from.isoformat()})")
            raise VerificationError(f"{display}: signed by key {key.keyid[:12]} at {predicate['recorded_at']}, "
                                    f"after the key was retired ({key.retired_at.isoformat()})")
    problem = name_problem(Path(path).name, predicate)
    if problem:
        raise VerificationError(f"{display}: {problem}")
    return VerifiedRecord(Path(path), statement, predicate, check.signer, bytes_digest(data), check.kind, check.keyid)


def verify_record(path: str | Path, root: str | Path, trust=None) -> VerifiedRecord:
    """Verify the record file at ``path`` against ``root``'s trust file.

    Raises :class:`~promotion.errors.VerificationError` with a message naming the file.
    """
    from promotion.records.trust import Trust

    path = Path(path)
    display = _display(path, Path(root))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VerificationError(f"{display}: no such record") from None
    except OSError as exc:
        raise VerificationError(f"{display}: cannot read ({exc.strerror})") from None
    return verify_bytes(data, trust if trust is not None else Trust.load(root), path=path, display=display)


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(path)
