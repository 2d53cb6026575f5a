"""A synthetic Sigstore deployment, generated in memory: CA, CT log, transparency log.

It issues a Fulcio-style certificate for a GitHub workflow identity, embeds a real SCT,
signs a DSSE envelope, and logs it with a real inclusion proof, signed checkpoint and
signed entry timestamp, so sigstore's own Verifier checks every step offline against a
trusted root we construct. What it cannot stand in for: GitHub's OIDC token, Fulcio's
checks of that token, and the public Rekor/CT logs (see docs/records.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from datetime import datetime, timedelta, timezone

import rfc8785
from cryptography import x509
from cryptography.hazmat import asn1
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

ISSUER = "https://token.actions.githubusercontent.com"
IN_TOTO = "application/vnd.in-toto+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class FakeSigstore:
    def __init__(self) -> None:
        self.time = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=1)
        self.entries: dict[str, dict] = {}
        self.index: dict[str, list[str]] = {}
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ct_key = ec.generate_private_key(ec.SECP256R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-fulcio")])
        self.ca_name = name
        self.ca = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key()).serial_number(1)
            .not_valid_before(self.time - timedelta(days=1)).not_valid_after(self.time + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    def trusted_root_json(self) -> str:
        def log(key, url):
            return {"baseUrl": url, "hashAlgorithm": "SHA2_256",
                    "logId": {"keyId": _b64(hashlib.sha256(_spki(key)).digest())},
                    "publicKey": {"rawBytes": _b64(_spki(key)), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                                  "validFor": {"start": "2020-01-01T00:00:00Z"}}}
        return json.dumps({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(self.log_key, "https://rekor.test")],
            "ctlogs": [log(self.ct_key, "https://ct.test")],
            "certificateAuthorities": [{
                "subject": {"commonName": "test-fulcio", "organization": "test"}, "uri": "https://fulcio.test",
                "certChain": {"certificates": [{"rawBytes": _b64(self.ca.public_bytes(serialization.Encoding.DER))}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"},
            }],
        })

    def certificate(self, key, identity: str):
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(self.time - timedelta(minutes=1)).not_valid_after(self.time + timedelta(minutes=9))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), False)
            .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), ISSUER.encode()), False)
        )
        # RFC 6962 3.2: the SCT signs the precertificate's TBS, i.e. without the SCT list
        tbs = builder.sign(self.ca_key, hashes.SHA256()).tbs_certificate_bytes
        ms = int(self.time.timestamp() * 1000)
        signed = (struct.pack("!BBQH", 0, 0, ms, 1) + hashlib.sha256(_spki(self.ca_key)).digest()
                  + len(tbs).to_bytes(3, "big") + tbs + b"\x00\x00")
        sig = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = (b"\x00" + hashlib.sha256(_spki(self.ct_key)).digest() + struct.pack("!QH", ms, 0)
               + struct.pack("!BBH", 4, 3, len(sig)) + sig)
        sct_list = struct.pack("!HH", len(sct) + 2, len(sct)) + sct
        return builder.add_extension(x509.UnrecognizedExtension(
            ExtensionOID.PRECERT_SIGNED_CERTIFICATE_TIMESTAMPS, asn1.encode_der(sct_list)), False
        ).sign(self.ca_key, hashes.SHA256())

    def sign_dsse(self, payload: bytes, identity: str) -> dict:
        """A Sigstore bundle (v0.3) holding a DSSE envelope over ``payload``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.certificate(key, identity)
        pae = b"DSSEv1 %d %b %d %b" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
        sig = key.sign(pae, ec.ECDSA(hashes.SHA256()))
        envelope = {"payload": _b64(payload), "payloadType": IN_TOTO, "signatures": [{"sig": _b64(sig)}]}
        pem = cert.public_bytes(serialization.Encoding.PEM)
        body = rfc8785.dumps({"kind": "dsse", "apiVersion": "0.0.1", "spec": {
            "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
            "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(json.dumps(envelope).encode()).hexdigest()},
            "signatures": [{"signature": _b64(sig), "verifier": _b64(pem)}],
        }})
        log_id = hashlib.sha256(_spki(self.log_key)).digest()
        leaf = hashlib.sha256(b"\x00" + body).digest()  # a one-entry tree: the root is the leaf
        note = f"rekor.test\n1\n{_b64(leaf)}\n"
        note_sig = self.log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + f"\n\u2014 rekor.test {_b64(log_id[:4] + note_sig)}\n"
        integrated = int(self.time.timestamp())
        set_sig = self.log_key.sign(rfc8785.dumps({"body": _b64(body), "integratedTime": integrated,
                                                   "logID": log_id.hex(), "logIndex": 0}), ec.ECDSA(hashes.SHA256()))
        # what the log serves: every entry it integrated, by leaf hash and by in-toto subject digest
        self.entries[leaf.hex()] = {"body": _b64(body), "integratedTime": integrated, "logID": log_id.hex(),
                                    "logIndex": 0}
        for subject in json.loads(payload).get("subject", []):
            digest = "sha256:" + subject["digest"]["sha256"]
            self.index.setdefault(digest, []).append(leaf.hex())
        return {
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))},
                "tlogEntries": [{
                    "logIndex": "0", "logId": {"keyId": _b64(log_id)},
                    "kindVersion": {"kind": "dsse", "version": "0.0.1"},
                    "integratedTime": str(integrated), "canonicalizedBody": _b64(body),
                    "inclusionPromise": {"signedEntryTimestamp": _b64(set_sig)},
                    "inclusionProof": {"logIndex": "0", "rootHash": _b64(leaf), "treeSize": "1", "hashes": [],
                                       "checkpoint": {"envelope": checkpoint}},
                }],
            },
            "dsseEnvelope": envelope,
        }


class FakeSigstoreSigner:
    """Implements the Signer contract with the synthetic deployment (no network)."""

    kind = "sigstore"

    def __init__(self, fake: FakeSigstore, identity: str) -> None:
        self.fake, self.identity = fake, identity

    def prepare(self, root) -> list:
        return []

    def sign(self, payload: bytes, payload_type: str) -> dict:
        assert payload_type == IN_TOTO
        return self.fake.sign_dsse(payload, self.identity)


class FakeRekor:
    """The synthetic deployment's transparency log over loopback HTTP, answering the two
    Rekor calls the audit makes (entry by UUID, search by artifact hash) as Rekor does."""

    def __init__(self, fake: FakeSigstore) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        log = fake

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                prefix = "/api/v1/log/entries/"
                uuid = self.path[len(prefix):] if self.path.startswith(prefix) else ""
                entry = log.entries.get(uuid[-64:])
                if entry is None:
                    self._send(404, {"code": 404, "message": "entry not found"})
                else:
                    self._send(200, {uuid: entry})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path != "/api/v1/index/retrieve":
                    self._send(404, {"code": 404, "message": "not found"})
                    return
                self._send(200, list(log.index.get(body.get("hash", ""), [])))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
