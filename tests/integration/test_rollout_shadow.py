"""Blue-green with a shadow phase against a real `bentoml serve` (2 workers): the router
mirrors live traffic to the new version, its agreement counters
(``promotion_shadow_agreement_total``) decide the shadow phase, then traffic flips
0 -> 100 in one routing change; a new version that fails the mirrored requests never
serves a client. Real MLflow sqlite registry, real git, signed records."""

from __future__ import annotations

import json

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

pytestmark = pytest.mark.integration
TOKEN = "shadow-test-token"
POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {}
rollout:
  strategy: blue_green
  shadow: {percent: 100, hold_s: 2, min_requests: 60, min_agreement: 0.95}
  interval_s: 0.5
slo:
  error_rate_max: 0.05
  latency_p95_ms_max: 250
  min_requests: 30
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.support.fraud_versions import register_extra_feature, register_tiny

    root = tmp_path_factory.mktemp("rollout-shadow")
    from tests.support.world import isolated_env

    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = {"v1": register_tiny(registry).version, "v2": register_tiny(registry).version}
    bad = register_extra_feature(registry)  # needs session_risk, which these clients never send
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    versions["bad"] = bad.version
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False)
    load = None
    try:
        env_file = repo / "environments" / "prod.yaml"
        env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        Git(repo).commit("point prod at the test service", ["environments/prod.yaml", "policies/prod.yaml"])
        rows = data.generate(2000, seed=3)[list(data.FEATURES)].to_dict("records")

        def propose(version: int) -> None:
            set_model(env_file, version, registry.version("fraud-detector", version).digest)
            Git(repo).commit(f"promote prod to v{version}", ["environments/prod.yaml"])

        def rollout() -> int:
            return main(["--root", str(repo), "rollout", "prod", "--max-seconds", "180"])

        propose(versions["v1"])
        assert rollout() == 0  # first deployment: v1 serves everything
        load = Load(service.url, rows, rate=100, threads=4).start()
        yield {"repo": repo, "registry": registry, "service": service, "versions": versions, "load": load,
               "propose": propose, "rollout": rollout}
    finally:
        if load is not None:
            load.stop()
        service.stop()
        mp.undo()


def _events(repo, since: int) -> list[dict]:
    path = StateStore(repo, "prod").events_path
    return [json.loads(line) for line in path.read_text()[since:].splitlines() if line.strip()]


def _mark(repo) -> int:
    path = StateStore(repo, "prod").events_path
    return path.stat().st_size if path.exists() else 0


def _routes(repo) -> dict[int, float]:
    return {v: w for v, w in backend_for(Project(repo).environment("prod")).routing().routes.items() if w > 0}


def test_blue_green_shadows_then_flips_0_to_100(world):
    from promotion.metrics.scrape import ScrapeProvider

    repo, load = world["repo"], world["load"]
    v1, v2 = world["versions"]["v1"], world["versions"]["v2"]
    metrics = ScrapeProvider(world["service"].url + "/metrics")
    before, failed_before, mark = metrics.snapshot(), load.totals()["failed"], _mark(repo)
    world["propose"](v2)
    assert world["rollout"]() == 0
    assert _routes(repo) == {v2: 100.0}
    # one change mirrors v2 behind v1, the next flips every request: no partial share ever
    routings = [e for e in _events(repo, mark) if e["event"] == "routing"]
    assert [(e["routes"], (e["shadow"] or {}).get("version")) for e in routings] == [
        ({str(v1): 100.0}, v2), ({str(v1): 0.0, str(v2): 100.0}, None)]
    # the service counted v2's mirrored answers and their agreement with what v1 served
    shadow = metrics.snapshot().versions[v2]
    assert shadow.shadow_agree - before.versions.get(v2, shadow.__class__()).shadow_agree >= 60
    record = RecordStore(repo, "prod").latest()
    assert record.action == "promote" and record.version == v2
    steps = record.predicate["steps"]
    assert [(s["step"], s["weight"], s["verdict"]) for s in steps] == [("shadow", 0.0, "pass"), (1, 100.0, "pass")]
    assert steps[0]["shadow_requests"] >= 60 and steps[0]["shadow_agreement"] >= 0.95
    assert steps[1]["canary_requests"] >= 30
    assert load.totals()["failed"] == failed_before  # no client noticed the flip


def test_a_new_version_failing_in_shadow_never_serves_and_is_rolled_back(world):
    repo, load = world["repo"], world["load"]
    v2, bad = world["versions"]["v2"], world["versions"]["bad"]
    served_before, failed_before = load.totals()["served"].get(str(bad), 0), load.totals()["failed"]
    world["propose"](bad)
    assert world["rollout"]() == 1
    assert _routes(repo) == {v2: 100.0}
    assert Project(repo).environment("prod").model.version == v2  # the environment file is reverted
    record = RecordStore(repo, "prod").latest()
    assert record.action == "rollback" and record.version == v2 and record.predicate["replaced_version"] == bad
    assert f"shadow v{bad} failed" in record.predicate["reason"]
    assert record.predicate["evidence"]["shadow"]["errors"] > 0
    # clients never got an answer from the failing version, and lost nothing
    totals = load.totals()
    assert totals["served"].get(str(bad), 0) == served_before == 0
    assert totals["failed"] == failed_before
