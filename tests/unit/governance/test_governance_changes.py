"""Governance changes: listed file by file and field by field, blocked until the owners the
base policies name approve, never together with a promotion (real git; GitHub faked)."""

from __future__ import annotations

import json

import pytest

from promotion.cli import main
from tests.support.github_fake import GitHubFake

TRUST = """keys: []
identities:
  - repository: mallory/fork
    workflow: .github/workflows/rollout.yml
    ref: refs/heads/main
"""


def detect(root, base: str):
    from promotion.governance import detect

    return detect(root, base)


def governance(root, *args: str) -> int:
    return main(["--root", str(root), "gate", "--governance", "--base", "main", *args])


def approve(root, name: str) -> None:
    assert main(["--root", str(root), "approve", "--governance", "--by", name]) == 0


def checks(out: str) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(out)["checks"]}


def test_a_pull_request_that_only_edits_trust_yaml_blocks_until_the_owners_approve(pull, capsys):
    """Reproduction: a PR adding a signer to trust.yaml got "nothing to gate", a green check."""
    pull.write("environments/trust.yaml", TRUST)
    pull.commit("trust my fork")

    code = governance(pull.root)
    out = capsys.readouterr().out
    assert code == 1
    assert "governance of" in out and "1 governance change(s): BLOCKED" in out
    assert "changed: environments/trust.yaml (added)" in out
    assert governance(pull.root, "--json") == 1
    prod = checks(capsys.readouterr().out)["governance.approvals (policies/prod.yaml)"]
    assert (prod["value"], prod["threshold"], prod["verdict"]) == (0, ">= 2", "BLOCK")

    approve(pull.root, "Test Author")  # the author of the change never counts
    approve(pull.root, "bob")
    capsys.readouterr()
    assert governance(pull.root, "--json") == 1
    prod = checks(capsys.readouterr().out)["governance.approvals (policies/prod.yaml)"]
    assert prod["value"] == 1 and "Test Author (author of the last change to .)" in prod["message"]

    approve(pull.root, "carol")
    capsys.readouterr()
    assert governance(pull.root) == 0
    assert "2 of 2 approval(s): bob, carol" in capsys.readouterr().out

    # a new commit needs new approvals
    pull.write("environments/trust.yaml", TRUST + "# and one more thing\n")
    pull.commit("tweak")
    assert governance(pull.root) == 1


@pytest.mark.parametrize("old,new,field", [
    ("endpoint: http://127.0.0.1:3000", "endpoint: https://collector.example", "serving.endpoint"),
    ("admin_token_env: PROMOTION_ADMIN_TOKEN", "admin_token_env: PROMOTION_MY_ADMIN", "serving.admin_token_env"),
    ("\nmetrics:", "\ndrift:\n  production_window: /tmp/mine.parquet\n\nmetrics:", "drift"),
    ("policy: policies/prod.yaml", "policy: policies/dev.yaml", "policy"),
])
def test_an_environment_field_other_than_the_model_is_a_governance_change(pull, capsys, old, new, field):
    pull.edit("environments/prod.yaml", old, new)
    pull.commit(f"change {field}")

    code = governance(pull.root, "--json")

    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["verdict"] == "BLOCK"
    changed = doc["changes"]["governance"]
    assert [(c["path"], c["field"]) for c in changed] == [("environments/prod.yaml", field)]
    assert changed[0]["line"] == next(i for i, line in enumerate(
        (pull.root / "environments/prod.yaml").read_text().splitlines(), 1) if line.strip().startswith(field.split(".")[-1]))
    assert doc["changes"]["promotions"] == []


def test_a_promotion_that_also_changes_a_policy_blocks_and_says_split(pull, capsys):
    pull.edit("environments/prod.yaml", "  version: 1\n", "  version: 2\n")
    pull.edit("policies/prod.yaml", "psi_max: 0.2", "psi_max: 5")
    pull.commit("promote and loosen drift")
    for name in ("bob", "carol"):
        approve(pull.root, name)
    capsys.readouterr()

    assert governance(pull.root, "--json") == 1
    split = checks(capsys.readouterr().out)["governance.split"]
    assert split["verdict"] == "BLOCK" and "promotes prod" in split["message"] and "split it" in split["message"]

    assert main(["--root", str(pull.root), "gate", "prod", "--base", "main", "--only", "promotion_path", "--json"]) == 1
    gates = {g["gate"]: g for g in json.loads(capsys.readouterr().out)["gates"]}
    assert gates["governance"]["verdict"] == "BLOCK"
    assert "policies/prod.yaml (modified)" in gates["governance"]["checks"][0]["message"]


