"""The router under a real ``bentoml serve`` with two workers and a real MLflow registry.

What a user notices: the observed split, sticky keys, refused artifacts, admin calls
that cannot change anything, per-version errors and metrics, shadow mirroring.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests

from promotion.traffic.bentoml_router import BentoMLRouter
from services.router.inference_log import read_inference_log
from services.router.process import free_port, start_service
from tests.support.router_env import FEATURES, TOKEN, fraud_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    return fraud_registry(tmp_path_factory.getbasetemp() / "registry")


@pytest.fixture(scope="module")
def svc(fr, tmp_path_factory):
    state = tmp_path_factory.mktemp("router")
    initial = json.dumps(fr.body({1: 100}))
    service = start_service(free_port(), state, fr.uri, TOKEN, workers=2, initial_routes=initial,
                            env_extra={"PROMOTION_INFERENCE_SAMPLE": "1.0"})
    yield service
    service.stop()


def set_routing(svc, fr, routes, shadow=None, wait=True):
    backend = BentoMLRouter(svc.url, TOKEN)
    r = backend.set_routing(routes, {v: fr.digests[v] for v in routes}, shadow)
    if wait:
        backend.wait_applied(r.generation, timeout_s=10)
    return r


def predict(svc, key=None, features=FEATURES):
    # a fresh connection per request, so the kernel spreads requests over both workers
    headers = {"X-Routing-Key": key} if key else {}
    r = requests.post(svc.url + "/predict", json={"features": features}, headers=headers, timeout=10)
    return r


def routing_view(svc):
    return requests.get(svc.url + "/admin/routing", timeout=10).json()


def metric(svc, name, **labels):
    total = 0.0
    for line in requests.get(svc.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_observed_split_matches_weights_on_every_worker(svc, fr):
    set_routing(svc, fr, {1: 70, 2: 30})
    n = 600
    responses = [predict(svc) for _ in range(n)]
    assert all(r.status_code == 200 for r in responses)
    versions = Counter(r.json()["version"] for r in responses)
    share = versions[2] / n
    sigma = (0.3 * 0.7 / n) ** 0.5
    assert abs(share - 0.3) < 4 * sigma, versions
    workers = {r.headers["X-Promotion-Worker"] for r in responses}
    assert len(workers) == 2, "both workers should serve"
    body = responses[0].json()
    assert set(body) == {"version", "score", "label", "request_id"} and 0.0 <= body["score"] <= 1.0
    # the id a label is posted back with (POST /feedback): the same in the header and the body
    assert body["request_id"] == responses[0].headers["X-Request-Id"]
    assert len({r.json()["request_id"] for r in responses}) == n


def test_routing_key_is_sticky_and_growing_the_canary_only_moves_keys_onto_it(svc, fr):
    keys = [f"customer-{i}" for i in range(150)]
    set_routing(svc, fr, {1: 90, 2: 10})
    first = {k: predict(svc, k).json()["version"] for k in keys}
    again = {k: predict(svc, k).json()["version"] for k in keys}
    assert first == again  # same key, same version, whichever worker answers
    set_routing(svc, fr, {1: 60, 2: 40})
    after = {k: predict(svc, k).json()["version"] for k in keys}
    assert all(after[k] == 2 for k in keys if first[k] == 2)
    assert sum(1 for k in keys if after[k] == 2) > sum(1 for k in keys if first[k] == 2)


def test_flip_to_zero_takes_effect_on_every_worker(svc, fr):
    r = set_routing(svc, fr, {1: 0, 2: 100})
    responses = [predict(svc) for _ in range(60)]
    assert {x.json()["version"] for x in responses} == {2}
    assert {int(x.headers["X-Promotion-Generation"]) for x in responses} == {r.generation}


def test_tampered_artifact_is_refused_and_never_served(svc, fr):
    before = set_routing(svc, fr, {1: 100})
    v = fr.tampered_version
    r = requests.post(svc.url + "/admin/routing", json=fr.body({1: 50, v: 50}),
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert r.status_code == 409
    assert r.json()["error"]["kind"] == "digest" and "digest mismatch" in r.json()["error"]["message"]
    view = routing_view(svc)
    assert view["generation"] == before.generation and view["routes"] == {"1": 100.0}
    assert "digest mismatch" in view["refused"][str(v)]
    assert {predict(svc).json()["version"] for _ in range(30)} == {1}


def test_a_wrong_digest_for_a_good_version_is_refused(svc, fr):
    before = routing_view(svc)["generation"]
    body = fr.body({1: 50, 2: 50})
    body["digests"]["2"] = "sha256:" + "0" * 64
    r = requests.post(svc.url + "/admin/routing", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=120)
    assert r.status_code == 409
    assert routing_view(svc)["generation"] == before


@pytest.mark.parametrize("headers, body, status", [
    ({}, "ok", 401),
    ({"Authorization": "Bearer wrong"}, "ok", 401),
    ({"Authorization": TOKEN}, "ok", 401),  # not a bearer token
    ({"Authorization": f"Bearer {TOKEN}"}, "not json", 400),
    ({"Authorization": f"Bearer {TOKEN}"}, {"routes": {"1": 60, "2": 30}}, 400),
    ({"Authorization": f"Bearer {TOKEN}"}, {"routes": {"1": 60, "2": 40}, "digests": {"1": "x"}}, 400),
    ({"Authorization": f"Bearer {TOKEN}"}, "unknown", 400),
])
def test_unauthenticated_or_malformed_admin_calls_change_nothing(svc, fr, headers, body, status):
    before = routing_view(svc)
    if body == "ok":
        payload = json.dumps(fr.body({1: 0, 2: 100}))
    elif body == "unknown":
        payload = json.dumps({"routes": {"1": 50, "99": 50},
                              "digests": {"1": fr.digests[1], "99": "sha256:" + "9" * 64}})
    elif isinstance(body, dict):
        payload = json.dumps(body)
    else:
        payload = body
    r = requests.post(svc.url + "/admin/routing", data=payload,
                      headers={**headers, "Content-Type": "application/json"}, timeout=60)
    assert r.status_code == status, r.text
    after = routing_view(svc)
    assert (after["generation"], after["routes"], after["digests"]) == (
        before["generation"], before["routes"], before["digests"])


def test_a_version_needing_an_extra_feature_fails_alone_with_kind_input(svc, fr):
    v3 = fr.extra_feature_version
    set_routing(svc, fr, {1: 50, v3: 50})
    errors_before = metric(svc, "promotion_request_errors_total", version=v3, kind="input")
    responses = [predict(svc) for _ in range(80)]
    by_status = Counter(r.status_code for r in responses)
    assert by_status[200] > 10 and by_status[400] > 10, by_status
    assert all(r.json()["version"] == 1 for r in responses if r.status_code == 200)
    assert all(r.json()["error"]["kind"] == "input" and "session_risk" in r.json()["error"]["message"]
               for r in responses if r.status_code == 400)
    assert metric(svc, "promotion_request_errors_total", version=v3, kind="input") - errors_before == by_status[400]
    assert metric(svc, "promotion_request_errors_total", version=1) == 0
    ok = predict(svc, features={**FEATURES, "session_risk": 0.2})
    assert ok.status_code == 200


def test_bad_requests_are_input_errors(svc, fr):
    set_routing(svc, fr, {1: 100})
    for features in ({"amount": 1.0}, {**FEATURES, "amount": "a lot"}, None):
        r = requests.post(svc.url + "/predict", json={} if features is None else {"features": features}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["kind"] == "input"


def test_shadow_is_mirrored_and_compared_without_changing_responses(svc, fr):
    set_routing(svc, fr, {1: 100}, shadow={"version": 2, "percent": 100, "digest": fr.digests[2]})
    before = metric(svc, "promotion_shadow_requests_total", version=2)
    responses = [predict(svc) for _ in range(50)]
    assert {r.json()["version"] for r in responses} == {1}
    # the shadow processes run at idle priority: on a busy machine they score later, not never
    deadline = time.monotonic() + 60
    while metric(svc, "promotion_shadow_requests_total", version=2) - before < 50 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric(svc, "promotion_shadow_requests_total", version=2) - before == 50
    # versions 1 and 2 are the same spec and data: they agree on every label
    assert metric(svc, "promotion_shadow_agreement_total", version=2, agree="true") >= 50
    assert metric(svc, "promotion_shadow_latency_seconds_count", version=2) >= 50
    view = routing_view(svc)
    assert view["shadow"]["version"] == 2 and all("2" in w["loaded"] for w in view["workers"])


def test_metrics_and_inference_log_per_version(svc, fr):
    set_routing(svc, fr, {1: 50, 2: 50})
    before = {v: metric(svc, "promotion_requests_total", version=v) for v in (1, 2)}
    versions = Counter(predict(svc).json()["version"] for _ in range(100))
    for v in (1, 2):
        assert metric(svc, "promotion_requests_total", version=v) - before[v] == versions[v]
    assert metric(svc, "promotion_request_latency_seconds_bucket", version=1, le="+Inf") > 0
    time.sleep(1.5)  # the log is flushed about once a second
    log = read_inference_log(svc.state_dir, version=2)
    assert len(log[~log["shadow"]]) >= versions[2]
    assert {"amount", "score", "version", "ts"} <= set(log.columns)
