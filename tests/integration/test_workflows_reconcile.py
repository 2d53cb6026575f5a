"""Reconcile: git says what should run; a real router and the real embedded MLflow say
what does. ``reconcile.yml``'s run steps are executed by the workflow harness; the drift
issue goes to the loopback GitHub fake.

The repository serves prod only (the dev and staging files are removed), so every
environment reconcile looks at has a live service; v1 came to prod through a rollout, so
a signed promote record of it is in the repository.
"""

from __future__ import annotations

import itertools
import shutil

import pytest

from promotion.cli import main
from tests.support.github_fake import GitHubFake
from tests.support.workflow_runner import WorkflowRunner, install_venv_shim, schedule_payload, workflow_dispatch_payload
from tests.unit.workflows.conftest import WORKFLOWS, git, make_repo

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
TOKEN = "admin-token"
TITLE = "Drift in prod: live state differs from git"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """fraud-detector v1 and v2 (``tiny``) registered; git and the alias say prod runs v1."""
    from promotion.records import write_record
    from promotion.registry import Registry
    from tests.support.fraud_versions import register_tiny

    base = tmp_path_factory.mktemp("reconcile")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMOTION_STATE", str(base / "state"))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    try:
        repo = make_repo(base / "origin")
        reg = Registry.for_root(repo)
        v1, v2 = register_tiny(reg), register_tiny(reg)
        reg.set_alias(MODEL, "prod", v1.version)
        git(repo, "rm", "-q", "environments/dev.yaml", "environments/staging.yaml")
        env_file = repo / "environments" / "prod.yaml"
        env_file.write_text(env_file.read_text().replace("sha256:" + "0" * 64, v1.digest))
        write_record(repo, "prod", action="promote", model=MODEL, version=v1.version, digest=v1.digest,
                     from_env="staging", to_env="prod", checks=[], approvers=[], steps=[], rollback_target=None,
                     data_snapshot=None, code_commit=None, policy_digest=None, source_commit=None, signer="local")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "this team serves prod only; v1 runs there (recorded)")
    finally:
        mp.undo()
    return base, v1, v2


