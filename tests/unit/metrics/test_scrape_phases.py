"""Replicas scraped at different phases: every snapshot describes one instant.

Prometheus scrapes each target at its own offset within the scrape interval, so at one
evaluation time the champion's replica may have been scraped 0.9 s after the canary's.
A window between two snapshots must still count every replica over the same span, or a
short window shows the canary with no requests at all and the rollout rolls back a
healthy version for a sample-ratio mismatch.

The fake is a small Prometheus: counters grow at a constant rate per replica, each
target is scraped every second at its own phase, and an instant query at time ``t``
returns each series' last scrape at or before ``t`` (with ``timestamp()`` giving when).
"""

from __future__ import annotations

import json
import math

from promotion.analysis.srm import SampleRatioCheck
from promotion.metrics.base import window
from promotion.metrics.prometheus import PrometheusProvider

T0 = 1700000000.0


def ok(data) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps({"status": "success", "data": data})


class PhasedPrometheus:
    """``replicas[instance] = (version, requests per second, error share, scrape phase s)``."""

    def __init__(self, replicas: dict[str, tuple[int, float, float, float]], interval_s: float = 1.0) -> None:
        self.replicas, self.interval_s, self.now = replicas, interval_s, T0 + 30.0

    def scraped(self, instance: str, t: float) -> float:
        phase = self.replicas[instance][3]
        return math.floor((t - T0 - phase) / self.interval_s) * self.interval_s + T0 + phase

    def respond(self, path, params):
        q = params.get("query", "")
        if q == "time()":
            return ok({"resultType": "scalar", "result": [self.now, f"{self.now:.3f}"]})
        at = float(params["time"])
        rows = []
        for instance, (version, rate, error_share, _) in self.replicas.items():
            ts = self.scraped(instance, at)
            target = {"job": "fraud", "instance": instance}
            base = {**target, "version": str(version)}
            requests = math.floor(rate * (ts - T0))
            if q == 'up{job="fraud"}':
                rows.append(({"__name__": "up", **target}, 1, ts))
            elif q == 'timestamp(up{job="fraud"})':
                rows.append((target, ts, ts))
            elif q.startswith("min(timestamp("):
                rows.append(({}, ts, ts))
            elif q.startswith("sum by (version, job, instance) (promotion_requests_total"):
                rows.append((base, requests, ts))
            elif q.startswith("sum by (version, kind, job, instance) (promotion_request_errors_total"):
                rows.append(({**base, "kind": "predict"}, math.floor(requests * error_share), ts))
        if q.startswith("min(timestamp("):
            rows = [min(rows, key=lambda r: r[1])] if rows else []
        return ok({"resultType": "vector", "result": [
            {"metric": labels, "value": [ts, str(value)]} for labels, value, ts in rows]})


def fleet(loopback, phases=(0.05, 0.95, 0.5)) -> PhasedPrometheus:
    # 100 requests per second, 10 % to the canary (v2), two champion replicas (v1)
    fake = PhasedPrometheus({"c:1": (2, 10.0, 0.0, phases[0]), "a:1": (1, 45.0, 0.0, phases[1]),
                             "b:1": (1, 45.0, 0.0, phases[2])})
    loopback.respond = fake.respond
    return fake


def test_short_windows_count_every_replica_over_the_same_span(loopback):
    fake = fleet(loopback)
    provider = PrometheusProvider(loopback.url, selector='job="fraud"')
    previous = provider.snapshot()
    shares, srm = [], SampleRatioCheck(0.001)
    for _ in range(40):
        fake.now += 0.3  # the controller polls more often than Prometheus scrapes
        snap = provider.snapshot()
        if snap.taken_at <= previous.taken_at:
            continue
        w = window(previous, snap)
        canary, champion = w.get(2).requests, w.get(1).requests
        # every replica advanced by the same span: 10 canary requests per 100
        assert math.isclose(canary + champion, 100 * w.seconds, rel_tol=0.02, abs_tol=2)
        shares.append(canary / (canary + champion))
        assert srm.update(canary, champion, 0.10) is None
        previous = snap
    assert len(shares) >= 8
    assert all(abs(s - 0.10) < 0.03 for s in shares), shares


def test_a_window_is_never_a_replica_that_was_not_scraped_yet(loopback):
    """The failure seen without it: canary 0 of 58 requests at 50 % (e = 6.6e4)."""
    fake = PhasedPrometheus({"c:1": (2, 50.0, 0.0, 0.9), "a:1": (1, 50.0, 0.0, 0.1)})
    loopback.respond = fake.respond
    provider = PrometheusProvider(loopback.url, selector='job="fraud"')
    fake.now = T0 + 30.95  # canary last scraped at 30.9, champion at 30.1
    a = provider.snapshot()
    fake.now = T0 + 31.2  # champion scraped again at 31.1, the canary not yet since 30.9
    b = provider.snapshot()
    w = window(a, b)
    assert w.seconds > 0
    canary, champion = w.get(2).requests, w.get(1).requests
    assert canary > 0 and math.isclose(canary, champion, rel_tol=0.05)


def test_counters_that_went_down_keep_their_last_scrape(loopback):
    fake = fleet(loopback)
    provider = PrometheusProvider(loopback.url, selector='job="fraud"')
    respond = fake.respond

    def restarted(path, params):  # replica b:1 began again after its scrape before the instant
        code, kind, body = respond(path, params)
        data = json.loads(body)["data"]
        if params.get("query", "").startswith("sum by (version, job, instance)") and float(params["time"]) >= fake.now - 1e-3:
            for item in data["result"]:
                if item["metric"].get("instance") == "b:1":
                    item["value"][1] = "3"
        return ok(data)

    loopback.respond = restarted
    snap = provider.snapshot()
    assert snap.replicas['{job="fraud", instance="b:1"}'][1].requests == 3
