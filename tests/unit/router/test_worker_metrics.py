"""The worker's request metrics: counters written per request, the latency histogram
published in batches with each request observed exactly once, and every latency observed
under one routing published before the next routing applies.

In-process workers over two small in-memory models (no registry is reached: the versions
are already loaded), reading the metrics back from a private Prometheus registry.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

import numpy as np
import pytest
import xgboost
from prometheus_client import CollectorRegistry

from services.router import routing
from services.router import worker as worker_module
from services.router.metrics import Metrics
from services.router import models
from services.router.models import LoadedModel
from services.router.worker import Worker

FEATURES = ("amount", "hour", "risk")
ROW = {"features": {"amount": 1.0, "hour": 3.0, "risk": 0.2}}


def _model(version: int) -> LoadedModel:
    rng = np.random.default_rng(version)
    x = rng.normal(size=(200, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(x, label=y, feature_names=list(FEATURES)), num_boost_round=4)
    return models.from_native(version, "sha256:" + f"{version:02d}" * 32, booster, FEATURES, "xgboost",
                              threshold=0.5)


def _unreachable_registry():
    raise AssertionError("the test's versions are loaded: no registry is needed")


def _sample(registry: CollectorRegistry, name: str, **labels) -> float:
    total = 0.0
    for family in registry.collect():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


@pytest.fixture
def served(tmp_path):
    """A worker with versions 1 and 2 loaded and routing 50/50 applied (no watcher thread)."""
    registry = CollectorRegistry()
    w = Worker(tmp_path, "fraud-detector", _unreachable_registry, "token", Metrics(registry=registry), sample=0.0)
    models = {1: _model(1), 2: _model(2)}
    w.loaded = dict(models)
    commit(tmp_path, {1: 50, 2: 50}, models)
    w.refresh(allow_load=False)
    assert w.applied is not None and w.applied.generation == 1
    yield w, registry
    w.inference_log.close()


def commit(state_dir, routes: dict[int, float], models: dict[int, LoadedModel]) -> None:
    body = {"routes": {str(v): p for v, p in routes.items()},
            "digests": {str(v): models[v].digest for v in routes}}
    routing.commit(state_dir, routing.parse_request(body, model="fraud-detector"))


def test_every_request_is_counted_and_observed_once_while_publishers_race(served):
    w, registry = served
    served_by: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(seed: int) -> None:
        rnd = random.Random(seed)
        for i in range(600):
            bad = i % 50 == 0
            status, body, _ = w.handle_predict({"features": {}} if bad else ROW, f"user-{rnd.randrange(10**6)}")
            with lock:
                served_by[(body["version"] if status == 200 else "error", status)] += 1

    def publisher() -> None:  # what the watcher thread does, as often as it can
        while not stop.is_set():
            w.publish_metrics()

    pub = threading.Thread(target=publisher)
    pub.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    stop.set()
    pub.join()
    w.publish_metrics()

    ok = {v: served_by[(v, 200)] for v in (1, 2)}
    assert sum(ok.values()) + served_by[("error", 400)] == 1800
    assert served_by[("error", 400)] == 36
    total = sum(_sample(registry, "promotion_requests_total", version=str(v)) for v in (1, 2))
    assert total == 1800
    assert sum(_sample(registry, "promotion_request_errors_total", version=str(v), kind="input")
               for v in (1, 2)) == 36
    assert sum(_sample(registry, "promotion_request_latency_seconds_count", version=str(v)) for v in (1, 2)) == 1800
    for v in (1, 2):  # per version: the successes it served plus its share of the failures
        assert _sample(registry, "promotion_requests_total", version=str(v)) - ok[v] == \
            _sample(registry, "promotion_request_errors_total", version=str(v), kind="input")


def _observed(registry, v) -> float:
    return _sample(registry, "promotion_request_latency_seconds_count", version=str(v))


def test_requests_and_errors_are_counted_as_they_finish(served):
    w, registry = served
    w._next_check = time.monotonic() + 3600.0  # no routing check: nothing is published
    versions = Counter(w.handle_predict(ROW, f"user-{i}")[1]["version"] for i in range(40))
    status, _, _ = w.handle_predict({"features": {}}, "user-x")
    assert status == 400
    assert sum(_sample(registry, "promotion_requests_total", version=str(v)) for v in (1, 2)) == 41
    assert sum(_sample(registry, "promotion_request_errors_total", version=str(v)) for v in (1, 2)) == 1
    for v in (1, 2):
        assert _sample(registry, "promotion_requests_total", version=str(v)) >= versions[v]
    assert _observed(registry, 1) + _observed(registry, 2) == 0  # latencies wait for a publish


def test_a_request_after_a_quiet_spell_is_published_at_once(served):
    w, registry = served
    time.sleep(worker_module.CHECK_S * 2)
    status, body, _ = w.handle_predict(ROW, "user-1")
    assert status == 200
    assert _observed(registry, body["version"]) == 1


def test_latencies_under_the_old_weights_are_in_before_new_weights_apply(served, tmp_path, monkeypatch):
    w, registry = served
    monkeypatch.setattr(worker_module, "CHECK_S", 3600.0)  # requests never publish on their own
    w._next_check = time.monotonic() + 3600.0
    versions = Counter(w.handle_predict(ROW, f"user-{i}")[1]["version"] for i in range(200))
    assert _observed(registry, 1) + _observed(registry, 2) == 0

    commit(tmp_path, {1: 100}, w.loaded)
    w.refresh(allow_load=False)  # what a request's check or the watcher does when the file changed

    assert w.applied.generation == 2
    for v in (1, 2):
        assert _observed(registry, v) == versions[v]
    after = Counter(w.handle_predict(ROW, f"user-{i}")[1]["version"] for i in range(50))
    assert after == {1: 50}
    w.publish_metrics()
    assert _observed(registry, 1) == versions[1] + 50
    assert _observed(registry, 2) == versions[2]


def test_stopping_publishes_what_is_left(served):
    w, registry = served
    w._next_check = time.monotonic() + 3600.0
    for i in range(30):
        w.handle_predict(ROW, f"user-{i}")
    assert _observed(registry, 1) + _observed(registry, 2) == 0
    w.stop()
    assert _observed(registry, 1) + _observed(registry, 2) == 30


def test_a_batch_of_latencies_lands_in_the_same_buckets_as_one_by_one():
    from services.router.metrics import LATENCY_BUCKETS

    values = [0.0, 0.0004, 0.0005, 0.00050001, 0.002, 0.0031, 0.25, 1.0, 4.99, 5.0, 7.5, 120.0]
    rnd = random.Random(3)
    values += [rnd.expovariate(200.0) for _ in range(500)]
    batched, single = CollectorRegistry(), CollectorRegistry()
    mb, ms = Metrics(registry=batched), Metrics(registry=single)
    mb.observe_many(mb.child(mb.latency, "1"), values)
    for x in values:
        ms.child(ms.latency, "1").observe(x)
    for le in [*LATENCY_BUCKETS, float("inf")]:
        bound = "+Inf" if le == float("inf") else str(le)
        assert _sample(batched, "promotion_request_latency_seconds_bucket", version="1", le=bound) == \
            _sample(single, "promotion_request_latency_seconds_bucket", version="1", le=bound)
    assert _sample(batched, "promotion_request_latency_seconds_count", version="1") == len(values)
    assert _sample(batched, "promotion_request_latency_seconds_sum", version="1") == \
        pytest.approx(_sample(single, "promotion_request_latency_seconds_sum", version="1"))


def test_a_histogram_of_another_layout_is_observed_value_by_value():
    seen = []

    class Other:
        def observe(self, x):
            seen.append(x)

    Metrics.observe_many(Other(), [0.1, 0.2])
    assert seen == [0.1, 0.2]
