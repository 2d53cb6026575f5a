"""End to end: team approvals through gates.yml, as GitHub answers them.

GitHub's ``GITHUB_TOKEN`` cannot read organisation teams (404 on membership), so a
CODEOWNERS of teams can only be checked with a GitHub App installation token, which
``gates.yml`` creates when ``vars.PROMOTION_APP_ID`` is set. The world, the GitHub fake
and the harness are those of ``test_workflows_events.py``; here CODEOWNERS names the team
``@acme/ml-leads`` instead of people.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.test_workflows_events import gate_rows, open_promotion_pr, template, world  # noqa: F401
from tests.support.workflow_runner import WorkflowRunner, install_venv_shim, pull_request_review_payload
from tests.unit.workflows.conftest import WORKFLOWS, git

pytestmark = pytest.mark.integration

TEAM_OWNERS = "/environments/ @acme/ml-leads\n/policies/ @acme/ml-leads\n/.github/ @bob\n"


def gates_runner(gh, repo, reg, tmp_path, name, *, app: bool) -> WorkflowRunner:
    secrets = {"PROMOTION_ADMIN_TOKEN": "admin-token", "PROMOTION_BOT_TOKEN": "bot-token"}
    variables = {"MLFLOW_TRACKING_URI": reg.uri}
    if app:
        variables["PROMOTION_APP_ID"] = "123456"
        secrets["PROMOTION_APP_PRIVATE_KEY"] = "-----BEGIN RSA PRIVATE KEY-----\n(test)\n"
    return WorkflowRunner(WORKFLOWS / "gates.yml", repo=repo, workdir=tmp_path / "runs" / name,
                          repository=gh.full_name, api_url=gh.url, token=gh.token, server_url=tmp_path.as_uri(),
                          secrets=secrets, vars=variables, base_env={"PROMOTION_STATE": os.environ["PROMOTION_STATE"]},
                          force_env={"PROMOTION_SIGNER": "local"}, on_checkout=install_venv_shim,
                          app_token=gh.app_token if app else None)


@pytest.fixture
def team_world(world):
    repo, reg, gh, runner, v1, v2 = world
    (repo / ".github" / "CODEOWNERS").write_text(TEAM_OWNERS)
    git(repo, "commit", "-q", "-am", "code owners are a team")
    gh.add_file(".github/CODEOWNERS", TEAM_OWNERS)
    for login in ("bob", "carol"):
        gh.add_team_member("acme", "ml-leads", login)
    merge, head, payload = open_promotion_pr(repo, gh, v2)
    gh.add_review(7, "bob", "APPROVED", commit_id=head)
    gh.add_review(7, "carol", "APPROVED", commit_id=head)
    review = pull_request_review_payload(repository=gh.full_name, number=7, base_sha=payload["pull_request"]["base"]["sha"],
                                         head_sha=head, reviewer="carol")
    return repo, reg, gh, merge, review


def test_without_the_app_a_team_of_code_owners_blocks_naming_the_token(team_world, tmp_path):
    repo, reg, gh, merge, review = team_world
    run = gates_runner(gh, repo, reg, tmp_path, "no-app", app=False).run(
        "pull_request_review", review, sha=merge, ref="refs/pull/7/merge")
    gate = run.jobs["gate (prod)"]
    assert gate.step("Team membership token (GitHub App with organisation Members read)").outcome == "skipped"
    assert gate.conclusion == "failure" and run.jobs["gates"].conclusion == "failure"
    approvals = gate_rows(gate.summary)["approvals"]
    assert "cannot decide: the token cannot see team @acme/ml-leads" in approvals, approvals
    assert "PROMOTION_GITHUB_APP_TOKEN" in approvals and "not a code owner" not in approvals


def test_with_the_app_token_team_members_approve(team_world, tmp_path):
    repo, reg, gh, merge, review = team_world
    run = gates_runner(gh, repo, reg, tmp_path, "app", app=True).run(
        "pull_request_review", review, sha=merge, ref="refs/pull/7/merge")
    gate = run.jobs["gate (prod)"]
    assert gate.conclusion == "success", gate.output
    assert run.jobs["gates"].conclusion == "success"
    assert "2 of 2 approval(s): bob, carol" in gate_rows(gate.summary)["approvals"]
    team_reads = [r for r in gh.requests if r.path.startswith("/orgs/acme/teams/ml-leads")]
    assert team_reads and {r.headers["Authorization"] for r in team_reads} == {f"Bearer {gh.app_token}"}
    # the pull request and its comment stay with GITHUB_TOKEN
    assert {r.headers["Authorization"] for r in gh.requests if r.path.startswith("/repos/")} == {f"Bearer {gh.token}"}
