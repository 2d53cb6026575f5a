"""The providers' read side of the model-quality series: labelled outcomes per segment,
regression errors, label delay and the score histogram, per version, from the service's
own exposition (written by its Metrics class) and from Prometheus' API; windows over them;
states saved before these series existed still load."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from test_prometheus_api import NOW, server, vector

from promotion.metrics.base import Snapshot, VersionCounters, window
from promotion.metrics.prometheus import PrometheusProvider
from promotion.metrics.scrape import ScrapeProvider
from services.router.metrics import Metrics


def exposition(labels: dict[tuple[str, str, str], int], scores: dict[str, list[float]],
               regression: dict[tuple[str, str], list[float]] | None = None) -> str:
    registry = CollectorRegistry()
    m = Metrics(registry=registry)
    for (version, segment, outcome), n in labels.items():
        m.child(m.labels, version, segment, outcome).inc(n)
        m.observe_many(m.child(m.label_delay, version), [30.0] * n)
    for version, xs in scores.items():
        m.observe_many(m.child(m.score, version), xs)
    for (version, segment), errors in (regression or {}).items():
        for e in errors:
            m.child(m.label_values, version, segment).inc()
            m.child(m.label_abs_error, version, segment).inc(abs(e))
            m.child(m.label_squared_error, version, segment).inc(e * e)
    m.child(m.requests, "7").inc(10)
    return generate_latest(registry).decode()


def test_scrape_reads_labelled_counts_per_segment_and_the_score_histogram(loopback):
    text = exposition({("7", "online", "tp"): 9, ("7", "online", "fn"): 1, ("7", "pos", "tp"): 6,
                       ("7", "pos", "fn"): 4, ("7", "pos", "fp"): 2, ("7", "pos", "tn"): 78},
                      {"7": [0.02, 0.04, 0.5, 0.97]}, {("8", ""): [1.0, -3.0]})
    loopback.respond = lambda path, params: (200, "text/plain", text)
    snap = ScrapeProvider(loopback.url + "/metrics").snapshot()
    q = snap.versions[7].quality
    assert q.labelled == 100 and q.tpr() == pytest.approx(15 / 20) and q.tpr("online") == pytest.approx(0.9)
    assert q.fpr() == pytest.approx(2 / 80) and q.precision("pos") == pytest.approx(6 / 8)
    assert q.segments() == ("online", "pos")
    assert q.delay_counts[-1] == 100 and q.delay_sum == pytest.approx(3000.0)
    assert q.scored == 4 and q.score_bins()[0] == 2 and q.score_bins()[-2] == 1  # (0.95, 1.0]
    r = snap.versions[8].quality
    assert r.mae() == pytest.approx(2.0) and r.rmse() == pytest.approx(5 ** 0.5)
    assert snap.versions[7].requests == 10


def test_a_window_counts_the_labels_that_arrived_in_it():
    from prometheus_client.parser import text_string_to_metric_families

    from promotion.metrics.base import counters_from_samples

    def snap(t, labels, scores):
        text = exposition(labels, scores)
        samples = [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
        return Snapshot(t, counters_from_samples(samples, "test"))

    a = snap(1.0, {("7", "", "tp"): 5, ("7", "", "fn"): 5}, {"7": [0.1] * 10})
    b = snap(2.0, {("7", "", "tp"): 12, ("7", "", "fn"): 6, ("7", "", "tn"): 1}, {"7": [0.1] * 10 + [0.9] * 5})
    w = window(a, b).get(7).quality
    assert w.confusion() == {"tp": 7, "fp": 0, "fn": 1, "tn": 1} and w.scored == 5
    assert w.score_bins()[17] == 5  # (0.85, 0.9]
    restarted = snap(3.0, {("7", "", "tp"): 1}, {"7": [0.5]})
    win = window(b, restarted)
    assert win.resets == (7,) and win.get(7).quality.confusion()["tp"] == 1


def test_prometheus_reads_the_quality_queries_per_replica(loopback):
    def answer(path, params):
        q = params.get("query", "")
        if q.startswith("up{"):
            return 200, "application/json", vector(({"job": "r", "instance": "a"}, 1), ({"job": "r", "instance": "b"}, 1))
        if "promotion_labels_total" in q:
            return 200, "application/json", vector(
                ({"version": "7", "segment": "pos", "outcome": "tp", "job": "r", "instance": "a"}, 3),
                ({"version": "7", "segment": "pos", "outcome": "tp", "job": "r", "instance": "b"}, 4),
                ({"version": "7", "segment": "", "outcome": "fn", "job": "r", "instance": "b"}, 1))
        if "promotion_score_bucket" in q:
            return 200, "application/json", vector(
                ({"version": "7", "le": "0.5", "job": "r", "instance": "a"}, 2),
                ({"version": "7", "le": "1.0", "job": "r", "instance": "a"}, 5),
                ({"version": "7", "le": "+Inf", "job": "r", "instance": "a"}, 5))
        return 200, "application/json", vector()

    loopback.respond = server(answer)
    snap = PrometheusProvider(loopback.url, selector='job="r"').snapshot()
    queries = [p["query"] for _, p in loopback.requests]
    assert 'sum by (version, segment, outcome, job, instance) (promotion_labels_total{job="r"})' in queries
    q = snap.versions[7].quality
    assert q.confusion("pos")["tp"] == 7 and q.confusion()["fn"] == 1 and q.scored == 5
    assert snap.replicas['{job="r", instance="b"}'][7].quality.labelled == 5
    assert snap.taken_at <= NOW


def test_states_saved_before_quality_existed_still_load_and_round_trip():
    old = {"taken_at": 5.0, "versions": {"7": {"requests": 3.0, "errors": 0.0, "errors_by_kind": {},
                                                "latency_bounds": [0.1, "+Inf"], "latency_counts": [3, 3],
                                                "latency_sum": 0.1, "shadow_requests": 0.0, "shadow_agree": 0.0,
                                                "shadow_disagree": 0.0}}}
    snap = Snapshot.from_dict(old)
    assert snap.versions[7].quality.labelled == 0 and snap.to_dict() == old
    from promotion.metrics.quality import Quality

    full = VersionCounters(requests=1.0, quality=Quality({"pos": {"tp": 2.0}}, {}, (1.0, float("inf")), (1.0, 2.0),
                                                         3.0, (0.5, float("inf")), (1.0, 1.0), 0.2))
    again = VersionCounters.from_dict(json.loads(json.dumps(full.to_dict())))
    assert again == full
