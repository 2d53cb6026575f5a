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
    assert kinds == [("change", "baseline"), ("change", "ok"), ("record", "ok"), ("trust", "governance")]
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


# -- every field of the environment file ------------------------------------------------

GOVERNED = "policy: policies/prod.yaml\nserving:\n  endpoint: https://prod.internal\n"


def write_env(repo: Repo, version: int, extra: str = GOVERNED) -> None:
    Repo.set_env(repo, version)
    path = repo.root / "environments/prod.yaml"
    path.write_text(path.read_text() + extra)


@pytest.fixture
def governed(repo):
    """prod's environment file with a policy and an endpoint, v2 promoted through the process."""
    repo.git("checkout", "-q", "-b", "serving")
    write_env(repo, 1)
    repo.commit("prod: policy and serving")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #1 from acme/serving", "serving")
    repo.set_env = lambda version: write_env(repo, version)  # promotions keep the other fields
    repo.promote(2)
    return repo


def test_hand_edit_of_serving_endpoint_is_a_violation_naming_commit_and_field(governed, capsys):
    """Reproduction: a hand edit of serving.endpoint was "ok"."""
    write_env(governed, 2, GOVERNED.replace("https://prod.internal", "http://attacker.example"))
    hand = governed.commit("tweak endpoint")
    code, out, err = audit(governed, capsys, "--no-registry")
    assert code == 1
    assert (f"violation: environments/prod.yaml: serving.endpoint changed outside a merged pull request "
            f"(hand edit of a governance field) (commit {hand[:12]})") in err


def test_hand_edit_of_policy_and_metrics_names_every_field(governed, capsys):
    write_env(governed, 2, "policy: policies/lenient.yaml\nserving:\n  endpoint: https://prod.internal\n"
                           "metrics:\n  source: prometheus\n")
    hand = governed.commit("use another policy")
    code, _, err = audit(governed, capsys, "--no-registry")
    assert code == 1
    assert f"environments/prod.yaml: metrics.source, policy changed outside a merged pull request" in err
    assert hand[:12] in err


def test_governance_change_merged_by_pull_request_is_reported_not_failed(governed, capsys):
    governed.git("checkout", "-q", "-b", "move-endpoint")
    write_env(governed, 2, GOVERNED.replace("prod.internal", "prod2.internal"))
    governed.commit("move prod to the new cluster")
    governed.git("checkout", "-q", "main")
    governed.git("merge", "-q", "--no-ff", "-m", "Merge pull request #7 from acme/move-endpoint", "move-endpoint")
    merge = governed.git("rev-parse", "HEAD").strip()
    code, out, err = audit(governed, capsys, "--no-registry")
    assert code == 0, err
    assert (f"governance change: serving.endpoint in commit {merge[:12]} by Test Author "
            "(Merge pull request #7 from acme/move-endpoint)") in out
    code, out, _ = audit(governed, capsys, "--no-registry", "--json")
    assert json.loads(out)["governance"][-1]["fields"] == ["serving.endpoint"]


def test_governance_change_squash_merged_by_github_is_reported_not_failed(governed, capsys, monkeypatch):
    write_env(governed, 2, GOVERNED.replace("prod.internal", "prod2.internal"))
    monkeypatch.setenv("GIT_COMMITTER_NAME", "GitHub")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "noreply@github.com")  # the merge button's squash commit
    squash = governed.commit("Move prod to the new cluster (#8)")
    code, out, err = audit(governed, capsys, "--no-registry")
    assert code == 0, err
    assert f"governance change: serving.endpoint in commit {squash[:12]}" in out


