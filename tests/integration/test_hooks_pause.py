"""Lifecycle hooks and pause steps against a real `bentoml serve` (2 workers), a real MLflow
sqlite registry, real git and signed records, under live loopback traffic."""

from __future__ import annotations

import getpass
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from promotion._internal.git import Git
from promotion._internal.loadgen import Load
from promotion.records import RecordStore
from promotion.rollout import StateStore
from tests.integration.test_rollout_bentoml import TOKEN, World
from tests.support.policies import steps_policy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.conftest import make_repo
    from tests.support.fraud_versions import register_extra_feature, register_tiny
    from tests.support.world import isolated_env

    root = tmp_path_factory.mktemp("hooks-pause")
    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = {"v1": register_tiny(registry).version, "v2": register_tiny(registry).version}
    needy = register_extra_feature(registry)  # answers 400 to a request without its extra feature
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", needy.version, key, "sha256:" + "0" * 64)
    versions["needy"] = needy.version
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False)
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
    (repo / "policies" / "prod.yaml").write_text(steps_policy(latency_p95_ms_max=100))
    Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
    Git(repo)("commit", "-q", "--amend", "--no-edit")
    frame = data.generate(2000, seed=5)
    rows = frame[list(data.FEATURES)].to_dict("records")  # users never send the extra feature
    w = World(root, repo, registry, service, rows, versions)
    w.propose(versions["v1"])
    assert w.rollout() == 0
    w.load = Load(service.url, rows, rate=300, threads=4).start()
    try:
        yield w
    finally:
        w.load.stop()
        service.stop()
        mp.undo()


def _policy(world, text: str) -> None:
    (world.repo / "policies" / "prod.yaml").write_text(text)
    Git(world.repo).commit("policy: hooks and pause", ["policies/prod.yaml"])


def test_failing_pre_rollout_smoke_test_rejects_with_no_user_traffic_on_the_canary(world):
    v1, needy = world.versions["v1"], world.versions["needy"]
    body = json.dumps({"features": {"amount": "not a number"}})  # a request the canary must refuse
    smoke = (f"hooks:\n  pre_rollout:\n    - name: smoke\n      timeout_s: 20\n"
             f"      http: {{path: /predict, canary: true, requests: 5, body: {body}}}\n")
    _policy(world, steps_policy(latency_p95_ms_max=100) + smoke)
    before = world.load.totals()
    world.propose(needy)
    assert world.rollout() == 1
    after = world.load.totals()
    assert after["served"].get(str(needy), 0) == before["served"].get(str(needy), 0) == 0  # no user reached it
    assert after["served"][str(v1)] > before["served"][str(v1)] and after["failed"] == before["failed"]
    assert world.routes() == {v1: 100.0}
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "reject" and record.version == v1
    assert "pre_rollout hook 'smoke' failed before any user traffic moved" in record.predicate["reason"]
    [hook] = record.predicate["hooks"]
    # the smoke test reached the canary (pinned), which refused it at the first request
    assert 400 <= hook["status"] < 500 and hook["requests"] == 1 and hook["verdict"] == "fail"
    import requests

    # without the admin token nobody picks a version by header
    r = requests.post(world.service.url + "/predict", json={"features": world.rows[0]},
                      headers={"X-Promotion-Version": str(v1)}, timeout=5)
    assert r.status_code == 401
    assert world.log()[0].startswith(f"rollback prod: fraud-detector v{needy} -> v{v1}")


def test_paused_rollout_killed_then_resumed_completes_with_reason_and_actor(world):
    v1, v2 = world.versions["v1"], world.versions["v2"]
    paused = steps_policy((25, 100), latency_p95_ms_max=100).replace(
        "    - {weight: 100,", "    - {pause: {max_s: 300}}\n    - {weight: 100,")
    _policy(world, paused)
    world.propose(v2)
    store = StateStore(world.repo, "prod")
    proc = subprocess.Popen([sys.executable, "-m", "promotion", "--root", str(world.repo), "rollout", "prod", "--quiet"],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        st = store.load()
        if st is not None and st.canary == v2 and st.paused_since is not None:
            break
        assert proc.poll() is None, "the rollout ended before its pause"
        time.sleep(0.1)
    else:
        pytest.fail("never paused")
    time.sleep(2)  # held: the weights stay where the step before the pause left them
    assert proc.poll() is None and world.routes() == {v1: 75.0, v2: 25.0}
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    from promotion.cli import main

    assert main(["--root", str(world.repo), "resume", "prod", "--reason", "dashboards look fine"]) == 0
    assert world.rollout() == 0
    assert world.routes() == {v2: 100.0}
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == v2
    [given] = record.predicate["interventions"]
    assert given["action"] == "resume" and given["reason"] == "dashboards look fine"
    assert given["actor"] == (os.environ.get("GITHUB_ACTOR") if os.environ.get("GITHUB_ACTIONS") == "true"
                              else getpass.getuser())
    assert [s["verdict"] for s in record.predicate["steps"]] == ["pass", "resumed", "pass"]
    assert main(["--root", str(world.repo), "verify", str(record.path)]) == 0
