"""Local ed25519 signing keys: where they live, how they are created, registered, rotated.

The private key is read from ``$PROMOTION_SIGNING_KEY`` (PEM text) or the file
``<state>/keys/signing.key`` (state: ``$PROMOTION_STATE`` or ``<root>/.promotion``). Its
public half is committed as ``environments/records/keys/<keyid>.pub`` and listed in
``environments/trust.yaml``. Rotation marks the old key retired in the trust file (from
the commit that records it, the key signs nothing more; records it signed before keep
verifying) and destroys its private key, so the key id cannot sign again. Once the
repository has a record, a new key signs only after the commit that trusts it merged
through a pull request (:mod:`promotion.records.validity`): rotate on a branch.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from promotion._internal.atomic import atomic_write
from promotion.errors import BadInput, RecordError

ENV_VAR = "PROMOTION_SIGNING_KEY"


def private_key_path(root: str | Path) -> Path:
    from promotion._internal.paths import state_dir

    return state_dir(root) / "keys" / "signing.key"


def public_key_relpath(keyid: str) -> str:
    from promotion.records.trust import KEYS_DIR

    return f"{KEYS_DIR}/{keyid}.pub"


def _signer_from_pem(pem: bytes, source: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    try:
        private = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise RecordError(f"{source}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise RecordError(f"{source}: signing keys must be ed25519")
    return CryptoSigner(private)


def load_signing_key(root: str | Path, *, create: bool = True):
    """``(CryptoSigner, source, created)``; creates the key file when none exists and ``create``."""
    pem = os.environ.get(ENV_VAR)
    if pem:
        return _signer_from_pem(pem.encode(), f"${ENV_VAR}"), f"${ENV_VAR}", False
    path = private_key_path(root)
    if path.exists():
        return _signer_from_pem(path.read_bytes(), str(path)), str(path), False
    if not create:
        raise RecordError(f"no signing key: set ${ENV_VAR} or run `promotion keys create` (looked for {path})")
    return generate(root), str(path), True


def generate(root: str | Path, *, replace: bool = False):
    """Create a new ed25519 key in the key file (mode 0600) and return its CryptoSigner."""
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner

    path = private_key_path(root)
    if path.exists() and not replace:
        raise BadInput(f"{path} already exists; use `promotion keys rotate` to replace it")
    signer = CryptoSigner.generate_ed25519()
    pem = signer._private_key.private_bytes(  # the public API offers only the pyca object
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write(path, pem, mode=0o600)  # private: readable by its owner only
    return signer


def public_pem(signer) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return signer.public_key._crypto_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def register(root: str | Path, signer, *, valid_from: datetime | None = None) -> list[Path]:
    """Commit-ready: write the public key file and add it to the trust file if missing.

    Returns the paths written (empty when the key was already trusted). A retired key
    (marked so in the trust file, or retired at any commit of its history) raises
    :class:`RecordError`: it must not sign again.
    """
    from promotion.records.history import GitHistory
    from promotion.records.trust import TRUST_FILE, Trust, TrustedKey
    from promotion.records.validity import TrustHistory

    root = Path(root)
    trust = Trust.load(root)
    keyid = signer.public_key.keyid
    git = GitHistory.open(root)
    retired = TrustHistory.load(root, git, git.log(TRUST_FILE) if git else None).retired.get(keyid)
    if retired is not None:
        raise RecordError(f"signing key {keyid[:12]} was retired in commit {retired.sha[:12]} ({TRUST_FILE}); "
                          "it can no longer sign (run `promotion keys rotate`)")
    known = trust.keys.get(keyid)
    if known is not None:
        if known.retired_at is not None:
            raise RecordError(f"signing key {keyid[:12]} was retired at {known.retired_at.isoformat()}; "
                              "it can no longer sign (run `promotion keys rotate`)")
        return []
    rel = public_key_relpath(keyid)
    atomic_write(root / rel, public_pem(signer))
    trust.keys[keyid] = TrustedKey(keyid, rel, valid_from or datetime.now(timezone.utc), None, signer.public_key)
    return [root / rel, trust.save(root)]


def destroy(path: Path) -> None:
    """Overwrite a private key file with random bytes, flush it to disk, then unlink it.

    What a copy-on-write file system or a backup kept is beyond reach; the key is also
    retired in the trust file, which is what makes any surviving copy useless.
    """
    size = path.stat().st_size
    with open(path, "r+b", buffering=0) as fh:
        fh.write(os.urandom(max(size, 1)))
        os.fsync(fh.fileno())
    path.unlink()


def rotate(root: str | Path) -> tuple[list[str], object, list[Path]]:
    """Retire every active key, destroy the key file's private key, create and register a new one.

    Returns ``(retired keyids, new CryptoSigner, paths written)``. The retirement takes
    effect from the commit that records the trust file: commit records signed by the
    old key before that commit.
    """
    from promotion.records.trust import Trust, TrustedKey

    if os.environ.get(ENV_VAR):
        raise BadInput(f"${ENV_VAR} is set; rotate by generating a key with `promotion keys create` "
                       f"elsewhere and updating the secret, or unset it to rotate the key file")
    root = Path(root)
    _refuse_uncommitted_records(root)
    now = datetime.now(timezone.utc)
    trust = Trust.load(root)
    retired = []
    for key in trust.active_keys():
        trust.keys[key.keyid] = TrustedKey(key.keyid, key.public_key, key.valid_from, now, key.key)
        retired.append(key.keyid)
    path = private_key_path(root)
    trust.save(root)
    if path.exists():
        # a retired key that still exists can still sign: the evidence is the records, not the key
        destroy(path)
    for stale in path.parent.glob("retired-*.key"):  # kept by earlier versions of rotate
        destroy(stale)
    signer = generate(root)
    paths = register(root, signer, valid_from=now)
    return retired, signer, paths or [root / "environments" / "trust.yaml"]


def _refuse_uncommitted_records(root: Path) -> None:
    """Records not committed before the retirement would be judged after it: refuse, change nothing."""
    from promotion.records.chain import RECORDS_DIR, parse_name
    from promotion.records.history import GitHistory

    git = GitHistory.open(root)
    if git is None:
        return
    pending = sorted(p for p in git.uncommitted(RECORDS_DIR + "/") if parse_name(p.rsplit("/", 1)[-1]))
    if pending:
        raise BadInput(f"{pending[0][len(git.prefix):]}: record not committed; commit records before rotating "
                       "the key (signed by a retired key, they would not verify)")
