from __future__ import annotations

import json

from _records_helpers import commit, merged, record

from promotion.cli import main


def run(repo, capsys, *argv):
    code = main(["--root", str(repo), *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_chain_ok_then_tampered(repo, capsys):
    first = record(repo, 3)
    record(repo, 4)
    code, out, _ = run(repo, capsys, "verify")
    assert code == 0
    assert "environments/records/prod/000001-promote-v3.json: promote fraud-detector v3 signed by key:" in out
    first.write_text(first.read_text().replace('"sig": "', '"sig": "AAAA'))
    code, out, err = run(repo, capsys, "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["errors"][0].startswith("environments/records/prod/000001-promote-v3.json: ")


def test_verify_single_file_and_missing_file(repo, capsys, monkeypatch):
    path = record(repo, 3)
    monkeypatch.chdir(repo)
    code, out, _ = run(repo, capsys, "verify", str(path.relative_to(repo)))
    assert code == 0 and "signed by key:" in out
    code, _, err = run(repo, capsys, "verify", "environments/records/prod/000009-promote-v1.json")
    assert code == 2 and "no such record file" in err


def test_keys_create_rotate_list(git_repo, capsys):
    repo = git_repo
    code, out, _ = run(repo, capsys, "keys", "create")
    assert code == 0 and "created signing key" in out and "environments/trust.yaml" in out
    code, out, _ = run(repo, capsys, "keys", "create")
    assert code == 0 and "already listed" in out
    old = record(repo, 3)
    code, _, err = run(repo, capsys, "keys", "rotate")
    assert code == 2 and "000001-promote-v3.json: record not committed; commit records before rotating" in err
    commit(repo, "record v3")
    code, out, _ = run(repo, capsys, "keys", "rotate")
    assert code == 0 and "retired key" in out and "private key is destroyed" in out
    from promotion.records.keys import private_key_path

    assert oct(private_key_path(repo).stat().st_mode & 0o777) == "0o600"  # the new key too
    assert [p.name for p in private_key_path(repo).parent.iterdir()] == ["signing.key"]
    merged(repo, "rotate the signing key")  # a new signer is trusted through a pull request
    record(repo, 4)
    code, out, _ = run(repo, capsys, "keys", "list", "--json")
    listed = json.loads(out)["keys"]
    assert len(listed) == 2 and sum(k["retired_at"] is None for k in listed) == 1
    code, out, _ = run(repo, capsys, "verify", "--env", "prod")
    assert code == 0 and old.name in out


def test_bad_trust_file_is_bad_input(repo, capsys):
    record(repo, 3)
    (repo / "environments/trust.yaml").write_text("keys:\n  - keyid: abc\n")
    code, _, err = run(repo, capsys, "verify")
    assert code == 2 and "environments/trust.yaml:2 keys[0].public_key" in err


def test_audit_bad_time_is_usage_error(repo, capsys):
    code, _, err = run(repo, capsys, "audit", "prod", "--at", "yesterday")
    assert code == 2 and "--at 'yesterday': not an ISO 8601 time" in err
