"""Security properties of the real workflow files: a regression here fails CI."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.unit.workflows.conftest import ROOT, WORKFLOWS

FILES = sorted(WORKFLOWS.glob("*.yml"))
EXPECTED = {"ci.yml", "gates.yml", "reconcile.yml", "rollback.yml", "rollout.yml"}
SHA_PIN = re.compile(r"^\s*(?:-\s*)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})\s+#\s*v\d+(\.\d+)*\s*$")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))
    return {on: None} if isinstance(on, str) else ({k: None for k in on} if isinstance(on, list) else on)


def steps(wf: dict):
    for job_id, job in wf["jobs"].items():
        for step in job.get("steps") or []:
            yield job_id, step


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} is not installed (it is in the [test] extra)")
    return found


def test_the_five_workflows_exist():
    assert {p.name for p in FILES} == EXPECTED


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_pull_request_target_and_no_workflow_run(path):
    on = triggers(load(path))
    assert "pull_request_target" not in on and "workflow_run" not in on


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_top_level_permissions_are_empty_and_every_job_declares_its_own(path):
    wf = load(path)
    assert wf.get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
    for job_id, job in wf["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {job_id} must declare its permissions"
        perms = job["permissions"]
        assert isinstance(perms, dict), f"{path.name}: job {job_id}: no read-all/write-all"
        assert "write-all" not in str(perms) and "read-all" not in str(perms)


def test_only_the_signing_jobs_may_request_an_oidc_token():
    holders = {(p.name, j) for p in FILES for j, job in load(p)["jobs"].items()
               if (job.get("permissions") or {}).get("id-token") == "write"}
    assert holders == {("rollout.yml", "rollout"), ("rollback.yml", "rollback")}


def test_no_job_can_write_contents():
    # records are pushed with the bot token, so no job token needs contents: write
    for p in FILES:
        for job_id, job in load(p)["jobs"].items():
            assert (job.get("permissions") or {}).get("contents") in (None, "read"), f"{p.name}:{job_id}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_full_sha_with_its_tag(path):
    lines = [ln for ln in path.read_text().splitlines() if re.match(r"^\s*(-\s*)?uses:", ln)]
    assert lines, f"{path.name} uses no action?"
    for ln in lines:
        assert SHA_PIN.match(ln), f"{path.name}: not pinned by 40-hex SHA with a '# vX.Y' comment: {ln.strip()}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkout_never_persists_credentials(path):
    for job_id, step in steps(load(path)):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert (step.get("with") or {}).get("persist-credentials") is False, f"{path.name}:{job_id}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_expression_inside_run(path):
    for job_id, step in steps(load(path)):
        if "run" in step:
            assert "${{" not in step["run"], f"{path.name}:{job_id}: pass values to run: through env:"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_step_runs_at_most_one_promotion_command(path):
    for job_id, step in steps(load(path)):
        if "run" in step:
            assert len(re.findall(r"\bpromotion\s+(?:--root\s+\S+\s+)?[a-z]", step["run"])) <= 1, step["run"]


def test_python_311_and_the_make_install_everywhere():
    for p in FILES:
        for job_id, step in steps(load(p)):
            if step.get("uses", "").startswith("actions/setup-python@"):
                assert step["with"]["python-version"] == "3.11", f"{p.name}:{job_id}"
            if "promotion " in step.get("run", ""):
                assert ".venv/bin/promotion " in step["run"], f"{p.name}:{job_id}: use the make-installed CLI"


def test_rollout_is_serialised_per_environment_and_never_cancelled():
    job = load(WORKFLOWS / "rollout.yml")["jobs"]["rollout"]
    assert job["concurrency"]["cancel-in-progress"] is False
    # one rollout at a time per environment file (prod, or prod/<model> of several models) ...
    assert "matrix.target" in job["concurrency"]["group"]
    # ... inside the GitHub environment whose protection rules apply (prod for prod/<model>)
    assert "matrix.environment" in str(job["environment"])
    on = triggers(load(WORKFLOWS / "rollout.yml"))
    assert on["push"]["paths"] == ["environments/*.yaml", "environments/*/*.yaml"]


def test_rollback_inputs():
    inputs = triggers(load(WORKFLOWS / "rollback.yml"))["workflow_dispatch"]["inputs"]
    assert inputs["environment"]["type"] == "choice"
    from promotion.config import Project

    envs = Project(ROOT).environment_names()   # environments/trust.yaml is not an environment
    assert sorted(inputs["environment"]["options"]) == envs
    assert inputs["reason"]["required"] is True and inputs["version"]["required"] is False


def test_gates_runs_on_every_pull_request_and_on_reviews():
    on = triggers(load(WORKFLOWS / "gates.yml"))
    assert "paths" not in (on["pull_request"] or {}), "a path filter would leave the required check pending"
    assert "submitted" in on["pull_request_review"]["types"]


def test_codeowners_cover_environments_and_policies():
    owners = (ROOT / ".github" / "CODEOWNERS").read_text().splitlines()
    rules = [ln.split()[0] for ln in owners if ln.strip() and not ln.startswith("#")]
    assert any(r.startswith("/environments/") for r in rules)
    assert "/policies/" in rules


def test_zizmor_offline_is_clean():
    proc = subprocess.run([tool("zizmor"), "--offline", "--no-progress", str(WORKFLOWS)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_validate_against_the_github_schema():
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                           *map(str, FILES)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_zizmor_catches_what_these_tests_guard_against(tmp_path):
    # proves the offline audit really audits: an injectable, unpinned, over-privileged workflow
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  j:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: echo \"${{ github.event.pull_request.title }}\"\n")
    proc = subprocess.run([tool("zizmor"), "--offline", "--no-progress", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0 and "template-injection" in proc.stdout
