"""Who may add a signer: after the repository's first record, only a merged pull request.

Reproductions of a repository writer who pushes to main: trusting their own key (or their
own Sigstore root) in a direct commit, then signing a promote record with it. Real git,
real keys, the loopback router and the embedded MLflow registry of the reconcile tests.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from _records_helpers import commit, forge, git, merged, record, set_env

from promotion.cli import main
from promotion.errors import RecordError
from promotion.records import keys
from promotion.records.statement import format_time
from tests.unit.workflows.test_reconcile import ZERO, registry_state, set_version, world  # noqa: F401

NOW = format_time(datetime.now(timezone.utc))


def run(repo, capsys, *argv):
    code = main(["--root", str(repo), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def keypair():
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    pem = signer._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    return signer, pem


def test_own_key_pushed_to_main_signs_nothing_and_reconcile_moves_nothing(world, capsys):
    """Reproduction: the key went into trust.yaml by a direct commit, then signed a promote
    record of the next commit. Audit was clean, verify passed and reconcile deployed v2."""
    repo, router, reg = world
    mallory, pem = keypair()
    kid = mallory.public_key.keyid[:12]
    keys.register(repo, mallory)
    tidy = commit(repo, "chore: tidy trust file")
    set_version(repo, 2)
    change = commit(repo, "bump prod")
    forged = forge(repo, pem, 2, digest=ZERO, recorded_at=NOW, source_commit=change)
    commit(repo, "record v2")

    code, out, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1
    assert (f"violation: environments/trust.yaml: trusts key {kid} outside a merged pull request (not a merged "
            f"pull request): after the repository's first record, a new signer counts only once a pull request "
            f"merged it, so it signs nothing (commit {tidy[:12]})") in err
    assert f"prod/{forged.name}: signed by key {kid}, which commit {tidy[:12]} trusted outside a merged pull " \
           "request" in err
    code, _, err = run(repo, capsys, "verify", "--env", "prod")
    assert code == 1 and f"which commit {tidy[:12]} trusted outside a merged pull request" in err

    code, out, _ = run(repo, capsys, "reconcile", "prod", "--converge")
    assert code == 1 and "prod: unrecorded" in out and "do not verify" in out
    assert router.posts == [] and router.state["routes"] == {"1": 100.0}
    assert reg.alias("fraud-detector", "prod") == 1


def test_a_key_trusted_by_a_merged_pull_request_signs_and_audits_clean(git_repo, capsys):
    """Rotation as it should be done: `promotion keys rotate`, merged through a pull request."""
    repo = git_repo
    set_env(repo, 2)
    record(repo, 2, source_commit=commit(repo, "promote v2"))
    commit(repo, "record v2")   # the first record: creates and trusts the repository's first key (bootstrap)
    code, _, _ = run(repo, capsys, "keys", "rotate")
    assert code == 0
    new = keys.load_signing_key(repo, create=False)[0].public_key.keyid[:12]
    merge = merged(repo, "rotate the signing key", branch="rotate")
    set_env(repo, 3)
    record(repo, 3, source_commit=commit(repo, "promote v3"))
    commit(repo, "record v3")

    code, out, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 0, err
    assert "(bootstrap: set up before the repository's first record)" in out
    assert (f"governance change: environments/trust.yaml (trusts key {new}) in commit {merge[:12]} by Test Author "
            "(Merge pull request #1 from acme/rotate)") in out
    code, out, _ = run(repo, capsys, "verify", "--env", "prod")
    assert code == 0 and "ok: 2 record(s) verified" in out


def test_rotation_committed_directly_is_a_violation_and_its_key_cannot_sign(git_repo, capsys):
    repo = git_repo
    set_env(repo, 2)
    record(repo, 2, source_commit=commit(repo, "promote v2"))
    commit(repo, "record v2")
    keys.rotate(repo)
    new = keys.load_signing_key(repo, create=False)[0].public_key.keyid[:12]
    rotation = commit(repo, "rotate the signing key")
    set_env(repo, 3)
    change = commit(repo, "promote v3")
    with pytest.raises(RecordError, match=f"the signed record would not verify, so it was not written: .*signed by "
                                          f"key {new}, which commit {rotation[:12]} trusted outside a merged pull"):
        record(repo, 3, source_commit=change)
    assert not (repo / "environments/records/prod/000002-promote-v3.json").exists()
    code, _, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1 and f"environments/trust.yaml: trusts key {new} outside a merged pull request" in err
    assert f"(commit {rotation[:12]})" in err


def test_a_key_only_the_work_tree_trusts_cannot_sign_once_records_exist(git_repo, capsys):
    """The rollout commits the trust file with its record: a fresh key would land by a direct commit."""
    from promotion.records.signers.local import LocalSigner

    repo = git_repo
    record(repo, 2)
    first = commit(repo, "record v2")
    mallory, _ = keypair()
    with pytest.raises(RecordError, match=f"signed by key {mallory.public_key.keyid[:12]}, which only "
                                          f"environments/trust.yaml in the work tree lists: after the "
                                          rf"repository's first record \(commit {first[:12]}\)"):
        record(repo, 3, signer=LocalSigner(mallory))


def test_a_merged_pull_request_that_also_promotes_does_not_make_a_signer(git_repo, capsys):
    """The gates never let one pull request change governance and promote with it."""
    repo = git_repo
    set_env(repo, 2)
    record(repo, 2, source_commit=commit(repo, "promote v2"))
    commit(repo, "record v2")
    mallory, pem = keypair()
    git(repo, "checkout", "-q", "-b", "sneaky")
    keys.register(repo, mallory)
    set_env(repo, 3)
    commit(repo, "trust a key and move prod")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #9 from mallory/sneaky", "sneaky")
    merge = git(repo, "rev-parse", "HEAD").strip()
    forge(repo, pem, 3, recorded_at=NOW, source_commit=merge)
    commit(repo, "record v3")
    code, _, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1
    assert (f"environments/trust.yaml: trusts key {mallory.public_key.keyid[:12]} outside a merged pull request "
            f"(it also moves the model of environments/prod.yaml)") in err


def test_retiring_a_key_by_a_direct_commit_is_allowed(git_repo, capsys):
    """Taking trust away cannot forge anything: an emergency retirement needs no pull request."""
    repo = git_repo
    set_env(repo, 2)
    record(repo, 2, source_commit=commit(repo, "promote v2"))
    commit(repo, "record v2")
    trust = repo / "environments/trust.yaml"
    trust.write_text(trust.read_text().replace("retired_at: null", "retired_at: '2030-01-01T00:00:00.000Z'"))
    commit(repo, "retire the key: it leaked")
    code, out, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 0, err
    assert "retires key" in out
