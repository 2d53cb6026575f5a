"""One routing type, from the admin body to the GET view the rollout reads."""

from __future__ import annotations

import pytest

import promotion.contract.routing
import promotion.traffic.bentoml_router
from promotion.contract.routing import Routing, RoutingInputError, Shadow, parse_request, request_body
from services.router import routing as service_routing

D1, D2, D3 = ("sha256:" + c * 64 for c in "abc")


def test_the_service_the_traffic_backend_and_the_contract_share_one_type():
    # the BentoML backend reads the router's own type (the traffic contract names no routing file)
    assert promotion.traffic.bentoml_router.Routing is Routing is service_routing.RoutingState


def test_a_change_the_backend_builds_is_the_one_the_router_parses():
    body = request_body({1: 95, 2: 5}, {1: D1, 2: D2}, Shadow(3, 50.0, D3), based_on=6)
    state = parse_request(body, model="m")
    assert state.routes == {1: 95.0, 2: 5.0} and state.shadow == Shadow(3, 50.0, D3)
    assert state.versions() == {1: D1, 2: D2, 3: D3}
    assert service_routing.based_on(body) == 6
    again = Routing.from_json({**state.to_json(), "generation": 7})
    assert again.generation == 7 and again.shadow == state.shadow and again.routes == state.routes


def test_a_view_may_hold_no_routing_yet_and_says_whether_every_worker_applies_it():
    empty = Routing.from_json({"generation": 0, "model": "m", "routes": {}, "digests": {}, "shadow": None,
                               "updated_at": None, "workers": [], "refused": {}}, view=True)
    assert empty.routes == {} and not empty.applied
    view = Routing.from_json({"generation": 3, "model": "m", "routes": {"1": 100}, "digests": {"1": D1},
                              "shadow": {"version": 2, "percent": 10, "digest": D2}, "updated_at": 1.0,
                              "workers": [{"pid": 9, "generation": 3, "loaded": ["1", "2"], "seen_at": 2.0}],
                              "refused": {"4": "digest mismatch"}}, view=True)
    assert view.applied and view.workers[0].loaded == (1, 2) and view.refused == {4: "digest mismatch"}
    assert view.shadow.get("version") == 2 and view.shadow.get("nothing") is None  # read as its JSON form


@pytest.mark.parametrize("data, message", [
    ({"generation": 1, "model": "m", "routes": {}, "digests": {}}, "routes: must be a non-empty object"),
    ({"generation": 1, "model": "m", "routes": {"1": 90}, "digests": {"1": D1}}, "weights must sum to 100"),
    ({"generation": -1, "model": "m", "routes": {"1": 100}, "digests": {"1": D1}}, "generation: must be an integer"),
    ({"generation": 1, "model": "m", "routes": {"1": 100}, "digests": {"1": "md5:x"}}, "digests.1: must be sha256"),
])
def test_a_persisted_routing_is_checked_as_strictly_as_an_admin_body(data, message):
    with pytest.raises(RoutingInputError, match=message):
        Routing.from_json(data)
