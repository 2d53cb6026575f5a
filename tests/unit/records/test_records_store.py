from __future__ import annotations

import base64
import json

import pytest
from _records_helpers import commit, forge, merged, record

from promotion.errors import RecordError, VerificationError
from promotion.records import RecordStore, Trust, record_related_paths, verify_record, write_record
from promotion.records.signers import signer_for


def _rewrite_payload(path, change):
    doc = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(doc["payload"]))
    change(statement)
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(doc))


def test_write_then_verify_names_signer_and_links_chain(repo):
    first = record(repo, 3)
    second = record(repo, 4, source_commit="abcdef1")
    assert first.name == "000001-promote-v3.json" and second.name == "000002-promote-v4.json"
    checked = verify_record(second, repo)
    trust = Trust.load(repo)
    (keyid,) = trust.keys
    assert checked.signer == f"key:{keyid}"
    assert checked.statement["subject"][0]["digest"]["sha256"] == f"{4:064x}"
    assert checked.predicate["previous_record"] == {"name": first.name, "digest": verify_record(first, repo).digest}
    assert checked.predicate["approvers"][0]["commit"] == "0123abc"
    assert {p.name for p in record_related_paths(repo, "prod")} == {"prod", "keys", "trust.yaml"}
    assert (repo / f"environments/records/keys/{keyid}.pub").exists()


def test_edited_payload_fails_naming_file(repo):
    path = record(repo, 3)
    _rewrite_payload(path, lambda s: s["predicate"]["model"].update(version=3))  # same values, new bytes
    _rewrite_payload(path, lambda s: s["predicate"]["approvers"].append({"login": "mallory"}))
    with pytest.raises(VerificationError, match=r"environments/records/prod/000001-promote-v3.json: signature .* does not verify"):
        verify_record(path, repo)


