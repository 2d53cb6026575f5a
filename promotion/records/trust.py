"""The trust file: which signers a verifier accepts (``environments/trust.yaml``).

Example::

    keys:                       # local ed25519 keys (laptops, tests)
      - keyid: 4f0c...e1
        public_key: environments/records/keys/4f0c...e1.pub
        valid_from: "2025-01-01T00:00:00.000Z"   # informational
        retired_at: null        # set by `promotion keys rotate`: retired from the commit that sets it
    identities:                 # sigstore keyless signers (GitHub Actions workflows)
      - repository: acme/models
        workflow: .github/workflows/rollout.yml
        ref: refs/heads/main
    sigstore:
      trusted_root: null        # a trusted_root.json for a private Sigstore; null = public good

Which records a signer may sign is decided by git history, not by times in this file or
in the records (:mod:`promotion.records.validity`): a key is valid for records added by
commits where this file lists it with ``retired_at: null``; the commit that sets
``retired_at`` (any value) or removes the key retires it for good. Records it signed
before that keep verifying. After the repository's first record, a signer added (or a
trusted root changed) outside a merged pull request does not count (the bootstrap rule of
:mod:`promotion.records.validity`). The keyid of every listed key is recomputed from its
public key file, so swapping the file does not swap the trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from promotion._internal import safeload
from promotion.errors import ConfigError

TRUST_FILE = "environments/trust.yaml"
KEYS_DIR = "environments/records/keys"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"

_HEADER = """\
# Signers whose promotion records are accepted. Managed by `promotion keys`; review every
# change to this file like a change to branch protection. See docs/records.md.
"""


@dataclass(frozen=True)
class TrustedKey:
    """A local signing key as the trust file lists it (``retired_at`` set: it signs no more)."""

    keyid: str
    public_key: str
    valid_from: datetime
    retired_at: datetime | None
    key: object = field(compare=False, repr=False)  # securesystemslib SSlibKey


@dataclass(frozen=True)
class WorkflowIdentity:
    """A GitHub Actions workflow allowed to sign records keylessly."""

    repository: str
    workflow: str
    ref: str
    issuer: str = GITHUB_ISSUER

    @property
    def san(self) -> str:
        """The certificate SAN Fulcio issues for this workflow."""
        return f"https://github.com/{self.repository}/{self.workflow}@{self.ref}"


@dataclass
class Trust:
    keys: dict[str, TrustedKey] = field(default_factory=dict)
    identities: list[WorkflowIdentity] = field(default_factory=list)
    sigstore_trusted_root: str | None = None
    sigstore_trusted_root_json: str | None = field(default=None, repr=False)

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> "Trust":
        """Read ``environments/trust.yaml`` under ``root``; a missing file trusts nobody."""
        root = Path(root)
        path = root / TRUST_FILE
        if not path.exists():
            return cls()
        return cls.from_text(safeload.read_text(path, TRUST_FILE), TRUST_FILE, lambda rel: safeload.read_limited(root / rel))

    @classmethod
    def from_text(cls, text: str, display: str, read_file: Callable[[str], bytes]) -> "Trust":
        """Parse trust YAML; ``read_file(relpath)`` returns a public key file's bytes."""
        from promotion._internal import yamlio

        doc = yamlio.loads(text, display)
        data = doc.data or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{doc.where(())}: must be a mapping")
        unknown = set(data) - {"keys", "identities", "sigstore"}
        if unknown:
            raise ConfigError(f"{doc.where(())}: unknown field(s): {', '.join(sorted(unknown))}")
        trust = cls()
        for i, entry in enumerate(_list(doc, data, "keys")):
            path = ("keys", i)
            keyid = _str(doc, entry, path, "keyid")
            pub = _str(doc, entry, path, "public_key")
            valid_from = _time(doc, entry, path, "valid_from", required=True)
            retired_at = _time(doc, entry, path, "retired_at", required=False)
            try:
                pem = read_file(pub)
            except (OSError, KeyError):
                raise ConfigError(f"{doc.where(path + ('public_key',))}: cannot read {pub}") from None
            key = _load_public_key(pem, keyid, doc.where(path + ("public_key",)))
            if keyid in trust.keys:
                raise ConfigError(f"{doc.where(path + ('keyid',))}: key {keyid} is listed twice")
            trust.keys[keyid] = TrustedKey(keyid, pub, valid_from, retired_at, key)
        for i, entry in enumerate(_list(doc, data, "identities")):
            path = ("identities", i)
            issuer = entry.get("issuer", GITHUB_ISSUER) if isinstance(entry, dict) else None
            trust.identities.append(WorkflowIdentity(
                repository=_str(doc, entry, path, "repository"),
                workflow=_str(doc, entry, path, "workflow"),
                ref=_str(doc, entry, path, "ref"),
                issuer=issuer if isinstance(issuer, str) else GITHUB_ISSUER,
            ))
        sig = data.get("sigstore") or {}
        if not isinstance(sig, dict):
            raise ConfigError(f"{doc.where(('sigstore',))}: must be a mapping")
        root_path = sig.get("trusted_root")
        if root_path is not None and not isinstance(root_path, str):
            raise ConfigError(f"{doc.where(('sigstore', 'trusted_root'))}: must be a path or null")
        trust.sigstore_trusted_root = root_path
        if root_path:
            try:
                trust.sigstore_trusted_root_json = read_file(root_path).decode("utf-8")
            except (OSError, KeyError, UnicodeDecodeError):
                raise ConfigError(f"{doc.where(('sigstore', 'trusted_root'))}: cannot read {root_path}") from None
        return trust

    # -- editing ---------------------------------------------------------------------
    def active_keys(self) -> list[TrustedKey]:
        return [k for k in self.keys.values() if k.retired_at is None]

    def to_yaml(self) -> str:
        import yaml

        from promotion.records.statement import format_time

        data = {
            "keys": [
                {"keyid": k.keyid, "public_key": k.public_key, "valid_from": format_time(k.valid_from),
                 "retired_at": format_time(k.retired_at) if k.retired_at else None}
                for k in sorted(self.keys.values(), key=lambda k: (k.valid_from, k.keyid))
            ],
            "identities": [
                {"repository": i.repository, "workflow": i.workflow, "ref": i.ref,
                 **({"issuer": i.issuer} if i.issuer != GITHUB_ISSUER else {})}
                for i in self.identities
            ],
        }
        if self.sigstore_trusted_root:
            data["sigstore"] = {"trusted_root": self.sigstore_trusted_root}
        return _HEADER + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

    def save(self, root: str | Path) -> Path:
        from promotion._internal.atomic import atomic_write

        path = Path(root) / TRUST_FILE
        atomic_write(path, self.to_yaml().encode())
        return path


