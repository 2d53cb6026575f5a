"""``promotion audit`` against real git repositories built in temporary directories."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "records"))
from _records_helpers import record  # noqa: E402

from promotion.cli import main  # noqa: E402


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "environments").mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "ci@example.com")
        self.git("config", "user.name", "ci")
        self.git("config", "commit.gpgsign", "false")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], cwd=self.root, check=True, capture_output=True, text=True).stdout

    def set_env(self, version: int) -> None:
        (self.root / "environments/prod.yaml").write_text(
            "apiVersion: promotion/v1\nenvironment: prod\nmodel:\n  name: fraud-detector\n"
            f"  version: {version}\n  digest: sha256:{version:064x}\n")

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def commit_paths(self, message: str) -> str:
        """Commit only what is staged."""
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()

    def promote(self, version: int, **kw) -> tuple[str, Path]:
        """PR merge changing the env file, then the rollout's record commit."""
        self.set_env(version)
        merge = self.commit(f"promote v{version}")
        path = record(self.root, version, source_commit=merge, **kw)
        self.commit(f"record v{version}")
        return merge, path

    def rollback(self, to: int, replaced: int) -> Path:
        self.set_env(to)
        path = record(self.root, to, action="rollback", replaced_version=replaced, reason="slo breach")
        self.commit(f"rollback to v{to}")
        return path


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER", "ACTIONS_ID_TOKEN_REQUEST_URL", "PROMOTION_ROOT",
                 "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    r = Repo(tmp_path / "repo")
    r.set_env(1)
    r.commit("initial")
    return r


def audit(repo: Repo, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["--root", str(repo.root), "audit", "prod", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clean_history_passes_with_timeline(repo, capsys):
    repo.promote(2, approvers=[{"login": "alice", "commit": "aaa1111"}, {"login": "bob", "commit": "aaa1111"}])
    repo.promote(3)
    repo.rollback(2, replaced=3)
    repo.set_env(4)
    pending = repo.commit("promote v4 (rollout not run yet)")
    code, out, err = audit(repo, capsys)
    assert code == 0, err
    assert "000001-promote-v2.json" not in err
    assert "promote" in out and "alice,bob" in out and "rollback" in out
    assert f"pending: fraud-detector v4 set in commit {pending[:12]}" in out
    assert "ok: every record verifies" in out


def test_json_and_at(repo, capsys):
    repo.promote(2)
    code, out, _ = audit(repo, capsys, "--json", "--at", "2999-01-01T00:00:00Z")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert report["at"]["running"]["version"] == 2
    assert report["at"]["running"]["record"] == "000001-promote-v2.json"
    kinds = [(e["kind"], e["status"]) for e in report["timeline"]]
    assert kinds == [("change", "baseline"), ("change", "ok"), ("record", "ok")]
    code, out, _ = audit(repo, capsys, "--json", "--at", "2000-01-01T00:00:00Z")
    assert json.loads(out)["at"]["running"] is None


def test_edited_record_names_record_and_commit(repo, capsys):
    _, path = repo.promote(2)
    repo.promote(3)
    doc = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"]["approvers"] = [{"login": "mallory", "commit": None}]
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    path.write_text(json.dumps(doc))
    bad = repo.commit("fix typo")
    code, _, err = audit(repo, capsys)
    assert code == 1
    assert f"environments/records/prod/000001-promote-v2.json: record was modified after it was added" in err
    assert f"(commit {bad[:12]})" in err
    assert "000001-promote-v2.json: signature by key" in err


def test_deleted_record_names_record_and_commit(repo, capsys):
    repo.promote(2)
    _, path = repo.promote(3)
    repo.promote(4)
    path.unlink()
    bad = repo.commit("cleanup")
    code, _, err = audit(repo, capsys)
    assert code == 1
    assert f"environments/records/prod/000002-promote-v3.json: record was deleted (commit {bad[:12]})" in err
    assert "000003-promote-v4.json: sequence gap: record #2 is missing" in err


def test_reordered_records_are_caught(repo, capsys):
    repo.set_env(2)
    first_change = repo.commit("promote v2")
    first = record(repo.root, 2, source_commit=first_change)
    repo.set_env(3)
    repo.git("add", "environments/prod.yaml")
    second_change = repo.commit_paths("promote v3")
    second = record(repo.root, 3, source_commit=second_change)
    # the tip of the chain is committed before the record it links to
    repo.git("add", str(second.relative_to(repo.root)), "environments/records/keys", "environments/trust.yaml")
    tip_commit = repo.commit_paths("record v3")
    repo.git("add", str(first.relative_to(repo.root)))
    repo.commit_paths("record v2")
    code, _, err = audit(repo, capsys)
    assert code == 1
    assert (f"environments/records/prod/000002-promote-v3.json: added before the record preceding it "
            f"(records reordered) (commit {tip_commit[:12]})") in err


def test_unsigned_record_is_caught(repo, capsys):
    merge, path = repo.promote(2)
    repo.set_env(3)
    change = repo.commit("promote v3")
    statement = json.loads(base64.b64decode(json.loads(path.read_text())["payload"]))
    statement["predicate"].update(sequence=2, source_commit=change)
    statement["predicate"]["model"].update(version=3, digest=f"sha256:{3:064x}")
    statement["subject"][0]["digest"]["sha256"] = f"{3:064x}"
    (path.parent / "000002-promote-v3.json").write_text(json.dumps(statement))
    bad = repo.commit("record v3")
    code, _, err = audit(repo, capsys)
    assert code == 1
    assert f"environments/records/prod/000002-promote-v3.json: not a signed record" in err
    assert f"(commit {bad[:12]})" in err


def test_hand_edit_bypassing_the_process_names_commit(repo, capsys):
    repo.promote(2)
    repo.set_env(9)
    hand = repo.commit("quick fix")
    repo.promote(3)
    code, out, err = audit(repo, capsys)
    assert code == 1
    assert (f"environments/prod.yaml: changed to fraud-detector v9 without a promotion record "
            f"(hand edit bypassed the process) (commit {hand[:12]})") in err


def test_record_without_matching_change_is_caught(repo, capsys):
    repo.promote(2)
    path = record(repo.root, 5, source_commit="1234567")
    bad = repo.commit("record v5")
    code, _, err = audit(repo, capsys)
    assert code == 1
    assert f"{path.name}: record is not backed by a change of the environment file" in err
    assert bad[:12] in err


def test_rejected_promotion_reverted_by_rollout_is_explained(repo, capsys):
    repo.promote(2)
    repo.set_env(3)
    repo.commit("promote v3")
    repo.rollback(2, replaced=3)  # the canary failed: revert + rollback record in one commit
    code, out, err = audit(repo, capsys)
    assert code == 0, err


def test_merge_commits_are_audited_on_first_parent(repo, capsys):
    repo.git("checkout", "-q", "-b", "promote-v2")
    repo.set_env(2)
    repo.commit("bump to v2")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge PR", "promote-v2")
    merge = repo.git("rev-parse", "HEAD").strip()
    record(repo.root, 2, source_commit=merge)
    repo.commit("record v2")
    code, _, err = audit(repo, capsys)
    assert code == 0, err


def test_unknown_environment_is_bad_input(repo, capsys):
    code, _, err = audit_env(repo, capsys, "nope")
    assert code == 2 and "environments/nope.yaml: no history" in err


def audit_env(repo, capsys, env):
    code = main(["--root", str(repo.root), "audit", env])
    out = capsys.readouterr()
    return code, out.out, out.err
