"""A real rollout whose canary fails half its requests rolls back, and the team hears of it:
one Slack-shaped and one signed generic webhook message carry the evidence, a dead and a
hung sink cost no more than their bounded retry (and never slow the traffic switch), and
the GitHub fake receives the deployments and their statuses. Real `bentoml serve` (2
workers), real MLflow sqlite registry, real git and signed records, loopback receivers."""

from __future__ import annotations

import json
import time

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion._internal.loadgen import Load
from promotion.cli import main
from promotion.config import Project
from promotion.notify.webhook import verify
from promotion.records import RecordStore
from promotion.rollout import StateStore
from promotion.traffic import backend_for
from tests.conftest import make_repo
from tests.integration.test_rollout_bentoml import FAST_POLICY
from tests.support.github_fake import GitHubFake
from tests.support.receiver import Hung, Receiver, dead_url

pytestmark = pytest.mark.integration
TOKEN = "notify-test-admin-token"
SECRET = "webhook-signing-secret-0123456789"
BUDGET_S = 5.0  # the notifier's bound per sink (3 tries)
NOTIFY = """
notify:
  - kind: slack
    url_env: PROMOTION_NOTIFY_SLACK_URL
    events: [rollback, rejected, promoted]
  - kind: webhook
    url_env: PROMOTION_NOTIFY_WEBHOOK_URL
    secret_env: PROMOTION_NOTIFY_WEBHOOK_SECRET
    events: [rollback]
  - kind: slack
    url_env: PROMOTION_NOTIFY_DEAD_URL
  - kind: teams
    url_env: PROMOTION_NOTIFY_HUNG_URL
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny
    from tests.support.world import isolated_env

    root = tmp_path_factory.mktemp("notify-e2e")
    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    good = register_tiny(registry).version
    bad = register_extra_feature(registry)
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False)
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
    (repo / "policies" / "prod.yaml").write_text(FAST_POLICY + NOTIFY)
    Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
    Git(repo)("commit", "-q", "--amend", "--no-edit")
    frame = data.generate(3000, seed=5)
    rows = frame[list(data.FEATURES)].to_dict("records")
    for i, row in enumerate(rows):
        if i % 2 == 0:
            row[EXTRA_FEATURE] = 0.5
    with Receiver() as rx, Hung() as hung, GitHubFake() as gh:
        try:
            yield {"repo": repo, "registry": registry, "service": service, "rows": rows, "good": good,
                   "bad": bad.version, "rx": rx, "hung": hung, "gh": gh}
        finally:
            service.stop()
            mp.undo()


@pytest.fixture
def actions_env(world, monkeypatch):
    """What a workflow run's step sees (the conftest clears GITHUB_* for every test)."""
    rx, gh = world["rx"], world["gh"]
    for k, v in {"GITHUB_REPOSITORY": "acme/models", "GITHUB_TOKEN": gh.token, "GITHUB_RUN_ID": "777",
                 "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": gh.url, "GITHUB_REF_NAME": "main",
                 "PROMOTION_NOTIFY_SLACK_URL": rx.url + "/services/T000/B000/SLACKSECRETPATH",
                 "PROMOTION_NOTIFY_WEBHOOK_URL": rx.url + "/hook",
                 "PROMOTION_NOTIFY_WEBHOOK_SECRET": SECRET,
                 "PROMOTION_NOTIFY_DEAD_URL": dead_url(),
                 "PROMOTION_NOTIFY_HUNG_URL": world["hung"].url}.items():
        monkeypatch.setenv(k, v)
    summary = world["repo"].parent / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    return summary


def _propose(world, version: int, pr: int) -> str:
    repo = world["repo"]
    mv = world["registry"].version("fraud-detector", version)
    set_model(repo / "environments" / "prod.yaml", version, mv.digest)
    return Git(repo).commit(f"Merge pull request #{pr} from acme/promote-prod-v{version}", ["environments/prod.yaml"])


def _routes(world) -> dict[int, float]:
    env = Project(world["repo"]).environment("prod")
    return {v: w for v, w in backend_for(env).routing().routes.items() if w > 0}


