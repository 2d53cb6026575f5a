"""Keyless records in the audit: offline the transparency-log comparison is skipped and
said so; online the log's integrated time is checked and a record the log holds but git
lost (a history cut short) is found. The log is the synthetic deployment's, over HTTP."""

from __future__ import annotations

import pytest
from _records_helpers import commit, git, record, set_env
from _records_sigstore import FakeRekor, FakeSigstore, FakeSigstoreSigner

from promotion.cli import main

WORKFLOW = "https://github.com/acme/models/.github/workflows/rollout.yml@refs/heads/main"


@pytest.fixture
def fake():
    return FakeSigstore()  # a log of its own per test: what one repository's workflow signed


@pytest.fixture
def rekor(fake, monkeypatch):
    log = FakeRekor(fake)
    monkeypatch.setenv("PROMOTION_REKOR_URL", log.url)
    yield log
    log.close()


@pytest.fixture
def keyless(git_repo, fake):
    repo = git_repo
    (repo / "environments/sigstore-root.json").write_text(fake.trusted_root_json())
    (repo / "environments/trust.yaml").write_text(
        "keys: []\nidentities:\n  - repository: acme/models\n    workflow: .github/workflows/rollout.yml\n"
        "    ref: refs/heads/main\nsigstore:\n  trusted_root: environments/sigstore-root.json\n")
    commit(repo, "trust the rollout workflow")
    promote(repo, fake, 2)
    return repo


def promote(repo, fake, version: int):
    set_env(repo, version)
    merge = commit(repo, f"promote v{version}")
    path = record(repo, version, source_commit=merge, signer=FakeSigstoreSigner(fake, WORKFLOW))
    commit(repo, f"record v{version}")
    return path


def audit(repo, capsys, *extra):
    code = main(["--root", str(repo), "audit", "prod", "--no-registry", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_offline_the_transparency_log_is_skipped_and_said_so(keyless, capsys):
    code, out, err = audit(keyless, capsys)
    assert code == 0, err
    assert "transparency log: skipped (offline: 1 keyless record(s) not compared with the transparency log " \
           "(run with --online))" in out


def test_online_every_keyless_record_is_in_the_log_with_its_time(keyless, rekor, capsys):
    code, out, err = audit(keyless, capsys, "--online")
    assert code == 0, err
    assert f"transparency log: ok (1 keyless record(s) compared with {rekor.url})" in out


def test_online_a_record_missing_from_the_log_fails(keyless, rekor, fake, capsys):
    fake.entries.clear()
    code, _, err = audit(keyless, capsys, "--online")
    assert code == 1 and "000001-promote-v2.json: its log entry" in err and "is not in the transparency log" in err


def test_online_a_record_the_log_holds_and_git_lost_is_a_truncated_history(keyless, rekor, fake, capsys):
    promote(keyless, fake, 3)
    git(keyless, "reset", "-q", "--hard", "HEAD~1")  # a force-push dropped the record commit of v3
    code, out, err = audit(keyless, capsys)
    assert code == 0 and "pending: fraud-detector v3" in out  # offline, and no registry: nothing to compare with
    code, _, err = audit(keyless, capsys, "--online")
    assert code == 1
    assert (f"violation: history truncated: the transparency log holds a record for sha256:{3:064x} signed by "
            f"{WORKFLOW}") in err


def test_online_an_unreachable_log_is_skipped_not_failed(keyless, monkeypatch, capsys):
    monkeypatch.setenv("PROMOTION_REKOR_URL", "http://127.0.0.1:9")
    code, out, err = audit(keyless, capsys, "--online")
    assert code == 0, err
    assert "transparency log: skipped (cannot reach http://127.0.0.1:9:" in out


# -- the trusted root is part of who may sign ---------------------------------------------

def _forge_keyless(repo, signer_fake, version: int):
    """The attacker's own Sigstore (its own CA and log) issues a certificate for the trusted
    workflow's identity and signs the next promote record with it."""
    from _records_helpers import forge

    set_env(repo, version)
    change = commit(repo, f"promote v{version}")
    path = forge(repo, None, version, recorded_at="2030-01-01T00:00:00.000Z", source_commit=change,
                 signer=FakeSigstoreSigner(signer_fake, WORKFLOW))
    commit(repo, f"record v{version}")
    return path


def test_a_trusted_root_swapped_by_a_direct_commit_is_a_violation_and_verifies_nothing(keyless, capsys):
    """Reproduction: trust.yaml pointed at the attacker's root; the audit listed it as governance
    and a record their CA certified for the rollout workflow verified."""
    evil = FakeSigstore()
    (keyless / "environments/evil-root.json").write_text(evil.trusted_root_json())
    trust = keyless / "environments/trust.yaml"
    trust.write_text(trust.read_text().replace("environments/sigstore-root.json", "environments/evil-root.json"))
    swap = commit(keyless, "sigstore: use the staging instance")
    forged = _forge_keyless(keyless, evil, 3)
    code, out, err = audit(keyless, capsys)
    assert code == 1
    assert (f"violation: environments/trust.yaml: changes the Sigstore trusted root outside a merged pull request "
            f"(not a merged pull request)") in err and f"(commit {swap[:12]})" in err
    assert f"environments/records/prod/{forged.name}" in err
    code, _, err = main_verify(keyless, capsys)
    assert code == 1 and forged.name in err


def test_a_trusted_root_file_overwritten_in_place_is_ignored(keyless, capsys):
    """Only the root file changes (trust.yaml untouched): the root counts as of the trust
    file's own commits, never the work tree's copy."""
    evil = FakeSigstore()
    (keyless / "environments/sigstore-root.json").write_text(evil.trusted_root_json())
    commit(keyless, "refresh the sigstore root")
    forged = _forge_keyless(keyless, evil, 3)
    code = main(["--root", str(keyless), "verify", str(forged)])
    err = capsys.readouterr().err
    assert code == 1 and f"FAIL  environments/records/prod/{forged.name}: keyless signature does not verify" in err
    code = main(["--root", str(keyless), "verify", str(keyless / "environments/records/prod/000001-promote-v2.json")])
    assert code == 0 and "ok    environments/records/prod/000001-promote-v2.json" in capsys.readouterr().out
    code, _, err = audit(keyless, capsys)
    assert code == 1 and forged.name in err


def test_a_trusted_root_changed_by_a_merged_pull_request_counts(keyless, fake, capsys):
    import json

    from _records_helpers import merged

    trust = keyless / "environments/trust.yaml"
    # the same CA and log, written anew: another trusted root file as far as git can tell
    (keyless / "environments/sigstore-root-2.json").write_text(json.dumps(json.loads(fake.trusted_root_json()),
                                                                          indent=1))
    trust.write_text(trust.read_text().replace("environments/sigstore-root.json", "environments/sigstore-root-2.json"))
    (keyless / "environments/sigstore-root.json").write_text("{}")  # the old file: no longer read
    merge = merged(keyless, "sigstore: move the trusted root", branch="root")
    promote(keyless, fake, 3)
    code, out, err = audit(keyless, capsys)
    assert code == 0, err
    assert f"governance change: environments/trust.yaml (changes the Sigstore trusted root) in commit {merge[:12]}" \
        in out
    code, out, _ = main_verify(keyless, capsys)
    assert code == 0 and "ok: 2 record(s) verified" in out


def main_verify(repo, capsys):
    code = main(["--root", str(repo), "verify", "--env", "prod"])
    out = capsys.readouterr()
    return code, out.out, out.err
