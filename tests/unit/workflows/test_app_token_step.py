"""gates.yml's GitHub App token: who gets it, with what, and what happens without it."""

from __future__ import annotations

import yaml

from tests.unit.workflows.conftest import WORKFLOWS

STEP = "Team membership token (GitHub App with organisation Members read)"


def gate_job() -> dict:
    return yaml.safe_load((WORKFLOWS / "gates.yml").read_text())["jobs"]["gate"]


def test_the_token_step_is_pinned_optional_and_asks_for_members_read_only():
    steps = gate_job()["steps"]
    (step,) = [s for s in steps if s.get("name") == STEP]
    assert step["uses"].startswith("actions/create-github-app-token@1b10c78c7865c340bc4f6099eb2f838309f1e8c3")
    assert step["if"] == "vars.PROMOTION_APP_ID"  # repositories without an App still run the gates
    assert step["with"]["app-id"] == "${{ vars.PROMOTION_APP_ID }}"
    assert step["with"]["private-key"] == "${{ secrets.PROMOTION_APP_PRIVATE_KEY }}"
    assert {k for k in step["with"] if k.startswith("permission-")} == {"permission-members"}
    assert step["with"]["permission-members"] == "read"


def test_only_the_gate_step_sees_the_app_token():
    job = gate_job()
    holders = [s.get("name") for s in job["steps"] if "steps.app-token.outputs.token" in str(s.get("env"))]
    assert holders == ["Gate"]
    gate = next(s for s in job["steps"] if s.get("name") == "Gate")
    assert gate["env"]["PROMOTION_GITHUB_APP_TOKEN"] == "${{ steps.app-token.outputs.token }}"
    assert "app-token" not in str(job.get("env")) and job["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    names = [s.get("name") for s in job["steps"]]
    assert names.index(STEP) < names.index("Gate")