def test_one_change_that_promotes_and_changes_governance_is_a_violation(governed, capsys):
    governed.git("checkout", "-q", "-b", "promote-v3")
    write_env(governed, 3, GOVERNED.replace("prod.internal", "canary.example"))
    governed.commit("promote v3 (and move the endpoint)")
    governed.git("checkout", "-q", "main")
    governed.git("merge", "-q", "--no-ff", "-m", "Merge promote-v3", "promote-v3")
    merge = governed.git("rev-parse", "HEAD").strip()
    record(governed.root, 3, source_commit=merge)
    governed.commit("record v3")
    code, _, err = audit(governed, capsys, "--no-registry")
    assert code == 1
    assert f"environments/prod.yaml: changes the model and also serving.endpoint" in err and merge[:12] in err


def test_a_record_commit_that_changes_governance_fields_is_a_violation(governed, capsys):
    write_env(governed, 3)
    merge = governed.commit("promote v3")
    record(governed.root, 3, source_commit=merge)
    write_env(governed, 3, GOVERNED + "metrics:\n  source: scrape\n")
    bad = governed.commit("record v3")
    code, _, err = audit(governed, capsys, "--no-registry")
    assert code == 1
    assert (f"environments/prod.yaml: metrics.source changed in a commit that adds a record: records change "
            f"only the model (commit {bad[:12]})") in err


# -- the policy file ---------------------------------------------------------------------

POLICY = ("apiVersion: promotion/v1\nenvironment: prod\ngates:\n  approvals:\n    required: 2\n"
          "    codeowners: true\npromotion_path:\n  requires_record_from: staging\n")
WEAK = "apiVersion: promotion/v1\nenvironment: prod\ngates: {}\npromotion_path: {}\n"


def policy_digest(repo: Repo, rel: str = "policies/prod.yaml") -> str:
    import hashlib

    return "sha256:" + hashlib.sha256((repo.root / rel).read_bytes()).hexdigest()


def write_policy(repo: Repo, text: str, rel: str = "policies/prod.yaml") -> None:
    (repo.root / rel).parent.mkdir(exist_ok=True)
    (repo.root / rel).write_text(text)


def merge_branch(repo: Repo, branch: str, message: str) -> str:
    """Commit the work tree on ``branch`` and merge it as a pull request would."""
    repo.git("checkout", "-q", "-b", branch)
    repo.commit(message)
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", f"Merge pull request #3 from acme/{branch}", branch)
    return repo.git("rev-parse", "HEAD").strip()


@pytest.fixture
def policed(tmp_path, monkeypatch):
    """prod names policies/prod.yaml from its first commit; v2 promoted under it."""
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER", "ACTIONS_ID_TOKEN_REQUEST_URL", "PROMOTION_ROOT",
                 "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(name, raising=False)
    repo = Repo(tmp_path / "repo")
    repo.set_env = lambda version: write_env(repo, version, "policy: policies/prod.yaml\n")
    repo.set_env(1)
    write_policy(repo, POLICY)
    repo.commit("initial")
    repo.promote(2, policy_digest=policy_digest(repo))
    return repo


def test_policy_weakened_by_a_direct_commit_is_a_violation_naming_file_and_commit(policed, capsys):
    """Reproduction: the approvals gate and the staging requirement removed by a direct push,
    then v3 promoted and recorded under the weak policy: the audit said ok."""
    write_policy(policed, WEAK)
    hand = policed.commit("typo")
    policed.promote(3, policy_digest=policy_digest(policed), approvers=[])  # what the rollout would sign
    code, out, err = audit(policed, capsys, "--no-registry")
    assert code == 1
    assert (f"violation: policies/prod.yaml: the policy of prod changed outside a merged pull request (hand edit "
            f"of a governance file) (commit {hand[:12]})") in err
    assert len(err.strip().splitlines()) == 1  # the record itself claims the policy it ran under
    assert "policies/prod.yaml changed by hand" in out


def test_policy_deleted_by_a_direct_commit_is_a_violation(policed, capsys):
    (policed.root / "policies/prod.yaml").unlink()
    hand = policed.commit("clean up")
    code, _, err = audit(policed, capsys, "--no-registry")
    assert code == 1
    assert f"policies/prod.yaml: the policy of prod was deleted outside a merged pull request" in err
    assert hand[:12] in err


