"""`serving.kind: gateway-api` end to end: the rollout commits each step's HTTPRoute and
pushes it to a git remote; a GitOps stand-in (tests/support/gitops_envoy.py) applies the
committed route to a real Envoy in front of real `bentoml serve` replicas (one per
version); a real Prometheus scrapes the replicas, and each step is judged only once the
observed split fits the committed weights.

What an operator notices: `promotion rollout` promotes v2 with one pushed commit per
weight change, the Envoy split following git; a canary failing half its requests is
rolled back with a 100% champion commit first; what the remote holds is what served.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion._internal.loadgen import Load
from promotion.cli import main
from promotion.config import Project
from promotion.records import RecordStore
from promotion.rollout import StateStore
from promotion.traffic import backend_for
from promotion.traffic.gateway_api import GatewayApiBackend
from tests.conftest import make_repo
from tests.support.policies import steps_policy
from tests.support.envoy import (
    envoy_settings, point_environment, rollout_evidence, served_split, start_envoy, start_prometheus, start_replicas)
from tests.support.gateway_api_schema import npm_problems
from tests.support.gitops_envoy import GitOpsAgent

pytestmark = pytest.mark.integration
TOKEN = "gateway-api-test-token"
POLICY = steps_policy((10, 50, 100))
ROUTE = "deploy/prod/fraud.httproute.yaml"


def remote_log(remote) -> list[str]:
    return subprocess.run(["git", "--git-dir", str(remote), "log", "--format=%s", "main"], capture_output=True,
                          text=True, check=True).stdout.splitlines()


def remote_route(remote) -> dict:
    return yaml.safe_load(subprocess.run(["git", "--git-dir", str(remote), "show", f"main:{ROUTE}"],
                                         capture_output=True, text=True, check=True).stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny
    from tests.support.world import isolated_env

    root = tmp_path_factory.mktemp("gateway-api-e2e")
    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    v1, v2, bad = register_tiny(registry), register_tiny(registry), register_extra_feature(registry)
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    digests = {m.version: m.digest for m in (v1, v2, bad)}
    fleet = start_replicas(registry.uri, digests, count=1, root=root / "replicas", token=TOKEN)
    prom = proxy = agent = load = None
    try:
        targets = [u.split("//", 1)[1] for urls in fleet.urls().values() for u in urls]
        prom = start_prometheus(targets, root / "prometheus")
        # the data plane: an Envoy in front of the replicas, configured only by the agent
        edge = make_repo(root / "edge")
        point_environment(edge, "prod", envoy_settings(root / "envoy", fleet.urls()), amend=True)
        set_model(edge / "environments" / "prod.yaml", v1.version, v1.digest)
        proxy = start_envoy(Project(edge).environment("prod"), root / "envoy")
        # the GitOps repository: prod is a gateway-api environment pushing to `origin`
        remote = root / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        serving = {"kind": "gateway-api", "endpoint": proxy.url, "manifests_dir": "deploy/prod",
                   "route_name": "fraud", "namespace": "ml", "parent_ref": "ml-gateway",
                   "service_pattern": "fraud-v{version}", "port": 3000, "istio": True,
                   "push": {"remote": "origin", "branch": "main"},
                   "verify": {"min_requests": 60, "poll_s": 0.25}}
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        point_environment(repo, "prod", serving, amend=True,
                          metrics={"source": "prometheus", "url": prom.url, "selector": 'job="fraud"'})
        set_model(repo / "environments" / "prod.yaml", v1.version, v1.digest)
        Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
        Git(repo)("commit", "-q", "--amend", "--no-edit")
        Git(repo)("remote", "add", "origin", str(remote))
        Git(repo)("push", "-q", "origin", "main")
        backend = backend_for(Project(repo).environment("prod"))
        assert isinstance(backend, GatewayApiBackend)
        agent = GitOpsAgent(remote, "main", backend.spec, ROUTE, root / "envoy" / "route.json").start()
        frame = data.generate(4000, seed=11)
        rows = frame[list(data.FEATURES)].to_dict("records")
        for i, row in enumerate(rows):
            if i % 2 == 0:
                row[EXTRA_FEATURE] = 0.5
        load = Load(proxy.url, rows, rate=120, threads=4).start()
        yield type("World", (), dict(root=root, repo=repo, remote=remote, registry=registry, proxy=proxy,
                                     agent=agent, rows=rows, digests=digests, v1=v1.version, v2=v2.version,
                                     bad=bad.version, load=load, fleet=fleet, prom=prom))
    finally:
        for part in (load, agent):
            if part is not None:
                part.stop()
        for part in (proxy, prom):
            if part is not None:
                part.stop()
        fleet.stop()
        mp.undo()


def cli(world, *args) -> int:
    return main(["--root", str(world.repo), *args])


def evidence(world) -> str:
    return rollout_evidence(world.repo, "prod", envoy_admin=world.proxy.admin, replicas=world.fleet.urls(),
                            load=world.load, prometheus=world.prom.url)


def propose(world, version: int) -> None:
    set_model(world.repo / "environments" / "prod.yaml", version, world.digests[version])
    Git(world.repo).commit(f"Merge pull request: promote prod to v{version}", ["environments/prod.yaml"])


def test_first_deployment_commits_and_pushes_the_route(world):
    assert cli(world, "rollout", "prod") == 0
    assert remote_log(world.remote)[0] == f"traffic prod: v{world.v1}=100% (generation 1)"
    assert npm_problems([remote_route(world.remote)]) == [[]]
    assert not world.agent.errors


def test_a_healthy_canary_is_promoted_step_by_step_through_git(world, capsys):
    propose(world, world.v2)
    assert cli(world, "rollout", "prod") == 0, evidence(world)
    v1, v2 = world.v1, world.v2
    traffic = [s for s in remote_log(world.remote) if s.startswith("traffic prod:")]
    assert traffic[:4] == [f"traffic prod: v{v1}=0%, v{v2}=100% (generation 4)",
                           f"traffic prod: v{v1}=50%, v{v2}=50% (generation 3)",
                           f"traffic prod: v{v1}=90%, v{v2}=10% (generation 2)",
                           f"traffic prod: v{v1}=100% (generation 1)"], traffic
    # the step was judged on traffic Prometheus saw at its weight; the agent applied each commit
    assert [w for _, _, w in world.agent.applied if w.get(v2)][:1] == [{v1: 90.0, v2: 10.0}]
    assert served_split(world.proxy.url, world.rows[1::2], 40) == {v2: 40}
    record = RecordStore(world.repo, "prod").latest()
    assert record.action == "promote" and record.version == v2
    assert world.registry.alias("fraud-detector", "prod") == v2
    assert world.load.totals()["failed"] == 0
    assert (world.repo / "deploy/prod/fraud.virtualservice.yaml").exists()


def test_a_canary_failing_half_its_requests_is_rolled_back_with_the_champion_commit_first(world):
    propose(world, world.bad)
    assert cli(world, "rollout", "prod") == 1, evidence(world)
    v2, bad = world.v2, world.bad
    route = remote_route(world.remote)
    assert [(r["name"], r["weight"]) for r in route["spec"]["rules"][-1]["backendRefs"]] == [(f"fraud-v{v2}", 1_000_000)]
    assert len(route["spec"]["rules"]) == 1  # no header path to the rejected canary
    local = Git(world.repo)("log", "--format=%s").splitlines()
    back = local.index(next(s for s in local if s.startswith(f"traffic prod: v{v2}=100%")))
    record_commit = local.index(next(s for s in local if s.startswith("rollback prod:")))
    assert record_commit < back, "the 100% champion commit comes before the rollback record"
    assert served_split(world.proxy.url, world.rows[1::2], 40) == {v2: 40}
    events = [json.loads(line) for line in StateStore(world.repo, "prod").events_path.read_text().splitlines()]
    names = [e["event"] for e in events]
    last_start = max(i for i, n in enumerate(names) if n == "rollback_started")
    switch = next(i for i, e in enumerate(events) if i > last_start and e["event"] == "routing")
    assert events[switch]["routes"] == {str(v2): 100.0}
    assert RecordStore(world.repo, "prod").latest().action == "rollback"
    assert not world.agent.errors
