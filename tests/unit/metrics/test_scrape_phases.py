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

import pytest

from promotion.analysis.srm import SampleRatioCheck
from promotion.errors import MetricsError
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
        # Prometheus keeps times in whole milliseconds: a query at a scrape's time sees that scrape
        return math.floor(round((t - T0 - phase) / self.interval_s, 6)) * self.interval_s + T0 + phase

    def scrapes(self, instance: str, at: float, span: float) -> list[float]:
        """Every scrape of ``instance`` stored at ``at``, over ``[at - span, at]``."""
        stamps, ts = [], self.scraped(instance, at)
        while ts >= at - span - 1e-9:
            stamps.append(ts)
            ts -= self.interval_s
        return sorted(stamps)

    def respond(self, path, params):
        q = params.get("query", "")
        if q == "time()":
            return ok({"resultType": "scalar", "result": [self.now, f"{self.now:.3f}"]})
        at = float(params["time"])
        if q.startswith('up{job="fraud"}[') and q.endswith("ms]"):
            span = float(q[len('up{job="fraud"}['):-3]) / 1000
            return ok({"resultType": "matrix", "result": [
                {"metric": {"__name__": "up", "job": "fraud", "instance": instance},
                 "values": [[ts, "1"] for ts in self.scrapes(instance, at, span)]}
                for instance in self.replicas]})
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


class LateScrape(PhasedPrometheus):
    """A scrape of ``instance`` that began at ``began`` but is stored only once the target
    has answered: the first ``stored_after`` queries do not see it yet. ``fails``: that
    scrape failed (``up`` 0, its series stale from then on)."""

    def __init__(self, replicas, instance: str, began: float, stored_after: int, fails: bool = False) -> None:
        super().__init__(replicas)
        self.instance, self.began, self.stored_after, self.fails = instance, began, stored_after, fails
        self.queries = 0

    def scraped(self, instance: str, t: float) -> float:
        ts = super().scraped(instance, t)
        if instance == self.instance and ts >= self.began and self.queries <= self.stored_after:
            ts -= self.interval_s  # not stored yet: the query sees the scrape before it
        return ts

    def respond(self, path, params):
        self.queries += 1
        code, kind, body = super().respond(path, params)
        if not self.fails or "time" not in params:
            return code, kind, body
        data = json.loads(body)["data"]
        if data["resultType"] == "matrix":
            return code, kind, body
        if self.scraped(self.instance, float(params["time"])) >= self.began:  # the failed scrape is stored
            q = params["query"]
            for item in data["result"]:
                if item["metric"].get("instance") == self.instance and q.startswith("up{"):
                    item["value"][1] = "0"
            if not (q.startswith("up{") or q.startswith("timestamp(up")):
                data["result"] = [i for i in data["result"] if i["metric"].get("instance") != self.instance]
        return ok(data)


REPLICAS = {"c:1": (2, 10.0, 0.0, 0.05), "a:1": (1, 45.0, 0.0, 0.95), "b:1": (1, 45.0, 0.0, 0.5)}


def _counts(snap) -> dict[str, float]:
    return {r: {v: c.requests for v, c in versions.items()} for r, versions in snap.replicas.items()}


def test_a_scrape_stored_while_the_snapshot_reads_gives_the_snapshot_of_after_it(loopback):
    """Each replica's counters and its scrape time come from one scrape, whichever query
    of the snapshot the scrape landed between."""
    now = T0 + 30.97  # a:1 began a scrape at 30.95 that Prometheus stores a moment later
    loopback.respond = PhasedPrometheus(REPLICAS).respond
    reference = PrometheusProvider(loopback.url, selector='job="fraud"')
    loopback.respond.__self__.now = now
    expected = reference.snapshot()
    for stored_after in (2, 4, 6, 9, 12):  # during the scrape-time read, the requests read, the histogram reads ...
        fake = LateScrape(REPLICAS, "a:1", T0 + 30.95, stored_after)
        fake.now = now
        loopback.respond = fake.respond
        snap = PrometheusProvider(loopback.url, selector='job="fraud"').snapshot()
        assert (snap.taken_at, _counts(snap)) == (expected.taken_at, _counts(expected)), stored_after


