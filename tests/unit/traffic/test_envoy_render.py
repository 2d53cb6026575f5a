"""The Envoy backend's files: what Envoy is given, and what is read back from a config dump."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from promotion.config import Serving
from promotion.errors import ServiceError
from promotion.traffic.base import Mirror
from promotion.traffic.envoy import (
    CANARY_ROUTE, EnvoyBackend, parse_route, render_bootstrap, render_clusters, render_route)

REPLICAS = {1: ["http://127.0.0.1:3101", "http://127.0.0.1:3102"], 2: ["http://127.0.0.1:3201"]}


def _env(tmp_path):
    settings = {"kind": "envoy", "endpoint": "http://127.0.0.1:10000", "admin": "http://127.0.0.1:9901",
                "route_file": str(tmp_path / "envoy" / "route.json"),
                "replicas": {str(v): u for v, u in REPLICAS.items()}}
    return SimpleNamespace(name="prod", endpoint=settings["endpoint"], serving=Serving("envoy", settings),
                           model=SimpleNamespace(version=1), admin_token=lambda: "t")


def test_the_split_uses_weighted_clusters_in_hundredths_and_reads_back_the_same():
    doc = render_route({1: 95.0, 2: 5.0}, 7, canary=2)
    assert doc["version_info"] == "7"
    config = doc["resources"][0]
    routes = config["virtual_hosts"][0]["routes"]
    assert routes[0]["name"] == CANARY_ROUTE and routes[0]["route"] == {"cluster": "v2"}
    assert routes[0]["match"]["headers"] == [{"name": "x-canary", "string_match": {"exact": "always"}}]
    assert routes[1]["route"]["weighted_clusters"]["clusters"] == [{"name": "v1", "weight": 9500},
                                                                   {"name": "v2", "weight": 500}]
    assert parse_route(config) == ({1: 95.0, 2: 5.0}, None, 2)


def test_after_a_rollback_the_canary_header_reaches_the_champion():
    config = render_route({1: 100.0}, 8, canary=2)["resources"][0]
    assert [r["name"] for r in config["virtual_hosts"][0]["routes"]] == ["split"]
    assert parse_route(config) == ({1: 100.0}, None, None)


def test_a_mirror_is_a_request_mirror_policy_with_its_fraction():
    config = render_route({1: 100.0}, 3, mirror=Mirror(2, 12.5), canary=2)["resources"][0]
    split = config["virtual_hosts"][0]["routes"][-1]["route"]
    assert split["request_mirror_policies"] == [{"cluster": "v2", "runtime_fraction": {
        "default_value": {"numerator": 1250, "denominator": "TEN_THOUSAND"}}}]
    assert parse_route(config) == ({1: 100.0}, Mirror(2, 12.5), 2)


def test_envoy_dumps_a_zero_weight_without_the_field():
    # proto3 JSON leaves zero out: the champion kept loaded at weight 0 must read as 0, not fail
    config = render_route({1: 0.0, 2: 100.0}, 4)["resources"][0]
    del config["virtual_hosts"][0]["routes"][-1]["route"]["weighted_clusters"]["clusters"][0]["weight"]
    assert parse_route(config)[0] == {1: 0.0, 2: 100.0}


@pytest.mark.parametrize("weights", [{1: 90.0, 2: 5.0}, {1: 101.0, 2: -1.0}, {}, {0: 100.0}])
def test_weights_that_do_not_sum_to_100_are_refused(weights):
    with pytest.raises(ServiceError, match="traffic not changed"):
        render_route(weights, 1)


def test_clusters_are_static_with_every_replica():
    doc = render_clusters(REPLICAS)
    v1 = doc["resources"][0]
    assert v1["name"] == "v1" and v1["type"] == "STATIC"
    assert [e["endpoint"]["address"]["socket_address"] for e in v1["load_assignment"]["endpoints"][0]["lb_endpoints"]] \
        == [{"address": "127.0.0.1", "port_value": 3101}, {"address": "127.0.0.1", "port_value": 3102}]


def test_the_bootstrap_watches_the_route_folder(tmp_path):
    env = _env(tmp_path)
    boot = render_bootstrap(env)
    assert boot["node"] == {"id": "promotion-prod", "cluster": "promotion-prod"}
    cds = boot["dynamic_resources"]["cds_config"]["path_config_source"]
    assert cds == {"path": str(tmp_path / "envoy" / "clusters.json"), "watched_directory": {"path": str(tmp_path / "envoy")}}
    manager = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["rds"]["config_source"]["path_config_source"]["path"] == str(tmp_path / "envoy" / "route.json")
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}


def test_set_weights_replaces_the_file_and_refuses_a_stale_generation(tmp_path):
    backend = EnvoyBackend.from_environment(_env(tmp_path))
    backend.write_initial(1)
    applied = backend.set_weights({1: 75.0, 2: 25.0}, canary=2)
    assert applied.generation == 2
    on_disk = json.loads(backend.route_file.read_text())
    assert on_disk["version_info"] == "2" and parse_route(on_disk["resources"][0])[0] == {1: 75.0, 2: 25.0}
    with pytest.raises(ServiceError, match="routing changed since generation 1"):
        backend.set_weights({2: 100.0}, based_on=1)
    assert json.loads(backend.route_file.read_text())["version_info"] == "2"
    assert [p.name for p in backend.route_file.parent.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_version_without_replicas_is_refused_before_any_write(tmp_path):
    backend = EnvoyBackend.from_environment(_env(tmp_path))
    backend.write_initial(1)
    with pytest.raises(ServiceError, match="no replicas for v3"):
        backend.set_weights({1: 50.0, 3: 50.0})
    with pytest.raises(ServiceError, match="no replicas for v3"):
        backend.prepare(3, "sha256:" + "a" * 64)
    assert json.loads(backend.route_file.read_text())["version_info"] == "1"