def test_a_rolled_back_canary_is_announced_with_its_evidence_and_recorded_as_deployments(world, actions_env, capsys):
    rx, gh, repo = world["rx"], world["gh"], world["repo"]
    good, bad = world["good"], world["bad"]
    _propose(world, good, pr=11)
    assert main(["--root", str(repo), "rollout", "prod", "--quiet"]) == 0  # initial deployment
    load = Load(world["service"].url, world["rows"], rate=300, threads=4).start()
    try:
        mark = len(rx.received)
        merged = _propose(world, bad, pr=12)
        events = StateStore(repo, "prod").events_path
        offset = events.stat().st_size
        assert main(["--root", str(repo), "rollout", "prod", "--quiet"]) == 1
        returned = time.time()
    finally:
        load.stop()
    err = capsys.readouterr().err

    # the rollback itself: traffic back at once, reverted, recorded
    assert _routes(world) == {good: 100.0}
    state = StateStore(repo, "prod").load()
    assert state.phase.value == "rolled_back" and state.switch_seconds is not None and state.switch_seconds < 1.0
    record = RecordStore(repo, "prod").latest()
    assert record.action == "rollback" and record.predicate["replaced_version"] == bad
    seen = [json.loads(line) for line in events.read_text()[offset:].splitlines() if line.strip()]
    done = next(e for e in seen if e["event"] == "rolled_back")
    # the dead and the hung sink cost at most their bounded retry after the rollback was done
    assert returned - done["ts"] < BUDGET_S + 1.5, returned - done["ts"]

    # one Slack-shaped message and one signed webhook message about the rollback
    got = rx.received[mark:]
    slack = [r.json() for r in got if r.path.startswith("/services/")]
    hooks = [r for r in got if r.path == "/hook"]
    assert len(slack) == 1 and len(hooks) == 1, [r.path for r in got]
    msg = slack[0]
    assert msg["text"].startswith(f"prod: fraud-detector v{bad} rolled back to v{good}")
    assert {b["type"] for b in msg["blocks"]} == {"section", "context"}
    evidence = next(b["text"]["text"] for b in msg["blocks"] if b["type"] == "section"
                    and b.get("text", {}).get("text", "").startswith("*Evidence*"))
    assert " vs " in evidence and "e=" in evidence
    links = msg["blocks"][-1]["elements"][0]["text"]
    assert "<https://github.com/acme/models/pull/12|Pull request #12>" in links
    assert "<https://github.com/acme/models/actions/runs/777|Workflow run>" in links
    rel = record.path.resolve().relative_to(repo.resolve()).as_posix()
    assert f"<https://github.com/acme/models/blob/main/{rel}|Record>" in links

    hook = hooks[0]
    assert verify(SECRET.encode(), hook.body, hook.headers["X-Promotion-Signature"])
    doc = hook.json()
    assert doc["event"] == "rollback" and doc["version"] == good and doc["previous"] == bad
    assert doc["evidence"], doc
    fired = doc["evidence"][0]
    assert isinstance(fired["value"], float) and isinstance(fired["threshold"], float)
    assert fired["value"] > fired["threshold"]  # e.g. the canary's error rate vs the objective
    assert doc["links"]["Record"].endswith(rel)

    # failures are one line each, name the sink and its variable, never a URL or a secret
    lines = [line for line in err.splitlines() if line.startswith("warning: notification")]
    assert any("$PROMOTION_NOTIFY_DEAD_URL" in line and "connection refused" in line for line in lines), lines
    assert any("$PROMOTION_NOTIFY_HUNG_URL" in line for line in lines), lines
    summary = actions_env.read_text()
    assert "Notifications not delivered" in summary
    for secret in ("SLACKSECRETPATH", SECRET, world["hung"].url, gh.token):
        assert secret not in err and secret not in summary
        assert secret not in record.path.read_text()

    # GitHub: the canary's deployment failed, the champion's was deployed again
    deps = sorted(gh.repo.deployments.values(), key=lambda d: d["id"])
    assert [(d["payload"]["version"], gh.deployment_states(d["id"])) for d in deps] == [
        (good, ["in_progress", "success"]),
        (bad, ["in_progress", "failure"]),
        (good, ["in_progress", "success"])]
    assert deps[1]["ref"] == merged and deps[1]["environment"] == "prod"
    assert deps[1]["payload"]["digest"] == world["registry"].version("fraud-detector", bad).digest
    final = gh.repo.deployment_statuses[deps[2]["id"]][-1]
    assert final["log_url"] == "https://github.com/acme/models/actions/runs/777"
    assert final["environment_url"] == world["service"].url.rstrip("/")
