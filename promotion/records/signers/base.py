"""The signer contract: turn a payload into the signed document stored as a record file.

Two kinds implement it, one file each: ``local`` (ed25519 key, DSSE envelope) and
``sigstore`` (keyless, Sigstore bundle holding a DSSE envelope). Verification of each kind
is a module-level ``verify(document, trust, display)`` next to its signer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Signer(Protocol):
    """Signs record payloads."""

    kind: str

    def sign(self, payload: bytes, payload_type: str) -> dict:
        """The JSON document to store as the record file (a DSSE envelope or a Sigstore bundle)."""
        ...

    def prepare(self, root) -> list:
        """Make the signer ready in repository ``root`` (e.g. create and register a key).

        Returns the repository paths it created or changed, which the caller commits.
        """
        ...


@dataclass(frozen=True)
class SignatureCheck:
    """What a verified signature established."""

    payload_type: str
    payload: bytes
    kind: str            # "local" or "sigstore"
    signer: str          # "key:<keyid>" or the workflow identity (certificate SAN)
    keyid: str | None    # the local key, or the signing certificate's sha256 fingerprint
    trusted_key: object | None = None  # trust.TrustedKey for local signatures
