"""Rollouts and rollbacks as GitHub deployments: created, moved through their statuses,
the replaced version made inactive; an API failure is reported and never blocks."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest

from promotion.github.client import GitHubClient
from promotion.github.deployments import Deployments, DeploymentTracker, enabled
from promotion.rollout.state import RolloutState
from tests.support.github_fake import GitHubFake

SHA = "e" * 40
ENV = SimpleNamespace(name="prod", stage="prod", endpoint="https://fraud.example.com")


@pytest.fixture
def gh(monkeypatch):
    with GitHubFake() as fake:
        monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
        monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
        monkeypatch.setenv("GITHUB_RUN_ID", "4242")
        monkeypatch.setenv("GITHUB_TOKEN", "test-token")
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        yield fake


def state(**kw) -> RolloutState:
    base = dict(env="prod", model="fraud-detector", canary=7, canary_digest="sha256:" + "7" * 64, champion=6,
                champion_digest="sha256:" + "6" * 64, source_commit=SHA, policy_digest="sha256:" + "0" * 64)
    base.update(kw)
    return RolloutState(**base)


def tracker(**kw) -> tuple[DeploymentTracker, list, io.StringIO]:
    summary, err = [], io.StringIO()
    t = DeploymentTracker.from_env(ENV, summary=summary.append, err=err, **kw)
    assert t is not None
    return t, summary, err


def test_off_outside_a_workflow_run(monkeypatch):
    monkeypatch.delenv("GITHUB_RUN_ID", raising=False)
    assert not enabled() and DeploymentTracker.from_env(ENV) is None


def test_a_promotion_is_a_successful_deployment_and_the_replaced_version_goes_inactive(gh):
    api = Deployments(GitHubClient("test-token", gh.url), "acme/models")
    old = api.create(environment="prod", ref=SHA, payload={"model": "fraud-detector", "version": 6}, production=True)
    api.set_status(old["id"], "success")
    t, summary, err = tracker()
    st = state()
    t(st, {"event": "planned"})
    t(st, {"event": "step_passed"})
    t(st, {"event": "promoted"})
    assert t.close() == [] and summary == []
    new = max(gh.repo.deployments)
    dep = gh.repo.deployments[new]
    assert dep["environment"] == "prod" and dep["ref"] == SHA and dep["production_environment"] is True
    assert dep["payload"] == {"model": "fraud-detector", "version": 7, "digest": "sha256:" + "7" * 64, "rollout": st.id}
    body = next(r.body for r in gh.requests if r.method == "POST" and r.path.endswith("/deployments"))
    assert body["auto_merge"] is False and body["required_contexts"] == []
    assert gh.deployment_states(new) == ["in_progress", "success"]
    assert gh.deployment_states(old["id"]) == ["success", "inactive"]
    success = gh.repo.deployment_statuses[new][-1]
    assert success["log_url"] == "https://github.com/acme/models/actions/runs/4242"
    assert success["environment_url"] == "https://fraud.example.com"


def test_a_rollback_fails_the_canary_and_deploys_the_champion_again(gh):
    t, _, _ = tracker()
    st = state()
    t(st, {"event": "planned"})
    st.reason = "error-rate SLO breached"
    t(st, {"event": "rolled_back"})
    assert t.close() == []
    deps = sorted(gh.repo.deployments.values(), key=lambda d: d["id"])
    assert [d["payload"]["version"] for d in deps] == [7, 6]
    assert gh.deployment_states(deps[0]["id"]) == ["in_progress", "failure"]
    assert gh.repo.deployment_statuses[deps[0]["id"]][-1]["description"].startswith("rolled back: error-rate SLO")
    assert gh.deployment_states(deps[1]["id"]) == ["in_progress", "success"]


def test_a_resumed_rollout_continues_its_deployment(gh):
    st = state()
    first, _, _ = tracker()
    first(st, {"event": "planned"})
    assert first.close() == []
    again, _, _ = tracker()  # a new process: the job was killed and run again
    again(st, {"event": "resumed"})
    again(st, {"event": "promoted"})
    assert again.close() == []
    assert len(gh.repo.deployments) == 1
    assert gh.deployment_states(next(iter(gh.repo.deployments))) == ["in_progress", "success"]


def test_an_api_failure_is_reported_in_one_line_and_never_blocks(gh):
    gh.deployments_writable = False
    t, summary, err = tracker()
    t(state(), {"event": "planned"})
    failures = t.close()
    assert len(failures) == 1
    assert failures[0].startswith("GitHub deployment (start) not recorded: GitHub API POST /repos/acme/models/deployments: 403")
    assert "check GITHUB_TOKEN and the workflow's permissions" in failures[0]
    assert err.getvalue().count("\n") == 1 and "test-token" not in err.getvalue() + summary[0]


def test_a_slow_api_does_not_hold_up_the_listener_and_close_is_bounded(gh):
    gh.fail(r"/deployments", delay=3.0)
    t, _, _ = tracker()
    start = time.monotonic()
    t(state(), {"event": "planned"})
    t(state(), {"event": "rolled_back"})
    assert time.monotonic() - start < 0.05  # the controller goes on to move traffic at once
    failures = t.close(wait_s=1.0)
    assert time.monotonic() - start < 1.5
    assert any("still pending" in f for f in failures)
