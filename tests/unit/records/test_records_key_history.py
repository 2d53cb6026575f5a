"""A key's validity comes from git history of environments/trust.yaml, never from a time
the signer writes: real git repositories, real keys, the CLI an operator runs."""

from __future__ import annotations

import json

import pytest
from _records_helpers import commit, forge, git, record, set_env

from promotion.cli import main
from promotion.records import keys


def run(repo, capsys, *argv):
    code = main(["--root", str(repo), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _promoted(repo, version: int) -> tuple[str, object]:
    """A merged change of the environment file and the rollout's record commit."""
    set_env(repo, version)
    merge = commit(repo, f"promote v{version}")
    path = record(repo, version, source_commit=merge)
    commit(repo, f"record v{version}")
    return merge, path


def _before(path) -> str:
    """A time just after an existing record: before any retirement that followed it."""
    from datetime import timedelta

    from promotion.records.statement import format_time, parse_time
    from promotion.records.verify import verify_record

    return format_time(parse_time(verify_record(path, path.parents[3]).recorded_at) + timedelta(seconds=1))


def test_record_forged_with_a_copy_of_the_retired_key_fails_verify_and_audit(git_repo, capsys):
    """Reproduction: a retired key signs a record dated before its retirement, committed after it."""
    repo = git_repo
    _, first = _promoted(repo, 2)
    old_keyid = keys.load_signing_key(repo, create=False)[0].public_key.keyid
    stolen = keys.private_key_path(repo).read_bytes()   # a copy taken before the rotation
    code, out, _ = run(repo, capsys, "keys", "rotate")
    assert code == 0
    rotation = commit(repo, "rotate the signing key")
    code, out, _ = run(repo, capsys, "verify", "--env", "prod")
    assert code == 0 and first.name in out  # records committed before the retirement stay valid

    set_env(repo, 3)
    change = commit(repo, "promote v3")
    forged = forge(repo, stolen, 3, recorded_at=_before(first), source_commit=change)
    added = commit(repo, "record v3")
    reason = f"signed by key {old_keyid[:12]}, which was retired in commit {rotation[:12]}"

    code, _, err = run(repo, capsys, "verify", str(forged))
    assert code == 1
    assert f"environments/records/prod/{forged.name}: {reason} (environments/trust.yaml); the record was " \
           f"added after that, in commit {added[:12]}" in err
    code, out, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1
    assert f"violation: environments/records/prod/{forged.name}: {reason}" in err
    assert f"(commit {added[:12]})" in err
    assert "retires key " + old_keyid[:12] in out  # the rotation shows in the timeline


def test_unretiring_the_key_in_the_same_commit_does_not_help(git_repo, capsys):
    repo = git_repo
    _, first = _promoted(repo, 2)
    stolen = keys.private_key_path(repo).read_bytes()
    keys.rotate(repo)
    rotation = commit(repo, "rotate")
    trust = repo / "environments/trust.yaml"
    lines = trust.read_text().splitlines()
    trust.write_text("\n".join(line if "retired_at: '" not in line and 'retired_at: "' not in line
                               else line.split("retired_at:")[0] + "retired_at: null" for line in lines) + "\n")
    set_env(repo, 3)
    change = commit(repo, "promote v3")
    forged = forge(repo, stolen, 3, recorded_at=_before(first), source_commit=change)
    commit(repo, "record v3 and trust the old key again")
    code, _, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1 and f"which was retired in commit {rotation[:12]}" in err and forged.name in err


def test_a_side_branch_cut_before_the_retirement_counts_from_its_merge(git_repo, capsys):
    """On the branch the key was still valid; first-parent history judges the merge."""
    repo = git_repo
    _, first = _promoted(repo, 2)
    stolen = keys.private_key_path(repo).read_bytes()
    git(repo, "checkout", "-q", "-b", "old-key")
    set_env(repo, 3)
    change = commit(repo, "promote v3")
    forge(repo, stolen, 3, recorded_at=_before(first), source_commit=change)
    commit(repo, "record v3")
    git(repo, "checkout", "-q", "main")
    keys.rotate(repo)
    rotation = commit(repo, "rotate")
    git(repo, "merge", "-q", "--no-ff", "-m", "Merge old-key", "old-key")
    merge = git(repo, "rev-parse", "HEAD").strip()
    code, _, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1
    assert f"which was retired in commit {rotation[:12]} (environments/trust.yaml); the record was added " \
           f"after that, in commit {merge[:12]}" in err


def test_a_key_trusted_only_after_its_record_was_committed_does_not_count(git_repo, capsys):
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner

    repo = git_repo
    _promoted(repo, 2)
    mallory = CryptoSigner.generate_ed25519()
    pem = mallory._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    set_env(repo, 3)
    change = commit(repo, "promote v3")
    forged = forge(repo, pem, 3, recorded_at="2020-01-01T00:00:00.000Z", source_commit=change)
    added = commit(repo, "record v3")
    keys.register(repo, mallory)
    commit(repo, "trust another key")
    code, _, err = run(repo, capsys, "audit", "prod", "--no-registry")
    assert code == 1
    assert f"{forged.name}: signed by key {mallory.public_key.keyid[:12]}, which environments/trust.yaml when " \
           f"the record was added in commit {added[:12]} does not list" in err


def test_rotate_destroys_the_retired_private_key(git_repo, capsys):
    from promotion.errors import RecordError
    from promotion.records.signers.local import LocalSigner

    repo = git_repo
    _promoted(repo, 2)
    old, _, _ = keys.load_signing_key(repo, create=False)
    pem = keys.private_key_path(repo).read_bytes()
    code, out, _ = run(repo, capsys, "keys", "rotate")
    assert code == 0
    state_keys = keys.private_key_path(repo).parent
    assert [p.name for p in state_keys.iterdir()] == ["signing.key"]
    assert all(pem not in p.read_bytes() for p in state_keys.parent.rglob("*") if p.is_file())
    assert keys.load_signing_key(repo, create=False)[0].public_key.keyid != old.public_key.keyid
    with pytest.raises(RecordError, match=f"signing key {old.public_key.keyid[:12]} was retired"):
        record(repo, 3, signer=LocalSigner(old))
    code, out, _ = run(repo, capsys, "keys", "list", "--json")
    retired = [k for k in json.loads(out)["keys"] if k["keyid"] == old.public_key.keyid]
    assert retired and retired[0]["retired_at"] is not None


def test_unreadable_record_is_one_line_and_exit_2(git_repo, capsys):
    repo = git_repo
    _, path = _promoted(repo, 2)
    for junk in (b"[" * 100_000, b'{"payload": ' + b"1" * 5000 + b"}", b"\xff\xfe not json"):
        path.write_bytes(junk)
        code, out, err = run(repo, capsys, "verify", str(path))
        assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert err.startswith(f"FAIL  environments/records/prod/{path.name}: ")
        code, out, err = run(repo, capsys, "verify", "--env", "prod")
        assert code == 2 and "Traceback" not in err
