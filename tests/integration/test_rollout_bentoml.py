"""`promotion rollout` and `promotion rollback` against a real `bentoml serve` (2 workers),
a real MLflow sqlite registry, real git and signed records, under live loopback traffic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion._internal.loadgen import Load
from promotion.cli import main
from promotion.config import Project
from promotion.records import RecordStore
from promotion.rollout import StateStore
from promotion.traffic import backend_for
from tests.conftest import make_repo
from tests.support.policies import steps_policy

pytestmark = pytest.mark.integration
TOKEN = "rollout-test-token"
FAST_POLICY = steps_policy(latency_p95_ms_max=100)


class World:
    def __init__(self, root: Path, repo: Path, registry, service, rows, versions):
        self.root, self.repo, self.registry, self.service = root, repo, registry, service
        self.rows, self.versions = rows, versions
        self.load: Load | None = None

    def propose(self, version: int) -> None:
        mv = self.registry.version("fraud-detector", version)
        set_model(self.repo / "environments" / "prod.yaml", version, mv.digest)
        Git(self.repo).commit(f"Merge pull request: promote prod to v{version}", ["environments/prod.yaml"])

    def routes(self) -> dict[int, float]:
        env = Project(self.repo).environment("prod")
        return {v: w for v, w in backend_for(env).routing().routes.items() if w > 0}

    def rollout(self) -> int:
        return main(["--root", str(self.repo), "rollout", "prod"])

    def log(self) -> list[str]:
        return Git(self.repo)("log", "--format=%s").splitlines()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny

    root = tmp_path_factory.mktemp("rollout-e2e")
    from tests.support.world import isolated_env

    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = {"v1": register_tiny(registry).version, "v2": register_tiny(registry).version}
    bad = register_extra_feature(registry)
    # a version that passes lineage but needs a feature half of the clients do not send
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    versions["bad"] = bad.version
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False)
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
    (repo / "policies" / "prod.yaml").write_text(FAST_POLICY)
    # part of the repository's initial state (the audit's baseline), not a later hand edit of serving
    Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
    Git(repo)("commit", "-q", "--amend", "--no-edit")
    frame = data.generate(4000, seed=11)
    rows = frame[list(data.FEATURES)].to_dict("records")
    for i, row in enumerate(rows):
        if i % 2 == 0:
            row[EXTRA_FEATURE] = 0.5
    w = World(root, repo, registry, service, rows, versions)
    try:
        yield w
    finally:
        if w.load:
            w.load.stop()
        service.stop()
        mp.undo()


def test_first_deployment_serves_v1_and_records_it(world):
    world.propose(world.versions["v1"])
    assert world.rollout() == 0
    assert world.routes() == {world.versions["v1"]: 100.0}
    assert world.registry.alias("fraud-detector", "prod") == world.versions["v1"]
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == world.versions["v1"]
    assert world.log()[0].startswith("promote prod: fraud-detector v1 (initial deployment)")
    world.load = Load(world.service.url, world.rows, rate=300, threads=4).start()


def test_healthy_canary_is_promoted_with_no_failed_request(world, capsys):
    v1, v2 = world.versions["v1"], world.versions["v2"]
    time.sleep(1.0)
    before = world.load.totals()
    world.propose(v2)
    assert world.rollout() == 0
    out = capsys.readouterr().out
    assert "5%" in out and "25%" in out and "promoted" in out
    after = world.load.totals()
    assert after["failed"] == before["failed"] == 0, after
    assert after["served"].get(str(v2), 0) > before["served"].get(str(v2), 0) > -1
    assert world.routes() == {v2: 100.0}
    reg = world.registry
    assert reg.alias("fraud-detector", "prod") == v2 and reg.previous("fraud-detector", "prod") == v1
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == v2
    assert [s["weight"] for s in record.predicate["steps"]] == [5.0, 25.0, 100.0]
    assert all(s["canary_requests"] >= 20 for s in record.predicate["steps"])
    assert main(["--root", str(world.repo), "verify", str(record.path)]) == 0


def test_canary_failing_half_its_requests_is_rolled_back_and_reverted(world):
    v2, bad = world.versions["v2"], world.versions["bad"]
    world.propose(bad)
    assert world.rollout() == 1
    assert world.routes() == {v2: 100.0}
    assert Project(world.repo).environment("prod").model.version == v2
    assert world.log()[0].startswith(f"rollback prod: fraud-detector v{bad} -> v{v2}")
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "rollback" and record.version == v2
    assert record.predicate["replaced_version"] == bad
    assert "error" in record.predicate["reason"].lower()
    state = StateStore(world.repo, "prod").load()
    assert state.switch_seconds is not None and state.switch_seconds < 1.0
    assert world.registry.alias("fraud-detector", "prod") == v2


def test_killed_rollout_resumes_and_converges(world):
    """SIGKILL the rollout at each step; running it again finishes the job."""
    from tests.support.fraud_versions import register_tiny

    events = StateStore(world.repo, "prod").events_path
    failed_before = world.load.totals()["failed"]
    for kill_on in ("planned", "step_started:0", "step_started:1", "step_started:2"):
        version = register_tiny(world.registry).version
        world.propose(version)
        mark = events.stat().st_size if events.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "promotion", "--root", str(world.repo), "rollout", "prod", "--quiet"],
                                env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name, _, step = kill_on.partition(":")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = events.read_text()[mark:] if events.exists() else ""
            hits = [json.loads(l) for l in text.splitlines() if l.strip()]
            if any(h["event"] == name and (not step or h.get("step") == int(step)) for h in hits):
                break
            assert proc.poll() is None, f"rollout ended before {kill_on}"
            time.sleep(0.05)
        else:
            pytest.fail(f"never saw {kill_on}")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        state = StateStore(world.repo, "prod").load()
        assert not state.phase.completed
        # traffic is in a state the saved rollout explains
        live = world.routes()
        assert set(live) <= {state.champion, state.canary}
        assert world.rollout() == 0, f"resume after kill at {kill_on}"
        assert world.routes() == {version: 100.0}
        assert RecordStore(world.repo, "prod").latest().version == version
    assert world.load.totals()["failed"] == failed_before  # no client request lost to kills or resumes


def test_operator_rollback_flips_traffic_within_a_second_and_is_idempotent(world, capsys):
    current = Project(world.repo).environment("prod").model.version
    target = RecordStore(world.repo, "prod").last_known_good("fraud-detector", excluding=current)
    commits = len(world.log())
    failed_before = world.load.totals()["failed"]
    assert main(["--root", str(world.repo), "rollback", "prod", "--reason", "drill: on-call practice", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["target"] == target and result["switch_seconds"] < 1.0
    assert world.routes() == {target: 100.0}
    assert len(world.log()) == commits + 1 and world.log()[0].startswith(f"rollback prod: fraud-detector v{current} -> v{target}")
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "rollback" and record.predicate["reason"] == "drill: on-call practice"
    # again: nothing changes, nothing is recorded twice
    assert main(["--root", str(world.repo), "rollback", "prod", "--to", str(target), "--reason", "again"]) == 0
    assert len(world.log()) == commits + 1
    # a target that was never promoted here is refused, and nothing moves
    assert main(["--root", str(world.repo), "rollback", "prod", "--to", str(world.versions["bad"]), "--reason", "x"]) == 2
    assert world.routes() == {target: 100.0}
    assert world.load.totals()["failed"] == failed_before


def test_rollback_during_a_rollout_stops_it_and_the_audit_explains_everything(world):
    from tests.support.fraud_versions import register_tiny

    version = register_tiny(world.registry).version
    world.propose(version)
    events = StateStore(world.repo, "prod").events_path
    mark = events.stat().st_size
    (world.repo / "policies" / "prod.yaml").write_text(FAST_POLICY.replace("hold_s: 1,", "hold_s: 30,"))
    proc = subprocess.Popen([sys.executable, "-m", "promotion", "--root", str(world.repo), "rollout", "prod", "--quiet"],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while '"step_started"' not in events.read_text()[mark:]:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        current_target = RecordStore(world.repo, "prod").last_known_good("fraud-detector", excluding=version)
        assert main(["--root", str(world.repo), "rollback", "prod", "--reason", "stop this canary"]) == 0
        assert proc.wait(timeout=60) == 1  # the rollout stopped instead of carrying on
    finally:
        if proc.poll() is None:
            proc.kill()
        Git(world.repo)("checkout", "--", "policies/prod.yaml")
    assert StateStore(world.repo, "prod").load().phase.value == "aborted"
    assert world.routes() == {current_target: 100.0}
    assert Project(world.repo).environment("prod").model.version == current_target
    # every change of the environment file in this repository is explained by a signed record
    assert main(["--root", str(world.repo), "audit", "prod"]) == 0


def test_a_merge_that_skipped_the_gates_is_rejected_with_a_record_and_no_traffic_moved(world):
    """A writer pushes a version the gates block straight to main (no pull request, no gate
    run). The rollout re-judges with main's policy before any traffic moves: it rejects,
    reverts the environment file and signs the rejection; the version never serves."""
    from tests.support.fraud_versions import register_tiny

    current = Project(world.repo).environment("prod").model.version
    version = register_tiny(world.registry).version
    world.registry.set_tag("fraud-detector", version, "code_commit", "")  # the lineage gate blocks it
    events = StateStore(world.repo, "prod").events_path
    mark = events.stat().st_size
    world.propose(version)
    assert world.rollout() == 1
    seen = [json.loads(line) for line in events.read_text()[mark:].splitlines() if line.strip()]
    assert [e for e in seen if e["event"] == "routing"] == [], "not one routing change"
    assert world.routes() == {current: 100.0}
    assert world.load.totals()["served"].get(str(version), 0) == 0
    assert Project(world.repo).environment("prod").model.version == current
    assert world.registry.alias("fraud-detector", "prod") == current
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "reject" and record.version == current
    assert record.predicate["replaced_version"] == version
    assert "gates block at rollout time" in record.predicate["reason"] and "code_commit" in record.predicate["reason"]
    assert main(["--root", str(world.repo), "verify", str(record.path)]) == 0
    assert world.log()[0].startswith(f"rollback prod: fraud-detector v{version} -> v{current}: gates block")
    # the revert leaves nothing to do, and a second run signs nothing more
    before = len(RecordStore(world.repo, "prod").records())
    assert world.rollout() == 0
    assert len(RecordStore(world.repo, "prod").records()) == before