@pytest.fixture
def world(template, tmp_path, monkeypatch):
    from promotion.registry import Registry

    base, v1, v2 = template
    shutil.copytree(base / "state", tmp_path / "state")
    repo = tmp_path / "origin"
    git(tmp_path, "clone", "-q", str(base / "origin"), str(repo))
    monkeypatch.setenv("PROMOTION_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("PROMOTION_ADMIN_TOKEN", TOKEN)
    for var in ("MLFLOW_TRACKING_URI", "GITHUB_ACTIONS", "GITHUB_REPOSITORY", "GITHUB_TOKEN", "GITHUB_API_URL",
                "GITHUB_STEP_SUMMARY", "GITHUB_RUN_ID", "PROMOTION_RECONCILE_CONVERGE"):
        monkeypatch.delenv(var, raising=False)
    with GitHubFake() as gh:
        yield repo, Registry.for_root(repo), gh, v1, v2


def drift_issues(gh) -> list[dict]:
    return [i for i in gh.repo.issues.values() if i["title"] == TITLE]


def test_reconcile_workflow_reports_drift_opens_an_issue_and_converges_when_allowed(world, tmp_path):
    from promotion.config import Project
    from promotion.traffic import backend_for
    from tests.support.router import serving

    repo, reg, gh, v1, v2 = world
    runs = itertools.count(1)

    def run(event: str, converge: str = ""):
        runner = WorkflowRunner(
            WORKFLOWS / "reconcile.yml", repo=repo, workdir=tmp_path / "runs" / str(next(runs)),
            repository=gh.full_name, api_url=gh.url, token=gh.token,
            secrets={"PROMOTION_ADMIN_TOKEN": TOKEN},
            vars={"MLFLOW_TRACKING_URI": reg.uri, "PROMOTION_RECONCILE_CONVERGE": converge},
            base_env={"PROMOTION_STATE": str(tmp_path / "state")}, on_checkout=install_venv_shim)
        payload = (schedule_payload(repository=gh.full_name, cron="17,47 * * * *") if event == "schedule"
                   else workflow_dispatch_payload(repository=gh.full_name, inputs={},
                                                  workflow=".github/workflows/reconcile.yml"))
        result = runner.run(event, payload, sha=git(repo, "rev-parse", "HEAD"), ref="refs/heads/main")
        assert result.jobs["environments"].outputs == {"environments": '["prod"]',
                                                       "targets": '[{"target": "prod", "environment": "prod"}]'}
        job = result.jobs["reconcile (prod)"]
        assert job.environment == "prod", "the job that can move prod's traffic runs in prod's Environment"
        return job

    with serving(repo, "prod", reg, token=TOKEN) as router:
        assert router.routes() == {v1.version: 100.0}
        # someone moves traffic by hand, outside git
        backend = backend_for(Project(repo).environment("prod"))
        applied = backend.set_routing({v2.version: 100.0}, {v2.version: v2.digest}, None)
        backend.wait_applied(applied.generation, 60)
        assert router.routes() == {v2.version: 100.0}

        # the scheduled run reports, and leaves the fixing to a human
        job = run("schedule")
        step = job.step("Reconcile the environment")
        assert job.conclusion == "failure" and step.returncode == 1, job.output
        assert f"| prod | {MODEL} v{v1.version} | v{v2.version} at 100% | {v1.version} | drift |" in job.summary
        assert f"git wants {v1.version}" in job.summary
        assert router.routes() == {v2.version: 100.0}, "reported, not converged"
        issues = drift_issues(gh)
        assert len(issues) == 1 and issues[0]["state"] == "open"
        assert f"git wants {v1.version}" in issues[0]["body"] and "/actions/runs/4242" in issues[0]["body"]

        # the team allows converging prod: traffic goes back to what git says
        job = run("workflow_dispatch", converge="prod")
        assert job.step("Reconcile the environment").returncode == 1, job.output  # there was drift
        assert "prod: converged" in job.output and "| converged |" in job.summary
        assert router.routes() == {v1.version: 100.0}
        assert reg.alias(MODEL, "prod") == v1.version
        issues = drift_issues(gh)
        assert len(issues) == 1 and "converged" in issues[0]["body"], "the open issue is refreshed, not repeated"

        # a writer pushes v2 straight to main, past the gates: converging must not deploy it
        env_file = repo / "environments" / "prod.yaml"
        text = env_file.read_text()
        env_file.write_text(text.replace(f"version: {v1.version}", f"version: {v2.version}")
                            .replace(v1.digest, v2.digest))
        git(repo, "commit", "-q", "-am", "prod: v2 (no pull request)")
        job = run("workflow_dispatch", converge="prod")
        assert job.conclusion == "failure" and "prod: rollout_pending" in job.output, job.output
        assert f"rollout pending: environments/prod.yaml names v{v2.version}" in job.output
        assert "| rollout_pending |" in job.summary and "converged" not in job.output.split("rollout_pending")[1]
        assert router.routes() == {v1.version: 100.0}, "no traffic to a version no record put in prod"
        assert reg.alias(MODEL, "prod") == v1.version
        assert "rollout pending" in drift_issues(gh)[0]["body"]
        git(repo, "revert", "--no-edit", "HEAD")

        # in sync: the check passes and the issue closes itself
        job = run("schedule")
        assert job.conclusion == "success", job.output
        assert "| in_sync |" in job.summary
    issue = drift_issues(gh)[0]
    assert issue["state"] == "closed"
    assert "back in sync" in gh.repo.comments[issue["number"]][-1]["body"]


def test_issue_path_opens_one_issue_for_an_unreachable_service_and_fails_closed(world, monkeypatch, capsys, tmp_path):
    repo, reg, gh, v1, v2 = world
    # nothing listens where prod's service should be: live state unknown, which is drift
    from services.router.process import free_port

    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{free_port()}"))

    assert main(["--root", str(repo), "reconcile", "--issue"]) == 2
    assert "--issue needs $GITHUB_REPOSITORY" in capsys.readouterr().err

    monkeypatch.setenv("GITHUB_REPOSITORY", gh.full_name)
    monkeypatch.setenv("GITHUB_API_URL", gh.url)
    monkeypatch.setenv("GITHUB_TOKEN", gh.token)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for _ in range(2):
        assert main(["--root", str(repo), "reconcile", "--issue"]) == 1
        out = capsys.readouterr().out
        assert "prod: unknown" in out and "cannot reach the service" in out
    issues = drift_issues(gh)
    assert len(issues) == 1 and "cannot reach the service" in issues[0]["body"]
    assert gh.paths("POST").count(f"/repos/{gh.full_name}/issues") == 1

    # GitHub failing: the drift is still reported (summary, exit code), and the error is named
    gh.fail(r"/issues$", status=500)
    code = main(["--root", str(repo), "reconcile", "--issue"])
    err = capsys.readouterr().err
    assert code == 1 and f"GitHub API GET /repos/{gh.full_name}/issues: 500" in err, err
    assert "| prod |" in summary.read_text() and "unknown" in summary.read_text()