def test_only_model_fields_is_a_promotion_and_no_governance_change(pull, capsys):
    pull.edit("environments/prod.yaml", "  version: 1\n", "  version: 2\n")
    pull.edit("environments/prod.yaml", "# Desired state", "# The desired state")  # comments are not fields
    pull.commit("promote prod")

    changes = detect(pull.root, "main")
    assert changes.governance == () and changes.promotions == ("prod",)
    assert governance(pull.root) == 0
    assert "no governance change: PASS" in capsys.readouterr().out


@pytest.mark.parametrize("path", [".github/workflows/gates.yml", ".github/CODEOWNERS", "promotion/gates/metrics.py",
                                  "services/router/worker.py", "Makefile", "pyproject.toml", "uv.lock",
                                  "environments/records/prod/000001-promote-v1.json", "README.md"])
def test_every_file_outside_the_model_fields_is_governance(pull, path):
    pull.write(path, "changed\n")
    pull.commit(f"touch {path}")
    assert [str(c) for c in detect(pull.root, "main").governance] == [f"{path} (added)"]


def test_a_symlinked_environment_file_is_governance(pull):
    target = pull.root / "elsewhere.yaml"
    target.write_text((pull.root / "environments/prod.yaml").read_text())
    (pull.root / "environments/prod.yaml").unlink()
    (pull.root / "environments/prod.yaml").symlink_to("../elsewhere.yaml")
    pull.commit("link")
    listed = {str(c) for c in detect(pull.root, "main").governance}
    assert "environments/prod.yaml (file mode 100644 -> 120000)" in listed


def test_no_governance_owners_on_the_base_fails_closed(pull, capsys):
    for env in ("dev", "staging", "prod"):
        path = pull.root / "policies" / f"{env}.yaml"
        path.write_text(path.read_text().split("\n# Who approves a governance change")[0] + "\n")
    pull.commit("no governance section")
    from tests.unit.governance.conftest import git

    git(pull.root, "branch", "-f", "main", pull.head)
    pull.write("environments/trust.yaml", TRUST)
    pull.commit("trust my fork")
    approve(pull.root, "bob")

    assert governance(pull.root) == 1
    assert "no policy on the base commit names governance owners" in capsys.readouterr().out


def test_github_reviews_count_only_from_the_governance_owners(pull, monkeypatch, capsys):
    pull.write("environments/trust.yaml", TRUST)
    head = pull.commit("trust my fork")
    with GitHubFake() as gh:
        monkeypatch.setenv("GITHUB_API_URL", gh.url)
        monkeypatch.setenv("GITHUB_TOKEN", gh.token)
        monkeypatch.setenv("PROMOTION_GITHUB_APP_TOKEN", gh.app_token)
        gh.add_pull(7, author="alice", head_sha=head)
        for login in ("alice", "bob", "carol", "eve"):
            gh.add_collaborator(login, "write")
        gh.add_team_member("your-org", "ml-platform", "bob")
        gh.add_team_member("your-org", "ml-release-managers", "carol")
        gh.add_team_member("your-org", "ml-release-managers", "alice")
        args = ("--repo", gh.full_name, "--pr", "7", "--json")
        gh.add_review(7, "alice", "APPROVED", commit_id=head)   # the author, though an owner
        gh.add_review(7, "eve", "APPROVED", commit_id=head)     # write access, not an owner
        gh.add_review(7, "bob", "APPROVED", commit_id=head)

        assert governance(pull.root, *args) == 1
        found = checks(capsys.readouterr().out)
        prod = found["governance.approvals (policies/prod.yaml)"]
        assert prod["value"] == 1 and "bob" in prod["message"]
        assert "alice (author of the pull request)" in prod["message"]
        assert "eve (not a member of" in prod["message"] or "eve (not in a required team" in prod["message"]
        assert found["governance.approvals (policies/dev.yaml)"]["verdict"] == "PASS"

        gh.add_review(7, "carol", "APPROVED", commit_id=head)
        assert governance(pull.root, *args) == 0, capsys.readouterr().out


def test_github_changed_flags_governance_and_gates_no_environment(pull, monkeypatch, capsys, tmp_path):
    """Reproduction: `github changed` said [] for a PR editing trust.yaml, so the required
    check passed without running anything."""
    pull.write("environments/trust.yaml", TRUST)
    head = pull.commit("trust my fork")
    event, output = tmp_path / "event.json", tmp_path / "output"
    event.write_text(json.dumps({"pull_request": {"number": 7, "base": {"sha": pull.base}, "head": {"sha": head}}}))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))

    assert main(["--root", str(pull.root), "github", "changed"]) == 0

    assert output.read_text().splitlines() == ["environments=[]", "targets=[]", "governance=true"]
    assert "environments/trust.yaml (added)" in capsys.readouterr().err