def test_policy_change_merged_by_pull_request_is_listed_not_failed(policed, capsys):
    write_policy(policed, POLICY.replace("required: 2", "required: 3"))
    merge = merge_branch(policed, "stricter", "prod: three approvals")
    policed.promote(3, policy_digest=policy_digest(policed))
    code, out, err = audit(policed, capsys, "--no-registry")
    assert code == 0, err
    assert (f"governance change: policies/prod.yaml in commit {merge[:12]} by Test Author "
            "(Merge pull request #3 from acme/stricter)") in out


def test_a_record_that_claims_another_policy_is_a_violation(policed, capsys):
    """The file at the source commit is the weak one; the record says it was judged by the strict one."""
    strict = policy_digest(policed)
    write_policy(policed, WEAK)
    merge_branch(policed, "weaker", "prod: fewer gates")
    weak = policy_digest(policed)
    _, path = policed.promote(3, policy_digest=strict)
    source = policed.git("log", "-1", "--format=%H", "--", "environments/prod.yaml").strip()
    code, _, err = audit(policed, capsys, "--no-registry")
    assert code == 1
    assert (f"violation: environments/records/prod/{path.name}: record claims policy {strict}, but "
            f"policies/prod.yaml at its source commit {source[:12]} has digest {weak}: it was not judged by the "
            "policy in force") in err


def test_the_policy_judged_is_the_one_the_environment_named_at_each_point(policed, capsys):
    """A hand edit of the old file counts while prod used it; after a merged switch to a new
    file, edits of the old one are no one's policy and the new file is the one judged."""
    write_policy(policed, WEAK)
    first = policed.commit("loosen prod")                      # in force: a violation
    write_policy(policed, POLICY, "policies/prod-v2.yaml")
    write_env(policed, 2, "policy: policies/prod-v2.yaml\n")
    switch = merge_branch(policed, "new-policy", "prod: its own policy file")
    write_policy(policed, POLICY + "# unused\n")
    unused = policed.commit("old file, no longer used")        # nobody's policy: not judged
    write_policy(policed, WEAK, "policies/prod-v2.yaml")
    second = policed.commit("loosen the new file")             # in force: a violation
    code, out, err = audit(policed, capsys, "--no-registry")
    assert code == 1
    assert f"policies/prod.yaml: the policy of prod changed outside a merged pull request" in err
    assert f"policies/prod-v2.yaml: the policy of prod changed outside a merged pull request" in err
    assert first[:12] in err and second[:12] in err and unused[:12] not in err
    assert f"governance change: policies/prod-v2.yaml in commit {switch[:12]}" in out


# -- one decision, one record -----------------------------------------------------------

def test_two_records_of_one_decision_are_flagged(repo, capsys):
    from promotion.records.keys import private_key_path

    merge, first = repo.promote(2)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "records"))
    from _records_helpers import forge

    second = forge(repo.root, private_key_path(repo.root).read_bytes(), 2, recorded_at="2999-01-01T00:00:00.000Z",
                   source_commit=merge)
    added = repo.commit("record v2 again")
    code, _, err = audit(repo, capsys, "--no-registry")
    assert code == 1
    assert (f"environments/records/prod/{second.name}: a second record of one decision: promote fraud-detector v2 "
            f"from source commit {merge[:12]} is already recorded by {first.name} (commit {added[:12]})") in err


def test_rerun_after_a_crash_between_record_and_state_writes_no_second_record(repo, capsys):
    """write_record called again for the same decision (what a rerun does) keeps one record."""
    repo.set_env(2)
    merge = repo.commit("promote v2")
    first = record(repo.root, 2, source_commit=merge)
    again = record(repo.root, 2, source_commit=merge)  # the rerun: its state never learnt of the first
    assert again == first
    repo.commit("record v2")
    assert repo.git("ls-tree", "--name-only", "HEAD", "environments/records/prod/").split() == \
        ["environments/records/prod/000001-promote-v2.json"]
    code, _, err = audit(repo, capsys, "--no-registry")
    assert code == 0, err