def test_a_failed_scrape_stored_while_the_snapshot_reads_is_a_replica_down_not_one_that_served_nothing(loopback):
    fake = LateScrape(REPLICAS, "c:1", T0 + 31.05, stored_after=5, fails=True)
    fake.now = T0 + 31.1
    loopback.respond = fake.respond
    with pytest.raises(MetricsError, match=r'1 of 3 scraped replica\(s\) down .*instance="c:1"'):
        PrometheusProvider(loopback.url, selector='job="fraud"').snapshot()


def test_consecutive_snapshots_never_count_a_replica_backwards(loopback):
    """A replica whose counters look lower than in the previous snapshot is taken for a
    restart, and the window then counts everything it ever served: its interpolated
    counters must never fall behind what an earlier snapshot gave it."""
    fake = PhasedPrometheus(dict(REPLICAS))
    loopback.respond = fake.respond
    provider = PrometheusProvider(loopback.url, selector='job="fraud"')
    previous = provider.snapshot()
    for _ in range(60):
        fake.now += 0.17
        snap = provider.snapshot()
        if snap.taken_at < previous.taken_at:
            continue
        for replica, versions in snap.replicas.items():
            for v, c in versions.items():
                assert c.requests >= previous.replicas[replica][v].requests, (replica, v)
        assert not window(previous, snap).resets
        previous = snap


class CanaryStarts(PhasedPrometheus):
    """The canary replica's first request comes at ``start``: before that it exposes no
    series at all (a labelled counter appears on first use)."""

    def __init__(self, replicas, start: float) -> None:
        super().__init__(replicas)
        self.start = start

    def respond(self, path, params):
        code, kind, body = super().respond(path, params)
        data = json.loads(body)["data"]
        if data.get("resultType") != "vector" or params.get("query", "").startswith(("up{", "timestamp(up", "min(")):
            return code, kind, body
        kept = []
        for item in data["result"]:
            if item["metric"].get("instance") == "c:1":
                n = math.floor(10.0 * (item["value"][0] - self.start))
                if n <= 0:
                    continue
                item["value"][1] = str(n)
            kept.append(item)
        data["result"] = kept
        return ok(data)


def test_a_canary_that_begins_serving_between_two_snapshots_is_counted_from_zero(loopback):
    fake = CanaryStarts(dict(REPLICAS), start=T0 + 31.0)
    fake.now = T0 + 30.3
    loopback.respond = fake.respond
    provider = PrometheusProvider(loopback.url, selector='job="fraud"')
    first = previous = provider.snapshot()
    for _ in range(30):
        fake.now += 0.13
        snap = provider.snapshot()
        if snap.taken_at < previous.taken_at:
            continue
        assert not window(previous, snap).resets
        previous = snap
    w = window(first, previous)
    # what the canary served from its start to the last snapshot's instant, give or take a request
    assert abs(w.get(2).requests - 10.0 * (previous.taken_at - fake.start)) <= 1.5, (w.get(2).requests, previous.taken_at)


