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
    assert changes.outputs == {"environments": '["prod"]'}
    assert "`prod`" in changes.summary


def test_pull_request_changing_a_policy_gates_the_environments_using_it(repo, tmp_path):
    merge, _, payload = open_pr(repo, "policies/staging.yaml", "rollout:", "rollout:  # tweak")
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge",
                                                  jobs=["changes"])
    assert run.jobs["changes"].outputs == {"environments": '["staging"]'}


def test_pull_request_touching_no_environment_passes_the_required_check(repo, tmp_path):
    merge, _, payload = open_pr(repo, "Makefile", "# Two entry points", "# Two entry points (docs)")
    run = runner("gates.yml", repo, tmp_path).run("pull_request", payload, sha=merge, ref="refs/pull/7/merge")
    assert run.jobs["changes"].outputs == {"environments": "[]"}
    assert all(j.conclusion == "skipped" for j in run.by_id("gate"))
    assert run.jobs["gates"].conclusion == "success", run.jobs["gates"].output


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
    assert run.jobs["changes"].outputs == {"environments": '["staging"]'}, run.jobs["changes"].output


def test_push_to_another_branch_rolls_out_nothing(repo, tmp_path):
    before = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    after = edit(repo, "environments/prod.yaml", "version: 1", "version: 2", "promote prod")
    payload = push_payload(repository="acme/models", before=before, after=after, ref="refs/heads/feature")
    run = runner("rollout.yml", repo, tmp_path).run("push", payload, sha=after, ref="refs/heads/feature")
    assert run.jobs["changes"].outputs == {"environments": "[]"}
    assert all(j.conclusion == "skipped" for j in run.by_id("rollout"))