# -- the registry: a history cut short --------------------------------------------------

@pytest.fixture
def registry(repo):
    """The embedded MLflow registry (sqlite) of the repository, fraud-detector v1..v3."""
    from promotion.registry import Registry

    reg = Registry.for_root(repo.root)
    reg.client.create_registered_model("fraud-detector")
    for v in (1, 2, 3):
        reg.client.create_model_version("fraud-detector", source=(repo.root / "artifact").as_uri())
        reg.set_tag("fraud-detector", v, "artifact_digest", f"sha256:{v:064x}")
    reg.set_alias("fraud-detector", "prod", 1)
    return reg


def test_alias_matching_the_last_record_passes(repo, registry, capsys):
    repo.promote(2)
    registry.set_alias("fraud-detector", "prod", 2)
    code, out, err = audit(repo, capsys)
    assert code == 0, err
    assert "registry: ok (alias prod -> v2, as the last record says)" in out


def test_force_push_dropping_the_last_record_commit_is_caught_by_the_alias(repo, registry, capsys):
    """Reproduction: the dropped record left a "pending" change and exit 0."""
    repo.promote(2)
    registry.set_alias("fraud-detector", "prod", 2)
    repo.promote(3)
    registry.set_alias("fraud-detector", "prod", 3)  # the rollout promoted v3 and recorded it
    repo.git("reset", "-q", "--hard", "HEAD~1")      # ...and a force-push dropped the record commit
    code, out, err = audit(repo, capsys)
    assert code == 1
    assert "violation: registry: history truncated or alias moved outside promotion: alias prod -> v3, " \
           "last record says v2" in err


def test_alias_moved_by_hand_to_another_artifact_is_caught(repo, registry, capsys):
    repo.promote(2)
    registry.set_alias("fraud-detector", "prod", 2)
    registry.set_tag("fraud-detector", 2, "artifact_digest", "sha256:" + "9" * 64)
    code, _, err = audit(repo, capsys)
    assert code == 1 and f"alias prod -> v2 with artifact digest sha256:{'9' * 64}" in err


def test_no_registry_is_reported_as_not_checked(repo, capsys):
    repo.promote(2)
    code, out, _ = audit(repo, capsys)
    assert code == 0 and "registry: skipped (cannot read the registry: no registry at sqlite:///" in out


def test_a_pull_request_that_brings_its_own_signer_and_promote_record_is_a_violation(repo, capsys):
    """The PR adds a key to the trust file, moves the model and adds a record signed by that key:
    no rollout ran. A promote record is never added by the commit that makes its change."""
    repo.promote(2)
    from cryptography.hazmat.primitives import serialization
    from securesystemslib.signer import CryptoSigner

    from promotion.records.keys import register

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "records"))
    from _records_helpers import forge

    repo.git("checkout", "-q", "-b", "sneaky")
    mallory = CryptoSigner.generate_ed25519()
    pem = mallory._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())
    register(repo.root, mallory)
    repo.set_env(3)
    forged = forge(repo.root, pem, 3, recorded_at="2999-01-01T00:00:00.000Z")
    repo.commit("promote v3, recorded")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "-m", "Merge pull request #9 from mallory/sneaky", "sneaky")
    merge = repo.git("rev-parse", "HEAD").strip()
    code, out, err = audit(repo, capsys, "--no-registry")
    assert code == 1
    key = mallory.public_key.keyid[:12]
    # a merged pull request that also adds a record does not make its key a signer
    assert (f"violation: environments/trust.yaml: trusts key {key} outside a merged pull request (it also adds the "
            f"record environments/records/prod/{forged.name})") in err
    assert (f"{forged.name}: signed by key {key}, which commit {merge[:12]} trusted outside a merged pull "
            "request") in err
    assert f"environments/prod.yaml: changed to fraud-detector v3 without a promotion record" in err
    assert merge[:12] in err and f"trusts key {key}" in out