class Irregular(PhasedPrometheus):
    """The canary replica ``c:1`` idles at 100 requests until ``burst`` and then serves
    50 per second; the scrapes of each replica in ``slow`` answer late (each is stored
    only ``slow[instance]`` seconds after it began, so until then Prometheus holds the
    one before); replica ``c:1``'s scrape at ``failed`` fails (``up`` 0, its series stale
    until the next scrape)."""

    def __init__(self, replicas, *, burst: float, slow: dict[str, float] | None = None,
                 failed: float | None = None) -> None:
        super().__init__(replicas)
        self.burst, self.slow, self.failed = burst, slow or {}, failed

    def scraped(self, instance: str, t: float) -> float:
        ts = super().scraped(instance, t)
        if instance in self.slow and self.now < ts + self.slow[instance]:
            ts -= self.interval_s
        return ts

    def canary(self, ts: float) -> int:
        return 100 + max(0, math.floor(50.0 * (ts - self.burst)))

    def respond(self, path, params):
        code, kind, body = super().respond(path, params)
        data = json.loads(body)["data"]
        q = params.get("query", "")
        if data["resultType"] == "scalar":
            return code, kind, body
        for item in data["result"]:
            if item["metric"].get("instance") != "c:1":
                continue
            if data["resultType"] == "matrix":
                item["values"] = [[ts, "0" if self.failed is not None and abs(ts - self.failed) < 1e-6 else v]
                                  for ts, v in item["values"]]
            elif q.startswith("sum by (version, job, instance) (promotion_requests_total"):
                item["value"][1] = str(self.canary(item["value"][0]))
        stale = self.failed is not None and "time" in params and abs(self.scraped("c:1", float(params["time"])) - self.failed) < 1e-6
        if stale and data["resultType"] == "vector":
            if q.startswith("up{"):
                for item in data["result"]:
                    if item["metric"].get("instance") == "c:1":
                        item["value"][1] = "0"
            elif not q.startswith("timestamp(up"):
                data["result"] = [i for i in data["result"] if i["metric"].get("instance") != "c:1"]
        return ok(data)


def _walk(provider, fake, until: float, step: float = 0.05):
    """Snapshots every ``step`` seconds to ``until``: the windows between them, and how
    many snapshots could not be measured."""
    previous, windows, unmeasured = None, [], []
    while fake.now < until:
        fake.now += step
        try:
            snap = provider.snapshot()
        except MetricsError as exc:
            unmeasured.append(exc.message)
            continue
        if previous is not None and snap.taken_at >= previous.taken_at:
            for replica, versions in snap.replicas.items():
                for v, c in versions.items():
                    assert c.requests >= previous.replicas[replica][v].requests - 1e-9, (fake.now, replica, v)
            w = window(previous, snap)
            assert not w.resets, (fake.now, w)
            windows.append(w)
        if previous is None or snap.taken_at >= previous.taken_at:
            previous = snap
    return windows, unmeasured


def test_a_scrape_answering_late_never_makes_a_bursting_canary_count_backwards(loopback):
    """The champions' scrapes answer 0.8 s late, so the snapshot's instant can be more
    than one interval behind c:1's last scrape: its estimate must come from the two
    scrapes around the instant, or a later snapshot counts it lower and the window takes
    a restart for all the requests it ever served."""
    fake = Irregular({"c:1": (2, 10.0, 0.0, 0.05), "a:1": (1, 45.0, 0.0, 0.95), "b:1": (1, 45.0, 0.0, 0.1)},
                     burst=T0 + 31.1, slow={"a:1": 0.8, "b:1": 0.8})
    fake.now = T0 + 30.0
    loopback.respond = fake.respond
    windows, unmeasured = _walk(PrometheusProvider(loopback.url, selector='job="fraud"'), fake, T0 + 36.0)
    assert not unmeasured and len(windows) >= 20
    canary = sum(w.get(2).requests for w in windows)
    # what c:1 served between the first and the last snapshot's instants, near enough
    assert 0 < canary <= 50.0 * (windows[-1].end - fake.burst) + 50, canary


def test_a_failed_scrape_leaves_a_snapshot_unmeasured_never_a_replica_counted_from_zero(loopback):
    fake = Irregular({"c:1": (2, 10.0, 0.0, 0.05), "a:1": (1, 45.0, 0.0, 0.95), "b:1": (1, 45.0, 0.0, 0.5)},
                     burst=T0 + 20.0, failed=T0 + 32.05)
    fake.now = T0 + 31.0
    loopback.respond = fake.respond
    windows, unmeasured = _walk(PrometheusProvider(loopback.url, selector='job="fraud"'), fake, T0 + 36.0)
    # while c:1's failed scrape is its last one it is down; while it is the one before the instant, unknown
    assert any("failed" in m for m in unmeasured) and all("c:1" in m for m in unmeasured), unmeasured
    assert len(windows) >= 20
    total = sum(w.get(2).requests for w in windows)
    assert abs(total - 50.0 * (windows[-1].end - windows[0].start)) <= 2, total
