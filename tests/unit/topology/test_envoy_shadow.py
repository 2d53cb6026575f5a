"""A shadow through Envoy is mirrored by the serving replicas (whose routers count mirrored
requests and their agreement with the served answer), never by an Envoy mirror policy
(whose copies the shadow's replicas would count as served). Replicas are fakes of the
router's admin API here; tests/integration/test_envoy_rollout.py runs the real ones."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from promotion.config import Serving
from promotion.contract.routing import Routing, Shadow
from promotion.errors import ServiceError
from promotion.traffic.base import Mirror
from promotion.traffic.envoy import CANARY_ROUTE, EnvoyBackend

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
REPLICAS = {1: ["http://r1a", "http://r1b"], 2: ["http://r2a"]}


class FakeReplica:
    """A router serving one version at 100%, as its admin API shows it."""

    def __init__(self, version: int, digest: str) -> None:
        self.routing_now = Routing(1, "fraud-detector", {version: 100.0}, {version: digest})
        self.calls: list[tuple] = []
        self.down = False

    def routing(self) -> Routing:
        if self.down:
            raise ServiceError("GET http://r/admin/routing: cannot reach the service (ConnectionError)")
        return self.routing_now

    def set_routing(self, routes, digests, shadow=None, *, based_on=None) -> Routing:
        self.calls.append((dict(routes), dict(digests), shadow))
        self.routing_now = Routing(self.routing_now.generation + 1, "fraud-detector", dict(routes), dict(digests),
                                   shadow)
        return self.routing_now


@pytest.fixture
def backend(tmp_path):
    settings = {"kind": "envoy", "endpoint": "http://127.0.0.1:10000", "admin": "http://127.0.0.1:9901",
                "route_file": str(tmp_path / "route.json"), "replicas": {str(v): u for v, u in REPLICAS.items()}}
    env = SimpleNamespace(name="prod", endpoint=settings["endpoint"], serving=Serving("envoy", settings),
                          model=SimpleNamespace(version=1), admin_token=lambda: "t")
    b = EnvoyBackend.from_environment(env)
    b.write_initial(1)
    fakes = {u: FakeReplica(v, D1 if v == 1 else D2) for v, urls in REPLICAS.items() for u in urls}
    b._routers.update(fakes)
    b._digests.update({1: D1, 2: D2})  # what prepare() verified
    b.fakes = fakes
    return b


def _split(backend) -> dict:
    return json.loads(backend.route_file.read_text())["resources"][0]["virtual_hosts"][0]["routes"]


def test_the_serving_replicas_mirror_and_envoy_carries_no_mirror_policy(backend):
    applied = backend.set_weights({1: 100.0}, Mirror(2, 50.0), canary=2)
    assert applied.mirror == Mirror(2, 50.0)
    routes = _split(backend)
    assert all("request_mirror_policies" not in r["route"] for r in routes)
    # testers still reach the shadow with the canary header
    assert [r["route"]["cluster"] for r in routes if r["name"] == CANARY_ROUTE] == ["v2"]
    for url in REPLICAS[1]:
        assert backend.fakes[url].calls == [({1: 100.0}, {1: D1, 2: D2}, Shadow(2, 50.0, D2))]
    assert backend.fakes["http://r2a"].calls == []  # the shadow's own replicas are not asked to mirror


def test_the_shadow_is_taken_away_once_and_a_change_without_one_asks_no_replica(backend):
    backend.set_weights({1: 100.0}, Mirror(2, 100.0), canary=2)
    backend.set_weights({1: 0.0, 2: 100.0}, canary=2)  # the flip
    for url in REPLICAS[1]:
        assert backend.fakes[url].calls[-1] == ({1: 100.0}, {1: D1}, None)
    for fake in backend.fakes.values():
        fake.down = True  # no replica is read when no shadow was given and none is wanted
    backend.set_weights({2: 100.0})


def test_a_rollback_does_not_wait_for_the_shadows_replicas(backend):
    backend.set_weights({1: 100.0}, Mirror(2, 100.0), canary=2)
    backend.fakes["http://r2a"].down = True  # the shadow's replica is gone
    backend.set_weights({1: 100.0})
    assert all(backend.fakes[u].routing_now.shadow is None for u in REPLICAS[1])
    assert json.loads((backend.route_file.parent / "shadow.json").read_text())["unreached"] == ["http://r2a"]
    # a champion replica that cannot be reached is an error: it serves
    backend.set_weights({1: 100.0}, Mirror(2, 100.0), canary=2)
    backend.fakes["http://r1a"].down = True
    with pytest.raises(ServiceError, match="cannot reach the service"):
        backend.set_weights({1: 100.0})
