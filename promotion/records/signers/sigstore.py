"""Keyless signing with Sigstore (GitHub Actions OIDC), and offline bundle verification.

Signing needs the network (Fulcio issues a short-lived certificate for the workflow's
OIDC identity; Rekor logs the signature). Verification is offline: the bundle carries the
certificate, the log entry with its inclusion proof and signed checkpoint, and the signed
entry timestamp; they are checked against a trusted root (Sigstore's public-good root
shipped with sigstore-python, or the ``sigstore.trusted_root`` named in the trust file).
The certificate's identity must equal one of the trust file's workflow identities.
"""

from __future__ import annotations

import hashlib
import json
import os

from promotion.errors import RecordError, VerificationError
from promotion.records.signers.base import SignatureCheck

IN_TOTO = "application/vnd.in-toto+json"


class SigstoreSigner:
    """Signs with an ephemeral key certified for the workflow's OIDC identity.

    ``token`` is a raw OIDC identity token; by default the ambient GitHub Actions
    credential is requested (the job needs ``permissions: id-token: write``).
    ``PROMOTION_SIGSTORE_STAGING=1`` signs against Sigstore's staging instance.
    """

    kind = "sigstore"

    def __init__(self, token: str | None = None, staging: bool | None = None) -> None:
        self._token = token
        self._staging = bool(os.environ.get("PROMOTION_SIGSTORE_STAGING")) if staging is None else staging

    def prepare(self, root) -> list:
        return []

    def sign(self, payload: bytes, payload_type: str) -> dict:
        if payload_type != IN_TOTO:
            raise RecordError(f"sigstore signs in-toto statements only, not {payload_type}")
        try:
            from sigstore import dsse
            from sigstore.errors import Error as SigstoreError
            from sigstore.models import ClientTrustConfig
            from sigstore.oidc import IdentityToken, detect_credential
            from sigstore.sign import SigningContext
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RecordError(f"sigstore is not installed: {exc}") from None
        try:
            raw = self._token or detect_credential()
            if not raw:
                raise RecordError("no OIDC identity token for keyless signing: run in GitHub Actions with "
                                  "`permissions: id-token: write`, or set PROMOTION_SIGNER=local")
            config = ClientTrustConfig.staging() if self._staging else ClientTrustConfig.production()
            context = SigningContext.from_trust_config(config)
            with context.signer(IdentityToken(raw), cache=True) as signer:
                bundle = signer.sign_dsse(dsse.Statement(payload))
        except RecordError:
            raise
        except SigstoreError as exc:
            raise RecordError(f"keyless signing failed: {exc.diagnostics().strip().splitlines()[0]}") from None
        except Exception as exc:  # network and token errors come in many types
            raise RecordError(f"keyless signing failed: {type(exc).__name__}: {exc}") from None
        return json.loads(bundle.to_json())


def trusted_root(trust):
    """The sigstore TrustedRoot to verify against (cached on the trust object)."""
    cached = getattr(trust, "_sigstore_root", None)
    if cached is not None:
        return cached
    from sigstore.models import ClientTrustConfig, TrustedRoot

    try:
        if trust.sigstore_trusted_root_json is not None:
            from sigstore_models.trustroot.v1 import TrustedRoot as RootModel

            root = TrustedRoot(RootModel.from_json(trust.sigstore_trusted_root_json))
        else:
            root = ClientTrustConfig.production(offline=True).trusted_root
    except Exception as exc:
        raise VerificationError(f"cannot load the Sigstore trusted root: {exc}") from None
    trust._sigstore_root = root
    return root


def identity_policy(identities):
    """A sigstore policy accepting any of the trust file's workflow identities."""
    from sigstore.verify.policy import AnyOf, Identity

    return AnyOf([Identity(identity=i.san, issuer=i.issuer) for i in identities])


def certificate_identity(cert) -> str:
    """The SAN URI or e-mail a certificate was issued for."""
    from cryptography.x509 import RFC822Name, SubjectAlternativeName, UniformResourceIdentifier

    try:
        san = cert.extensions.get_extension_for_class(SubjectAlternativeName).value
    except Exception:
        return "(no SAN)"
    values = san.get_values_for_type(UniformResourceIdentifier) + san.get_values_for_type(RFC822Name)
    return values[0] if values else "(no SAN)"


def verify(document: dict, trust, display: str) -> SignatureCheck:
    """Verify a Sigstore bundle offline and name the workflow identity that signed it."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity, UnsafeNoOp

    if not trust.identities:
        raise VerificationError(f"{display}: signed keylessly, but environments/trust.yaml lists no workflow identities")
    try:
        bundle = Bundle.from_json(json.dumps(document))
    except Exception as exc:
        raise VerificationError(f"{display}: malformed Sigstore bundle: {exc}") from None
    if bundle._dsse_envelope is None:
        raise VerificationError(f"{display}: Sigstore bundle holds no DSSE envelope")
    verifier = getattr(trust, "_sigstore_verifier", None)
    if verifier is None:
        try:
            verifier = Verifier(trusted_root=trusted_root(trust))
        except SigstoreError as exc:
            raise VerificationError(f"cannot use the Sigstore trusted root: {exc}") from None
        trust._sigstore_verifier = verifier
    cert = bundle.signing_certificate
    try:
        payload_type, payload = verifier.verify_dsse(bundle, identity_policy(trust.identities))
    except SigstoreError as exc:
        try:
            verifier.verify_dsse(bundle, UnsafeNoOp())
        except SigstoreError:
            raise VerificationError(f"{display}: keyless signature does not verify: {_first_line(exc)}") from None
        raise VerificationError(f"{display}: signed by {certificate_identity(cert)}, which is not an accepted "
                                "workflow identity in environments/trust.yaml") from None
    if payload_type != IN_TOTO:
        raise VerificationError(f"{display}: payload type is {payload_type}, expected {IN_TOTO}")
    for identity in trust.identities:
        try:
            Identity(identity=identity.san, issuer=identity.issuer).verify(cert)
        except SigstoreError:
            continue
        from cryptography.hazmat.primitives import serialization

        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        return SignatureCheck(payload_type, payload, "sigstore", identity.san, fingerprint, None)
    raise VerificationError(f"{display}: no accepted identity matched")  # unreachable: AnyOf passed


def _first_line(exc) -> str:
    text = exc.diagnostics() if hasattr(exc, "diagnostics") else str(exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]