def keyid_of(public_key) -> str:
    """The securesystemslib default keyid of a pyca public key."""
    from securesystemslib.signer import SSlibKey

    return SSlibKey.from_crypto(public_key).keyid


def _load_public_key(pem: bytes, keyid: str, where: str):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        key = SSlibKey.from_crypto(load_pem_public_key(pem))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: not a supported PEM public key ({exc})") from None
    if key.keyid != keyid:
        raise ConfigError(f"{where}: the public key's keyid is {key.keyid}, not {keyid}")
    return key


def _list(doc, data: dict, name: str) -> list:
    value = data.get(name) or []
    if not isinstance(value, list):
        raise ConfigError(f"{doc.where((name,))}: must be a list")
    return value


def _str(doc, entry, path: tuple, name: str) -> str:
    if not isinstance(entry, dict):
        raise ConfigError(f"{doc.where(path)}: must be a mapping")
    value = entry.get(name)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{doc.where(path + (name,))}: {name} is required and must be a string")
    return value


def _time(doc, entry, path: tuple, name: str, *, required: bool) -> datetime | None:
    from datetime import timezone

    from promotion.records.statement import parse_time

    value = entry.get(name)
    if value is None and not required:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return parse_time(str(value)) if value is not None else _missing(doc, path, name)
    except ValueError:
        raise ConfigError(f"{doc.where(path + (name,))}: must be an ISO 8601 time") from None


def _missing(doc, path, name):
    raise ConfigError(f"{doc.where(path + (name,))}: {name} is required")
