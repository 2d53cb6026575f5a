"""The rendered HTTPRoute is valid against the official Gateway API schema, offline.

Two validators: the npm package @kubernetes-models/gateway-api (v1.0 standard schema,
pinned in tools/k8s-validate/package-lock.json; it must be installed: a missing Node or
package fails these tests), and the v1.6.1 CRDs vendored beside the repository (skipped,
with the reason printed, where that folder does not exist). Manifests the schema rejects
are rejected, so the validators are shown to be able to fail.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from promotion.errors import ServiceError
from promotion.traffic.base import Mirror
from promotion.traffic.k8s_render import (RouteSpec, Split, dump, parse_httproute, render_httproute,
                                          render_virtualservice)
from tests.support import gateway_api_schema as schema

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")
SPEC = RouteSpec(env="prod", route_name="fraud", namespace="ml", parent_ref="ml-gateway",
                 service_pattern="fraud-v{version}", port=3000, hostnames=("fraud.example.com",))

SPLITS = [
    Split(1, {1: 100.0}, digests={1: D1}),
    Split(2, {1: 95.0, 2: 5.0}, canary=2, digests={1: D1, 2: D2}),
    Split(3, {1: 99.5, 2: 0.5}, canary=2, digests={1: D1, 2: D2}),
    Split(4, {1: 0.0, 2: 100.0}, canary=2, digests={1: D1, 2: D2}),
    Split(5, {1: 100.0}, Mirror(2, 100.0), digests={1: D1, 2: D2}),
    Split(6, {1: 40.0, 2: 35.0, 3: 25.0}, canary=3, digests={1: D1, 2: D2, 3: D3}),
]


def routes() -> list[dict]:
    return [render_httproute(SPEC, s) for s in SPLITS]


def test_the_pinned_validator_is_installed():
    assert schema.installed_version() == "0.5.1"


def test_every_rendered_split_is_valid_against_the_npm_schema():
    assert schema.npm_problems(routes()) == [[] for _ in SPLITS]


def test_weights_header_match_and_mirror_are_where_gateway_api_reads_them():
    step = render_httproute(SPEC, SPLITS[1])
    header_rule, split_rule = step["spec"]["rules"]
    assert header_rule["matches"] == [{"headers": [{"type": "Exact", "name": "X-Canary", "value": "always"}]}]
    assert [r["name"] for r in header_rule["backendRefs"]] == ["fraud-v2"]
    assert [(r["name"], r["weight"]) for r in split_rule["backendRefs"]] == [("fraud-v1", 950_000), ("fraud-v2", 50_000)]
    assert step["spec"]["parentRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "ml-gateway"}]
    shadow = render_httproute(SPEC, SPLITS[4])
    assert shadow["spec"]["rules"][0]["filters"] == [
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"group": "", "kind": "Service", "name": "fraud-v2", "port": 3000}}}]


def test_a_rollback_leaves_no_header_path_to_the_canary():
    rollback = render_httproute(SPEC, Split(7, {1: 100.0}, canary=2, digests={1: D1}))
    assert [r.get("matches") for r in rollback["spec"]["rules"]] == [None]
    assert [r["name"] for r in rollback["spec"]["rules"][0]["backendRefs"]] == ["fraud-v1"]


def test_parse_reads_back_what_was_rendered_and_rendering_is_deterministic():
    for split in SPLITS:
        text = dump(render_httproute(SPEC, split))
        assert text == dump(render_httproute(SPEC, copy.deepcopy(split)))
        back = parse_httproute(SPEC, yaml.safe_load(text))
        assert (back.generation, back.weights, back.mirror, back.digests) == (
            split.generation, split.weights, split.mirror, split.digests)
        assert back.canary == split.header_canary
    assert dump(render_httproute(SPEC, SPLITS[1])).splitlines()[:3] == [
        "apiVersion: gateway.networking.k8s.io/v1", "kind: HTTPRoute", "metadata:"]


def _bad_documents() -> dict[str, dict]:
    good = render_httproute(SPEC, SPLITS[1])
    too_heavy = copy.deepcopy(good)
    too_heavy["spec"]["rules"][1]["backendRefs"][0]["weight"] = 1_000_001
    nameless_parent = copy.deepcopy(good)
    del nameless_parent["spec"]["parentRefs"][0]["name"]
    typo = copy.deepcopy(good)
    ref = typo["spec"]["rules"][1]["backendRefs"][1]
    ref["weigth"] = ref.pop("weight")
    bad_header = copy.deepcopy(good)
    bad_header["spec"]["rules"][0]["matches"][0]["headers"][0]["type"] = "Glob"
    return {"weight": too_heavy, "parentRefs[0].name": nameless_parent, "weigth": typo, "type": bad_header}


def test_the_npm_schema_rejects_what_a_cluster_would_reject():
    bad = _bad_documents()
    problems = dict(zip(bad, schema.npm_problems(list(bad.values()))))
    assert problems["weight"] == ["spec.rules[1].backendRefs[0].weight: must be <= 1000000"]
    assert problems["parentRefs[0].name"] == ["spec.parentRefs[0]: must have required property 'name'"]
    assert problems["weigth"] == ["spec.rules[1].backendRefs[1].weigth: unknown field (not in the Gateway API schema)"]
    assert any("must be equal to one of the allowed values" in p for p in problems["type"])


def _crd():
    found = schema.crd_schema()
    if found is None:
        pytest.skip(f"no vendored Gateway API CRDs at {schema.CRD_DIR} (only a checkout beside shared/ has them)")
    return found


def test_every_rendered_split_is_valid_against_the_v1_6_1_crd():
    crd = _crd()
    for route in routes():
        assert schema.crd_problems(route, crd) == []


def test_the_v1_6_1_crd_rejects_the_same_bad_manifests():
    crd = _crd()
    for name, doc in _bad_documents().items():
        problems = schema.crd_problems(doc, crd)
        assert problems, name
        assert any(name.split(".")[-1].split("[")[0] in p for p in problems), (name, problems)


def test_a_partial_mirror_uses_percent_which_is_standard_since_v1_3_not_in_v1_0():
    route = render_httproute(SPEC, Split(8, {1: 100.0}, Mirror(2, 10.0), digests={1: D1, 2: D2}))
    assert route["spec"]["rules"][0]["filters"][0]["requestMirror"]["percent"] == 10
    assert schema.npm_problems([route]) == [[
        "spec.rules[0].filters[0].requestMirror.percent: unknown field (not in the Gateway API schema)"]]
    assert schema.crd_problems(route, _crd()) == []


def test_a_split_the_manifest_cannot_express_is_refused():
    with pytest.raises(ServiceError, match="mirror percent 12.5 is not a whole percent"):
        render_httproute(SPEC, Split(9, {1: 100.0}, Mirror(2, 12.5)))
    istio = RouteSpec(**{**SPEC.__dict__, "istio": True})
    with pytest.raises(ServiceError, match="istio weight of v1 99.5 is not a whole percent"):
        render_virtualservice(istio, SPLITS[2])
    with pytest.raises(ServiceError, match="is not a Kubernetes DNS label"):
        RouteSpec(**{**SPEC.__dict__, "service_pattern": "Fraud_{version}"}).service(2)


def test_the_istio_virtualservice_carries_the_same_split():
    vs = render_virtualservice(SPEC, SPLITS[1])
    assert vs["apiVersion"] == "networking.istio.io/v1" and vs["spec"]["gateways"] == ["ml-gateway"]
    header, split = vs["spec"]["http"]
    assert header["match"] == [{"headers": {"x-canary": {"exact": "always"}}}]
    assert [(r["destination"]["host"], r["weight"]) for r in split["route"]] == [("fraud-v1", 95), ("fraud-v2", 5)]
    shadow = render_virtualservice(SPEC, Split(5, {1: 100.0}, Mirror(2, 20.0)))["spec"]["http"][0]
    assert shadow["mirror"] == {"host": "fraud-v2", "port": {"number": 3000}} and shadow["mirrorPercentage"] == {"value": 20.0}


def test_a_route_naming_a_service_of_no_version_is_not_read_as_a_split():
    doc = render_httproute(SPEC, SPLITS[1])
    doc["spec"]["rules"][1]["backendRefs"][0]["name"] = "payments"
    with pytest.raises(ServiceError, match="'payments' is no version's Service"):
        parse_httproute(SPEC, doc, "deploy/prod/fraud.httproute.yaml")
    doc = render_httproute(SPEC, SPLITS[1])
    doc["spec"]["rules"][1]["backendRefs"][0]["namespace"] = "kube-system"
    with pytest.raises(ServiceError, match="is not a Service of namespace 'ml'"):
        parse_httproute(SPEC, doc)