def test_unsigned_record_fails(repo):
    path = record(repo, 3)
    doc = json.loads(path.read_text())
    doc["signatures"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(VerificationError, match="000001-promote-v3.json: record is not signed"):
        verify_record(path, repo)
    path.write_text(base64.b64decode(doc["payload"]).decode())  # a bare statement
    with pytest.raises(VerificationError, match="000001-promote-v3.json: not a signed record"):
        verify_record(path, repo)


def test_unknown_key_fails(repo, tmp_path, monkeypatch):
    path = record(repo, 3)
    (repo / "environments/trust.yaml").write_text("keys: []\n")
    with pytest.raises(VerificationError, match="signed by unknown key"):
        verify_record(path, repo)


def test_deleted_record_breaks_chain_at_next_file(repo):
    for v in (3, 4, 5):
        record(repo, v)
    (repo / "environments/records/prod/000002-promote-v4.json").unlink()
    with pytest.raises(VerificationError, match=r"000003-promote-v5.json: sequence gap: record #2 is missing"):
        RecordStore(repo, "prod").records()


def test_renamed_record_is_caught(repo):
    record(repo, 3)
    path = record(repo, 4)
    path.rename(path.with_name("000002-promote-v9.json"))
    with pytest.raises(VerificationError, match="000002-promote-v9.json: file name says #2 promote v9 but the signed record is #2 promote v4"):
        RecordStore(repo, "prod").records()


def test_swapped_chain_order_is_caught(repo):
    a, b, c = record(repo, 3), record(repo, 4), record(repo, 5)
    # re-sign nothing: swap the bytes of #2 and #3 under each other's names is caught by name check;
    # replacing #2 with a valid record from another chain is caught by the link
    other = repo.parent / "other"
    (other / "environments").mkdir(parents=True)
    import shutil
    shutil.copytree(repo / "environments/records/keys", other / "environments/records/keys")
    shutil.copy(repo / "environments/trust.yaml", other / "environments/trust.yaml")
    record(other, 3)
    forged = record(other, 4, approvers=[{"login": "mallory", "commit": None}])
    shutil.copy(forged, b)
    with pytest.raises(VerificationError, match="000002-promote-v4.json: chain broken: links to 000001-promote-v3.json"):
        RecordStore(repo, "prod").records()


def test_rotation_keeps_old_records_valid_and_retired_key_cannot_sign(git_repo):
    from promotion.records import keys

    repo = git_repo
    old = record(repo, 3)
    commit(repo, "record v3")
    old_signer, _, _ = keys.load_signing_key(repo, create=False)
    retired, new_signer, written = keys.rotate(repo)
    assert retired == [old_signer.public_key.keyid]
    merged(repo, "rotate the signing key")  # a new signer is trusted through a pull request
    new = record(repo, 4)
    store = RecordStore(repo, "prod")
    assert [r.signer for r in store.records()] == [f"key:{old_signer.public_key.keyid}", f"key:{new_signer.public_key.keyid}"]
    assert verify_record(old, repo).name == old.name
    from promotion.records.signers.local import LocalSigner

    with pytest.raises(RecordError, match="was retired"):
        record(repo, 5, signer=LocalSigner(old_signer))


def test_uncommitted_record_by_a_retired_key_is_rejected_whatever_its_date(git_repo):
    """Not committed yet: judged by the work tree's trust file, where the key is retired.
    The forged record is dated before the retirement; the date does not matter."""
    from promotion.records import keys

    repo = git_repo
    first = record(repo, 3)
    commit(repo, "record v3")
    pem = keys.private_key_path(repo).read_bytes()
    keys.rotate(repo)
    path = forge(repo, pem, 4, recorded_at=verify_record(first, repo).recorded_at)
    with pytest.raises(VerificationError, match=r"prod/000002-promote-v4.json: signed by key .* which "
                                                r"environments/trust.yaml in the work tree marks retired"):
        verify_record(path, repo)


def test_last_known_good_and_has_promotion(repo):
    record(repo, 3)
    record(repo, 4)
    store = RecordStore(repo, "prod")
    assert store.last_known_good("fraud-detector") == 4
    assert store.last_known_good("fraud-detector", excluding=4) == 3
    record(repo, 5)
    record(repo, 4, action="rollback", replaced_version=5, reason="p95 latency breach")
    store = RecordStore(repo, "prod")
    assert store.last_known_good("fraud-detector") == 4
    assert store.has_promotion("fraud-detector", 5).name == "000003-promote-v5.json"
    assert store.has_promotion("fraud-detector", 6) is None
    # a rollback without replaced_version takes out whatever ran before it
    record(repo, 3, action="rollback")
    assert RecordStore(repo, "prod").last_known_good("fraud-detector") == 3
    assert RecordStore(repo, "staging").latest() is None


def test_invalid_predicate_is_refused_before_signing(repo):
    with pytest.raises(RecordError, match="model digest must be 'sha256:<hex>'"):
        record(repo, 3, digest="md5:abc")
    with pytest.raises(RecordError, match=r"predicate.steps.0: 'weight' is a required property"):
        record(repo, 3, steps=[{"metrics": {}}])
    with pytest.raises(RecordError, match="unknown record action 'promoted'"):
        record(repo, 3, action="promoted")
    assert not (repo / "environments/records/prod").exists()


def test_signer_registry_fails_closed(repo, monkeypatch):
    with pytest.raises(RecordError, match="unknown signer kind 'gpg'"):
        signer_for("gpg")
    monkeypatch.setenv("PROMOTION_SIGNER", "kms")
    with pytest.raises(RecordError, match="PROMOTION_SIGNER='kms' is not a signer kind"):
        record(repo, 3)


def test_key_from_environment_variable(repo, monkeypatch):
    from securesystemslib.signer import CryptoSigner
    from cryptography.hazmat.primitives import serialization

    signer = CryptoSigner.generate_ed25519()
    pem = signer._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    monkeypatch.setenv("PROMOTION_SIGNING_KEY", pem.decode())
    path = record(repo, 3)
    assert verify_record(path, repo).signer == f"key:{signer.public_key.keyid}"
    monkeypatch.setenv("PROMOTION_SIGNING_KEY", "not a key")
    with pytest.raises(RecordError, match=r"\$PROMOTION_SIGNING_KEY: not an unencrypted PEM private key"):
        record(repo, 4)
