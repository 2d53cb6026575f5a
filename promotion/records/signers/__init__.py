"""Signers of promotion records, chosen through an explicit registry that fails closed.

Usage::

    from promotion.records.signers import signer_for, verify_document
    signer = signer_for("local")            # or "sigstore"; anything else raises RecordError
    document = signer.sign(payload, "application/vnd.in-toto+json")
    check = verify_document(document, trust, "environments/records/prod/000001-promote-v3.json")
    print(check.signer)                     # key:<keyid> or the GitHub workflow identity

The default signer is ``sigstore`` inside GitHub Actions when an OIDC token can be requested
(``ACTIONS_ID_TOKEN_REQUEST_URL`` set, i.e. the job has ``id-token: write``), else ``local``.
``PROMOTION_SIGNER=local|sigstore`` overrides the choice.
"""

from __future__ import annotations

import os

from promotion.errors import RecordError, VerificationError
from promotion.records.signers.base import SignatureCheck, Signer

KINDS = ("local", "sigstore")
BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"

__all__ = ["KINDS", "SignatureCheck", "Signer", "default_kind", "document_kind", "signer_for", "verify_document"]


def signer_for(kind: str, **options) -> Signer:
    """A signer of ``kind``; unknown kinds raise :class:`RecordError`."""
    if kind == "local":
        from promotion.records.signers.local import LocalSigner

        return LocalSigner(**options)
    if kind == "sigstore":
        from promotion.records.signers.sigstore import SigstoreSigner

        return SigstoreSigner(**options)
    raise RecordError(f"unknown signer kind {kind!r}; expected one of: {', '.join(KINDS)}")


def default_kind() -> str:
    """``PROMOTION_SIGNER`` if set, else sigstore in GitHub Actions with OIDC, else local."""
    chosen = os.environ.get("PROMOTION_SIGNER")
    if chosen:
        if chosen not in KINDS:
            raise RecordError(f"PROMOTION_SIGNER={chosen!r} is not a signer kind; expected one of: {', '.join(KINDS)}")
        return chosen
    return "sigstore" if os.environ.get("ACTIONS_ID_TOKEN_REQUEST_URL") else "local"


def document_kind(document, display: str) -> str:
    """``local`` for a DSSE envelope, ``sigstore`` for a Sigstore bundle; else VerificationError."""
    if isinstance(document, dict):
        media = document.get("mediaType")
        if isinstance(media, str) and media.startswith(BUNDLE_MEDIA_PREFIX):
            return "sigstore"
        if {"payload", "payloadType"} <= set(document):
            return "local"
    raise VerificationError(f"{display}: not a signed record (neither a DSSE envelope nor a Sigstore bundle)")


def verify_document(document, trust, display: str) -> SignatureCheck:
    """Verify a record file's signature against ``trust``; the registry picks the kind."""
    kind = document_kind(document, display)
    if kind == "local":
        from promotion.records.signers import local

        return local.verify(document, trust, display)
    from promotion.records.signers import sigstore

    return sigstore.verify(document, trust, display)
