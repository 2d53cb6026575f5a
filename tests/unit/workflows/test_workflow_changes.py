"""The real gates and rollout workflows, run by the harness, for what works without the
other commands: which environments an event touches, and the required "gates" check."""

from __future__ import annotations

from pathlib import Path

from tests.support.workflow_runner import (
    WorkflowRunner, install_venv_shim, pull_request_payload, push_payload)
from tests.unit.workflows.conftest import WORKFLOWS, edit, git


def runner(name: str, repo: Path, tmp_path: Path) -> WorkflowRunner:
    return WorkflowRunner(WORKFLOWS / name, repo=repo, workdir=tmp_path / "runs", on_checkout=install_venv_shim)


def open_pr(repo: Path, rel: str, old: str, new: str) -> tuple[str, str, dict]:
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "promote")
    head = edit(repo, rel, old, new, f"change {rel}")
    git(repo, "checkout", "-q", "main")
    # GitHub's refs/pull/N/merge: the head merged into the base
    git(repo, "merge", "-q", "--no-ff", "--no-edit", "promote")
    merge = git(repo, "rev-parse", "HEAD")
    git(repo, "reset", "-q", "--hard", base)
    payload = pull_request_payload(repository="acme/models", number=7, base_sha=base, head_sha=head)
    return merge, head, payload


def test_pull_request_changing_prod_gates_prod(repo, tmp_path):
    merge, _, payload = open_pr(repo, "environments/prod.yaml", "version: 1", "version: 2")
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge",
                                                  jobs=["changes"])
    changes = run.jobs["changes"]
    assert changes.conclusion == "success", changes.output
    assert changes.outputs == {"environments": '["prod"]', "governance": "false"}
    assert "`prod`" in changes.summary


def test_pull_request_changing_a_policy_is_a_governance_change_not_a_promotion(repo, tmp_path):
    # the policy judges promotions: a change of it is judged by its owners, not by itself
    merge, _, payload = open_pr(repo, "policies/staging.yaml", "rollout:", "rollout:\n  interval_s: 1\n#")
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge",
                                                  jobs=["changes"])
    assert run.jobs["changes"].outputs == {"environments": "[]", "governance": "true"}
    assert "`policies/staging.yaml (modified)`" in run.jobs["changes"].summary


def test_pull_request_touching_only_the_makefile_fails_the_required_check(repo, tmp_path):
    """Reproduction: a PR changing no environment file passed the required check trivially,
    whatever it changed (the Makefile, the workflows, the gate code)."""
    merge, _, payload = open_pr(repo, "Makefile", "# Two entry points", "# Two entry points (docs)")
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    assert run.jobs["changes"].outputs == {"environments": "[]", "governance": "true"}
    assert all(j.conclusion == "skipped" for j in run.by_id("gate"))
    governance = run.jobs["governance"]
    assert governance.step("Governance").returncode == 1, governance.output
    assert "changed: Makefile (modified)" in governance.output
    assert run.jobs["gates"].conclusion == "failure", run.jobs["gates"].output


def test_pull_request_editing_only_trust_yaml_passes_once_the_governance_owners_approve(repo, tmp_path):
    """Reproduction: a PR that only adds a signer to trust.yaml got a green "gates" check."""
    from tests.support.github_fake import GitHubFake

    merge, head, payload = open_pr(repo, "environments/trust.yaml", "keys: []", "keys: []\n# mallory's key")
    with GitHubFake() as gh:
        gh.add_pull(7, author="alice", head_sha=head)
        for login, team in (("bob", "ml-platform"), ("carol", "ml-release-managers")):
            gh.add_collaborator(login, "write")
            gh.add_team_member("your-org", team, login)
        wf = WorkflowRunner(WORKFLOWS / "gates.yml", repo=repo, workdir=tmp_path / "runs", api_url=gh.url,
                            token=gh.token, app_token=gh.app_token, vars={"PROMOTION_APP_ID": "42"},
                            secrets={"PROMOTION_APP_PRIVATE_KEY": "key"}, on_checkout=install_venv_shim)

        run = wf.run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
        assert run.jobs["changes"].outputs == {"environments": "[]", "governance": "true"}
        governance = run.jobs["governance"]
        assert governance.step("Governance").returncode == 1, governance.output
        assert "environments/trust.yaml (modified)" in governance.summary
        assert run.jobs["gates"].conclusion == "failure"
        assert "<!-- promotion-gate::governance -->" in gh.repo.comments[7][0]["body"]

        gh.add_review(7, "bob", "APPROVED", commit_id=head)
        gh.add_review(7, "carol", "APPROVED", commit_id=head)
        run = wf.run("pull_request_review", {**payload, "action": "submitted"}, sha=merge, ref="refs/pull/7/merge")
        assert run.jobs["governance"].conclusion == "success", run.jobs["governance"].output
        assert run.jobs["gates"].conclusion == "success"
        assert len(gh.repo.comments[7]) == 1, "the governance comment is sticky"


def test_gates_check_fails_when_changes_cannot_be_computed(repo, tmp_path):
    # fail closed: a base commit the checkout does not have means no verdict, not a pass
    merge, head, payload = open_pr(repo, "environments/prod.yaml", "version: 1", "version: 2")
    payload["pull_request"]["head"]["sha"] = "f" * 40
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    assert run.jobs["changes"].conclusion == "failure"
    assert run.jobs["gates"].conclusion == "failure"


def test_push_to_main_rolls_out_the_changed_environment_only(repo, tmp_path):
    before = git(repo, "rev-parse", "HEAD")
    after = edit(repo, "environments/staging.yaml", "version: 1", "version: 2", "promote staging")
    run = runner("rollout.yml", repo, tmp_path).run(
        "push", push_payload(repository="acme/models", before=before, after=after), sha=after,
        ref="refs/heads/main", jobs=["changes"])
    assert run.jobs["changes"].outputs == {"environments": '["staging"]',
                                           "targets": '[{"target": "staging", "environment": "staging"}]'}, \
        run.jobs["changes"].output


def test_push_to_another_branch_rolls_out_nothing(repo, tmp_path):
    before = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    after = edit(repo, "environments/prod.yaml", "version: 1", "version: 2", "promote prod")
    payload = push_payload(repository="acme/models", before=before, after=after, ref="refs/heads/feature")
    run = runner("rollout.yml", repo, tmp_path).run("push", payload, sha=after, ref="refs/heads/feature")
    assert run.jobs["changes"].outputs == {"environments": "[]", "targets": "[]"}
    assert all(j.conclusion == "skipped" for j in run.by_id("rollout"))
