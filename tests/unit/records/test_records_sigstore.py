"""Keyless records, verified offline by sigstore's own Verifier against a trusted root we make.

Every cryptographic step is real (certificate chain, SCT, checkpoint, inclusion proof,
signed entry timestamp, DSSE signature); only the OIDC token exchange with GitHub and
Fulcio, and the public logs, are out of reach offline.
"""

from __future__ import annotations

import base64
import json

import pytest
from _records_helpers import record
from _records_sigstore import FakeSigstore, FakeSigstoreSigner

from promotion.errors import RecordError, VerificationError
from promotion.records import RecordStore, verify_record

WORKFLOW = "https://github.com/acme/models/.github/workflows/rollout.yml@refs/heads/main"


@pytest.fixture(scope="module")
def fake():
    return FakeSigstore()


@pytest.fixture
def keyless_repo(repo, fake):
    (repo / "environments/sigstore-root.json").write_text(fake.trusted_root_json())
    (repo / "environments/trust.yaml").write_text(
        "keys: []\n"
        "identities:\n"
        "  - repository: acme/models\n"
        "    workflow: .github/workflows/rollout.yml\n"
        "    ref: refs/heads/main\n"
        "sigstore:\n"
        "  trusted_root: environments/sigstore-root.json\n"
    )
    return repo


def test_keyless_record_verifies_and_names_workflow(keyless_repo, fake):
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    doc = json.loads(path.read_text())
    assert doc["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    checked = verify_record(path, keyless_repo)
    assert checked.signer == WORKFLOW and checked.signer_kind == "sigstore"
    assert checked.predicate["model"]["version"] == 7


def test_keyless_and_local_records_share_one_chain(keyless_repo, fake):
    record(keyless_repo, 6)  # local key, registered on first use
    record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    signers = [r.signer_kind for r in RecordStore(keyless_repo, "prod").records()]
    assert signers == ["local", "sigstore"]


def test_identity_not_in_trust_file_is_refused(keyless_repo, fake):
    fork = "https://github.com/mallory/models/.github/workflows/rollout.yml@refs/heads/main"
    with pytest.raises(RecordError, match="signed by https://github.com/mallory/models/.* not an accepted workflow identity"):
        record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, fork))
    # a record smuggled in by hand is caught by verify
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    path.write_text(json.dumps(fake.sign_dsse(base64.b64decode(json.loads(path.read_text())["dsseEnvelope"]["payload"]), fork)))
    with pytest.raises(VerificationError, match="000001-promote-v7.json: signed by https://github.com/mallory"):
        verify_record(path, keyless_repo)


def test_other_branch_of_same_workflow_is_refused(keyless_repo, fake):
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    doc = json.loads(path.read_text())
    payload = base64.b64decode(doc["dsseEnvelope"]["payload"])
    path.write_text(json.dumps(fake.sign_dsse(payload, WORKFLOW.replace("refs/heads/main", "refs/heads/evil"))))
    with pytest.raises(VerificationError, match="not an accepted workflow identity"):
        verify_record(path, keyless_repo)


def test_tampered_keyless_payload_fails(keyless_repo, fake):
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    doc = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["approvers"] = [{"login": "mallory"}]
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="000001-promote-v7.json: keyless signature does not verify"):
        verify_record(path, keyless_repo)


def test_bundle_from_an_untrusted_sigstore_fails(keyless_repo, fake):
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    payload = base64.b64decode(json.loads(path.read_text())["dsseEnvelope"]["payload"])
    path.write_text(json.dumps(FakeSigstore().sign_dsse(payload, WORKFLOW)))  # another CA and logs
    with pytest.raises(VerificationError, match="000001-promote-v7.json: keyless signature does not verify"):
        verify_record(path, keyless_repo)


def test_keyless_record_without_identities_fails_closed(keyless_repo, fake):
    path = record(keyless_repo, 7, signer=FakeSigstoreSigner(fake, WORKFLOW))
    (keyless_repo / "environments/trust.yaml").write_text("keys: []\nsigstore:\n  trusted_root: environments/sigstore-root.json\n")
    with pytest.raises(VerificationError, match="lists no workflow identities"):
        verify_record(path, keyless_repo)


def test_sigstore_signer_without_token_says_what_to_configure(repo, monkeypatch):
    from promotion.records.signers import signer_for

    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    monkeypatch.delenv("SIGSTORE_ID_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    with pytest.raises(RecordError, match="id-token: write"):
        signer_for("sigstore").sign(b"{}", "application/vnd.in-toto+json")


def test_default_signer_is_sigstore_in_actions_with_oidc(monkeypatch):
    from promotion.records.signers import default_kind

    monkeypatch.delenv("PROMOTION_SIGNER", raising=False)
    monkeypatch.delenv("ACTIONS_ID_TOKEN_REQUEST_URL", raising=False)
    assert default_kind() == "local"
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_URL", "https://token.example/")
    assert default_kind() == "sigstore"
    monkeypatch.setenv("PROMOTION_SIGNER", "local")
    assert default_kind() == "local"
