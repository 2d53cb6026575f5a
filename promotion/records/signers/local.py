"""Local ed25519 signing (laptops, tests): a DSSE envelope signed with a securesystemslib key."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from promotion.errors import VerificationError
from promotion.records.signers.base import SignatureCheck


class LocalSigner:
    """Signs with a local ed25519 key (see :mod:`promotion.records.keys` for where it lives).

    ``LocalSigner()`` loads (or on first use creates and registers) the key of the
    repository passed to :meth:`prepare`; ``LocalSigner(crypto_signer=...)`` uses a given
    securesystemslib ``CryptoSigner``.
    """

    kind = "local"

    def __init__(self, crypto_signer=None) -> None:
        self._signer = crypto_signer

    @property
    def keyid(self) -> str:
        return self._signer.public_key.keyid

    def prepare(self, root) -> list[Path]:
        from promotion.records import keys

        if self._signer is None:
            self._signer, _source, _created = keys.load_signing_key(root, create=True)
        return keys.register(root, self._signer)

    def sign(self, payload: bytes, payload_type: str) -> dict:
        from securesystemslib.dsse import Envelope

        if self._signer is None:
            raise RuntimeError("LocalSigner.prepare(root) must run before sign()")
        envelope = Envelope(payload=payload, payload_type=payload_type, signatures={})
        envelope.sign(self._signer)
        return envelope.to_dict()


def verify(document: dict, trust, display: str) -> SignatureCheck:
    """Check a DSSE envelope's signature against the trust file's keys.

    The caller checks that the key could sign this record (:mod:`promotion.records.validity`:
    from when git received it, never from a time inside the signed payload).
    """
    from cryptography.exceptions import InvalidSignature

    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise VerificationError(f"{display}: record is not signed (no signatures)")
    try:
        payload = base64.b64decode(document["payload"], validate=True)
        payload_type = document["payloadType"]
        if not isinstance(payload_type, str):
            raise TypeError
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise VerificationError(f"{display}: malformed DSSE envelope") from None
    type_bytes = payload_type.encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)  # DSSE v1 PAE
    seen = []
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        keyid, sig = entry.get("keyid"), entry.get("sig")
        seen.append(str(keyid)[:12])
        key = trust.keys.get(keyid) if isinstance(keyid, str) else None
        if key is None or not isinstance(sig, str):
            continue
        try:
            _public(key).verify(base64.b64decode(sig, validate=True), pae)
        except (InvalidSignature, binascii.Error, ValueError):
            raise VerificationError(f"{display}: signature by key {keyid[:12]} does not verify "
                                    "(the record was changed after signing)") from None
        return SignatureCheck(payload_type, payload, "local", f"key:{keyid}", keyid, key)
    raise VerificationError(f"{display}: signed by unknown key(s) {', '.join(seen) or '?'}; "
                            "none is listed in environments/trust.yaml")


_PUBLIC: dict[tuple[str, str], object] = {}


def _public(key):
    """The pyca public key of a trusted key, built once (verifying 10k records must be fast)."""
    cache_key = (key.keyid, key.key.keyval["public"])
    public = _PUBLIC.get(cache_key)
    if public is None:
        public = _PUBLIC[cache_key] = key.key._crypto_key()
    return public
