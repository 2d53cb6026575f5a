"""`serving.kind: envoy`: a real Envoy in front of real `bentoml serve` replicas (two per
version for v1 and v2, each serving one version), a real Prometheus scraping every replica
(the analysis reads per-version counters summed over replicas), real git and records.

What an operator notices: weights move without an Envoy restart (same PID) and the served
split follows them; `X-Canary: always` reaches the canary; a rejected Envoy update is not
reported as applied; `promotion rollout` walks 5 -> 25 -> 100 and promotes through Envoy;
a canary failing half its requests is rolled back with 100% on the champion first;
`promotion reconcile` compares git with what Envoy applies, and converges it; a shadow
through Envoy is mirrored by the serving replicas, so the mirrored requests are counted as
mirrored (with their agreement), never as served by the shadow, and a blue-green rollout
with a shadow phase passes it and promotes.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion._internal.loadgen import Load
from promotion.cli import main
from promotion.config import Project
from promotion.errors import ServiceError
from promotion.records import RecordStore
from promotion.rollout import StateStore
from promotion.traffic import backend_for
from promotion.traffic.base import Applied, Mirror
from promotion.traffic.bentoml_router import BentoMLRouter
from promotion.traffic.envoy import ROUTE_TYPE, EnvoyBackend
from tests.conftest import make_repo
from tests.support.policies import steps_policy
from tests.support.envoy import (
    envoy_settings, new_ports, point_environment, rollout_evidence, served_split, start_envoy, start_prometheus,
    start_replicas)

pytestmark = pytest.mark.integration
TOKEN = "envoy-test-token"
POLICY = steps_policy()


class World:
    def __init__(self, **kw):
        self.__dict__.update(kw)
        self.load = None

    def backend(self) -> EnvoyBackend:
        return backend_for(Project(self.repo).environment("prod"))

    def served(self) -> dict[int, float]:
        return self.backend().current().serving()

    def propose(self, version: int) -> None:
        set_model(self.repo / "environments" / "prod.yaml", version, self.digests[version])
        Git(self.repo).commit(f"Merge pull request: promote prod to v{version}", ["environments/prod.yaml"])

    def cli(self, *args) -> int:
        return main(["--root", str(self.repo), *args])

    def evidence(self, load=None) -> str:
        return rollout_evidence(self.repo, "prod", envoy_admin=self.envoy.admin, replicas=self.fleet.urls(),
                                load=load or self.load, prometheus=self.prom.url)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny
    from tests.support.world import isolated_env

    root = tmp_path_factory.mktemp("envoy-e2e")
    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    v1, v2 = register_tiny(registry), register_tiny(registry)
    bad = register_extra_feature(registry)
    # passes lineage, but needs a feature half of the clients do not send: fails half its requests
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    digests = {m.version: m.digest for m in (v1, v2, bad)}
    fleet = start_replicas(registry.uri, {v1.version: v1.digest, v2.version: v2.digest}, count=2,
                           root=root / "replicas", token=TOKEN)
    fleet.replicas.update(start_replicas(registry.uri, {bad.version: bad.digest}, count=1,
                                         root=root / "replicas", token=TOKEN).replicas)
    prom = envoy = None
    try:
        targets = [u.split("//", 1)[1] for urls in fleet.urls().values() for u in urls]
        prom = start_prometheus(targets, root / "prometheus")
        settings = envoy_settings(root / "envoy", fleet.urls())
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        point_environment(repo, "prod", settings, amend=True,
                          metrics={"source": "prometheus", "url": prom.url, "selector": 'job="fraud"'})
        set_model(repo / "environments" / "prod.yaml", v1.version, v1.digest)
        Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
        Git(repo)("commit", "-q", "--amend", "--no-edit")  # the initial state: the audit's baseline

        def repick():  # another process took a port envoy_settings picked: new ones, in git
            point_environment(repo, "prod", new_ports(settings), amend=True)
            return Project(repo).environment("prod")

        envoy = start_envoy(Project(repo).environment("prod"), root / "envoy", repick=repick)
        frame = data.generate(4000, seed=11)
        rows = frame[list(data.FEATURES)].to_dict("records")
        for i, row in enumerate(rows):
            if i % 2 == 0:
                row[EXTRA_FEATURE] = 0.5
        yield World(root=root, repo=repo, registry=registry, fleet=fleet, envoy=envoy, prom=prom, rows=rows,
                    digests=digests, v1=v1.version, v2=v2.version, bad=bad.version)
    finally:
        if envoy is not None:
            envoy.stop()
        if prom is not None:
            prom.stop()
        fleet.stop()
        mp.undo()


def _replica_requests(url: str, family: str = "promotion_requests_total", version: int | None = None) -> float:
    total = 0.0
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(family + "{") and (version is None or f'version="{version}"' in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _fleet_total(urls: list[str], family: str = "promotion_requests_total", version: int | None = None) -> float:
    return sum(_replica_requests(u, family, version) for u in urls)


def test_first_deployment_through_envoy(world):
    assert world.cli("rollout", "prod") == 0
    assert world.served() == {world.v1: 100.0}
    assert RecordStore(world.repo, "prod").latest().action == "promote"


def test_weights_move_without_restart_the_split_follows_and_the_header_reaches_the_canary(world):
    v1, v2 = world.v1, world.v2
    backend = world.backend()
    pid = world.envoy.pid
    backend.prepare(v1, world.digests[v1])
    backend.prepare(v2, world.digests[v2])
    before = {u: _replica_requests(u) for u in world.fleet.urls()[v1]}
    applied = backend.set_weights({v1: 70.0, v2: 30.0}, canary=v2)
    took = backend.verify(applied, 5.0)
    assert took < 2.0
    assert backend.current().serving() == {v1: 70.0, v2: 30.0} and backend.current().generation == applied.generation
    split = served_split(world.envoy.url, world.rows[1::2], 600)
    assert set(split) == {v1, v2} and abs(split[v2] / 600 - 0.30) < 0.07, split
    assert served_split(world.envoy.url, world.rows[1::2], 30, {"X-Canary": "always"}) == {v2: 30}
    # both replicas of v1 took a share: Envoy balances over the cluster
    after = {u: _replica_requests(u) for u in world.fleet.urls()[v1]}
    assert all(after[u] > before[u] for u in before), (before, after)
    backend.verify(backend.set_weights({v1: 100.0}, canary=v2), 5.0)
    assert served_split(world.envoy.url, world.rows[1::2], 30, {"X-Canary": "always"}) == {v1: 30}
    assert world.envoy.proc.poll() is None and world.envoy.pid == pid  # no restart


def test_a_replica_serving_another_artifact_is_refused_by_prepare(world):
    backend = world.backend()
    with pytest.raises(ServiceError, match=r"serves v\d+=100% .* not v\d+ at 100%"):
        backend.prepare(world.v1, world.digests[world.v2])
    assert world.served() == {world.v1: 100.0}


def test_an_update_envoy_rejects_is_never_reported_applied(world):
    backend = world.backend()
    live = backend.current()
    broken = {"version_info": str(live.generation + 1), "resources": [{
        "@type": ROUTE_TYPE, "name": "promotion", "virtual_hosts": [{"name": "m", "domains": ["*"], "routes": [
            {"name": "split", "match": {"prefix": "/"},
             "route": {"weighted_clusters": {"clusters": [{"name": "v1", "weight": "many"}]}}}]}]}]}
    tmp = backend.route_file.with_name(".tmp-broken.json")
    tmp.write_text(json.dumps(broken))
    tmp.replace(backend.route_file)
    with pytest.raises(ServiceError, match=f"route version {live.generation + 1} not applied by envoy"):
        backend.verify(Applied(live.generation + 1, {world.v1: 100.0}), 1.0)
    now = backend.current()
    assert now.generation == live.generation and not now.applied
    fixed = backend.set_weights({world.v1: 100.0})
    backend.verify(fixed, 5.0)
    assert backend.current().applied


def test_a_healthy_canary_is_promoted_through_envoy_with_no_failed_request(world, capsys):
    world.load = Load(world.envoy.url, [r for r in world.rows], rate=120, threads=4).start()
    time.sleep(1.5)
    world.propose(world.v2)
    assert world.cli("rollout", "prod") == 0, world.evidence()
    out = capsys.readouterr().out
    assert "5%" in out and "25%" in out and "promoted" in out
    totals = world.load.totals()
    assert totals["failed"] == 0, totals
    assert world.served() == {world.v2: 100.0}
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == world.v2
    assert [s["weight"] for s in record.predicate["steps"]] == [5.0, 25.0, 100.0]
    assert world.registry.alias("fraud-detector", "prod") == world.v2


def test_a_canary_failing_half_its_requests_is_rolled_back_champion_first(world, capsys):
    world.propose(world.bad)
    assert world.cli("rollout", "prod") == 1, world.evidence()
    assert world.served() == {world.v2: 100.0}
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "rollback" and record.version == world.v2
    assert Project(world.repo).environment("prod").model.version == world.v2  # the file is reverted in git
    events = [json.loads(line) for line in StateStore(world.repo, "prod").events_path.read_text().splitlines()]
    names = [e["event"] for e in events]
    last_start = max(i for i, n in enumerate(names) if n == "rollback_started")
    switch = next(i for i, e in enumerate(events) if i > last_start and e["event"] == "routing")
    assert events[switch]["routes"] == {str(world.v2): 100.0}
    assert switch < names.index("rolled_back", last_start), "traffic moved back before the records"


def test_reconcile_compares_git_with_what_envoy_applies(world, capsys):
    world.load.stop()
    backend = world.backend()
    backend.prepare(world.v1, world.digests[world.v1])
    backend.prepare(world.v2, world.digests[world.v2])
    backend.verify(backend.set_weights({world.v1: 100.0}), 5.0)  # an out-of-band change, outside git
    capsys.readouterr()
    assert world.cli("reconcile", "prod") == 1
    assert f"routing: version {world.v1} serves 100%, git wants {world.v2}" in capsys.readouterr().out
    assert world.served() == {world.v1: 100.0}, "reconcile without --converge changed traffic"
    world.cli("reconcile", "prod", "--converge")  # exit 1: there was drift, now converged
    out = capsys.readouterr().out
    assert out.startswith("prod: converged") and f"+ converged routing: 100% to version {world.v2}" in out, out
    assert world.served() == {world.v2: 100.0}
    assert world.cli("reconcile", "prod") == 0  # git and what Envoy applies agree


def test_a_shadow_through_envoy_is_counted_as_mirrored_not_as_served(world):
    """Before: Envoy's mirror policy sent copies to the shadow's replicas, which counted
    them as requests the shadow served and compared nothing (the shadow phase never passed)."""
    champion, shadow = world.v2, world.v1
    backend = world.backend()
    for v in (champion, shadow):
        backend.prepare(v, world.digests[v])
    served_before = _fleet_total(world.fleet.urls()[shadow])
    mirrored_before = _fleet_total(world.fleet.urls()[champion], "promotion_shadow_requests_total", shadow)
    backend.verify(backend.set_weights({champion: 100.0}, Mirror(shadow, 100.0), canary=shadow), 10.0)
    live = backend.current()
    assert live.serving() == {champion: 100.0} and live.mirror == Mirror(shadow, 100.0) and live.applied
    assert served_split(world.envoy.url, world.rows[1::2], 100) == {champion: 100}  # clients get the champion
    # the shadow predicts at idle priority: on a busy machine it lags (it never delays serving)
    deadline = time.monotonic() + 30
    while _fleet_total(world.fleet.urls()[champion], "promotion_shadow_requests_total", shadow) - mirrored_before < 100:
        assert time.monotonic() < deadline, "the champion's replicas did not mirror the requests to the shadow"
        time.sleep(0.2)
    assert _fleet_total(world.fleet.urls()[shadow]) == served_before, "a mirrored request was counted as served"
    agreed = _fleet_total(world.fleet.urls()[champion], "promotion_shadow_agreement_total", shadow)
    assert agreed >= 100
    # taking the shadow away leaves no replica mirroring
    backend.verify(backend.set_weights({champion: 100.0}), 10.0)
    assert backend.current().mirror is None
    assert all(BentoMLRouter(u, TOKEN).routing().shadow is None for u in world.fleet.urls()[champion])


SHADOW_POLICY = """apiVersion: promotion/v1
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


