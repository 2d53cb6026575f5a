import json
import os

import pytest

from services.router import heartbeats, routing
from services.router.routing import RouteTable, RoutingInputError

D1, D2, D3 = "sha256:" + "1" * 64, "sha256:" + "2" * 64, "sha256:" + "3" * 64


def body(routes, digests=None, shadow=None):
    return {"routes": routes, "digests": digests or {"1": D1, "2": D2, "3": D3}, "shadow": shadow}


def test_parse_accepts_a_valid_split_and_keeps_only_routed_digests():
    state = routing.parse_request(body({"1": 95, "2": 5}), model="m")
    assert state.routes == {1: 95.0, 2: 5.0}
    assert state.digests == {1: D1, 2: D2}
    assert state.shadow is None


@pytest.mark.parametrize("bad, message", [
    (body({"1": 95, "2": 6}), "sum to 100"),
    (body({"1": 101, "2": -1}), "in [0, 100]"),
    (body({"1": "95", "2": 5}), "must be a number"),
    (body({"x": 100}), "not a model version"),
    (body({"0": 100}), "not a model version"),
    (body({}), "non-empty"),
    (body({"1": 50, "4": 50}), "missing for version(s) 4"),
    (body({"1": 100}, digests={"1": "md5:abc"}), "sha256"),
    (body({"1": 100}, shadow={"version": 3, "percent": 150, "digest": D3}), "in [0, 100]"),
    (body({"1": 100}, shadow={"version": 3, "percent": 10}), "shadow.digest"),
    ({**body({"1": 100}), "weights": {}}, "unknown field"),
    ([1, 2], "JSON object"),
])
def test_parse_rejects_malformed_bodies(bad, message):
    with pytest.raises(RoutingInputError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        routing.parse_request(bad, model="m")


def test_shadow_digest_defaults_to_the_routed_one():
    state = routing.parse_request(body({"1": 100}, shadow={"version": 3, "percent": 20, "digest": D3}), "m")
    assert state.shadow.version == 3 and state.shadow.percent == 20.0
    assert state.versions() == {1: D1, 3: D3}


def test_traffic_split_follows_weights():
    table = RouteTable({1: 75.0, 2: 25.0})
    picks = [table.pick(routing.bucket(f"k{i}")) for i in range(20000)]
    assert abs(picks.count(2) / len(picks) - 0.25) < 0.015


def test_raising_the_canary_weight_only_moves_keys_onto_it():
    keys = [f"customer-{i}" for i in range(5000)]
    before = {k: RouteTable({1: 95.0, 2: 5.0}).pick(routing.bucket(k)) for k in keys}
    after = {k: RouteTable({1: 75.0, 2: 25.0}).pick(routing.bucket(k)) for k in keys}
    assert all(after[k] == 2 for k in keys if before[k] == 2)
    assert sum(1 for k in keys if before[k] == 1 and after[k] == 2) > 500


def test_zero_weight_versions_get_nothing():
    table = RouteTable({1: 0.0, 2: 100.0})
    assert {table.pick(b / 10) for b in range(1000)} == {2}


def test_commit_increments_generation_and_survives_reload(tmp_path):
    s1 = routing.commit(tmp_path, routing.parse_request(body({"1": 100}), "m"))
    s2 = routing.commit(tmp_path, routing.parse_request(body({"1": 90, "2": 10}), "m"))
    assert (s1.generation, s2.generation) == (1, 2)
    assert routing.load(tmp_path) == s2
    assert routing.commit(tmp_path, routing.parse_request(body({"1": 100}), "m"), if_absent=True) is None
    assert routing.load(tmp_path).generation == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".routing.json")]  # no temp files left


def test_signature_changes_when_the_file_is_replaced(tmp_path):
    routing.commit(tmp_path, routing.parse_request(body({"1": 100}), "m"))
    before = routing.signature(routing.routing_path(tmp_path))
    routing.commit(tmp_path, routing.parse_request(body({"1": 100}), "m"))
    assert routing.signature(routing.routing_path(tmp_path)) != before
    assert routing.signature(tmp_path / "absent.json") is None


def test_refusals_are_recorded_and_cleared(tmp_path):
    routing.record_refused(tmp_path, {3: "digest mismatch: x"})
    assert routing.load_refused(tmp_path) == {"3": "digest mismatch: x"}
    routing.record_refused(tmp_path, {}, accepted={3: D3})
    assert routing.load_refused(tmp_path) == {}


def test_heartbeats_of_dead_processes_are_dropped(tmp_path):
    heartbeats.write(tmp_path, os.getpid(), 4, [1, 2], True, {})
    dead = 2 ** 22 + 12345  # above the default pid_max: never a live process
    (heartbeats.directory(tmp_path) / f"{dead}.json").write_text(json.dumps(
        {"pid": dead, "generation": 1, "loaded": [], "seen_at": 0}))
    live = heartbeats.live(tmp_path)
    assert [b["pid"] for b in live] == [os.getpid()]
    assert live[0]["generation"] == 4 and live[0]["loaded"] == ["1", "2"]
    assert not (heartbeats.directory(tmp_path) / f"{dead}.json").exists()