def test_a_blue_green_rollout_with_a_shadow_phase_passes_it_through_envoy(world, capsys):
    champion, canary = world.v2, world.v1
    (world.repo / "policies" / "prod.yaml").write_text(SHADOW_POLICY)
    Git(world.repo).commit("Merge pull request: blue-green with a shadow for prod", ["policies/prod.yaml"])
    events_path = StateStore(world.repo, "prod").events_path
    mark = len(events_path.read_text().splitlines()) if events_path.exists() else 0
    load = Load(world.envoy.url, world.rows[1::2], rate=80, threads=2).start()
    try:
        time.sleep(1.0)
        world.propose(canary)
        assert world.cli("rollout", "prod") == 0, capsys.readouterr().out + "\n" + world.evidence(load)
    finally:
        load.stop()
    assert load.totals()["failed"] == 0, load.totals()
    assert world.served() == {canary: 100.0} and world.backend().current().mirror is None
    events = [json.loads(line) for line in events_path.read_text().splitlines()[mark:]]
    assert [(e["routes"], (e["shadow"] or {}).get("version")) for e in events if e["event"] == "routing"] == [
        ({str(champion): 100.0}, canary), ({str(champion): 0.0, str(canary): 100.0}, None)]
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == canary
    steps = record.predicate["steps"]
    assert [(s["step"], s["verdict"]) for s in steps] == [("shadow", "pass"), (1, "pass")]
    assert steps[0]["shadow_requests"] >= 60 and steps[0]["shadow_agreement"] >= 0.95
