import json

import pytest

from promotion.errors import MetricsError
from promotion.metrics.prometheus import PrometheusProvider


def vector(*samples):
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [1700000000.0, str(value)]} for labels, value in samples]}})


NOW = 1700000000.5  # the Prometheus server's clock


def scalar(t):
    return json.dumps({"status": "success", "data": {"resultType": "scalar", "result": [t, f"{t:.3f}"]}})


def server(answer, *, scraped=(NOW - 0.4,)):
    """Answers as Prometheus does: ``time()`` with its clock as a scalar, the scrape-time
    query with one ``timestamp()`` sample per target (``scraped``), the rest by ``answer``."""
    def respond(path, params):
        q = params.get("query", "")
        if q == "time()" and "time" not in params:
            return 200, "application/json", scalar(NOW)
        if q.startswith("min(timestamp("):
            return 200, "application/json", vector(({}, min(scraped))) if scraped else vector()
        return answer(path, params)
    return respond


def answer_contract(path, params):
    q = params.get("query", "")
    if q.startswith("sum by (version, job, instance) (promotion_requests_total"):
        return 200, "application/json", vector(({"version": "6"}, 1000), ({"version": "7"}, 50))
    if q.startswith("sum by (version, kind, job, instance) (promotion_request_errors_total"):
        return 200, "application/json", vector(({"version": "7", "kind": "predict"}, 3))
    if q.startswith("sum by (version, le, job, instance)"):
        return 200, "application/json", vector(({"version": "7", "le": "0.1"}, 45), ({"version": "7", "le": "+Inf"}, 50))
    return 200, "application/json", vector()


def test_snapshot_sends_the_templates_with_the_selector(loopback):
    loopback.respond = server(answer_contract)
    snap = PrometheusProvider(loopback.url, selector='job="fraud"').snapshot()
    queries = [params["query"] for path, params in loopback.requests]
    assert {path for path, _ in loopback.requests} == {"/api/v1/query"}
    assert queries[0] == "time()"
    assert 'sum by (version, job, instance) (promotion_requests_total{job="fraud"})' in queries
    assert 'sum by (version, le, job, instance) (promotion_request_latency_seconds_bucket{job="fraud"})' in queries
    assert 'min(timestamp(promotion_requests_total{job="fraud"}))' in queries
    times = {params["time"] for _, params in loopback.requests[1:]}
    assert times == {f"{NOW:.3f}"}  # one evaluation instant, on the server's clock
    assert snap.versions[7].requests == 50 and snap.versions[7].errors == 3
    assert snap.versions[7].slower_than(0.1) == 5
    assert snap.versions[6].requests == 1000


def test_templates_can_be_overridden(loopback):
    loopback.respond = server(lambda path, params: (200, "application/json", vector(({"version": "7"}, 9))
                                                    if params["query"].startswith("sum by (version) (http_total") else vector()))
    provider = PrometheusProvider(loopback.url, queries={"requests": "sum by (version) (http_total{$selector,app=\"x\"})"},
                                  selector='env="prod"')
    assert provider.snapshot().versions[7].requests == 9
    assert 'sum by (version) (http_total{env="prod",app="x"})' in [p["query"] for _, p in loopback.requests]
    with pytest.raises(MetricsError, match="unknown query name"):
        PrometheusProvider(loopback.url, queries={"request": "x"})


def test_prometheus_error_fails_closed_with_its_message(loopback):
    loopback.respond = lambda path, params: (400, "application/json", json.dumps(
        {"status": "error", "errorType": "bad_data", "error": "parse error at char 5"}))
    with pytest.raises(MetricsError) as exc:
        PrometheusProvider(loopback.url).snapshot()
    assert exc.value.diagnostics() == f"prometheus {loopback.url}: HTTP 400: parse error at char 5"


@pytest.mark.parametrize("body, message", [
    ("<html>oops</html>", "answer is not JSON"),
    (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}), "did not return an instant vector"),
    (json.dumps({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}), "malformed sample"),
    (vector(({"version": "seven"}, 1)), "version label 'seven'"),
])
def test_bad_payloads_fail_closed(loopback, body, message):
    loopback.respond = server(lambda path, params: (200, "application/json", body))
    with pytest.raises(MetricsError, match=message):
        PrometheusProvider(loopback.url).snapshot()


def test_snapshot_is_stamped_with_the_oldest_scrape_not_the_query_time(loopback):
    """Prometheus answers with its last scrape of each target; counts from two targets
    are complete only up to the older scrape, and a rollout must know that time."""
    loopback.respond = server(answer_contract, scraped=(NOW - 0.9, NOW - 0.2))
    provider = PrometheusProvider(loopback.url)
    assert provider.now() == NOW
    assert provider.snapshot().taken_at == NOW - 0.9
    loopback.respond = server(lambda path, params: (200, "application/json", vector()), scraped=())
    assert provider.snapshot().taken_at == NOW  # nothing counted yet: nothing to wait for


def test_a_clock_that_is_not_a_scalar_fails_closed(loopback):
    loopback.respond = lambda path, params: (200, "application/json", vector(({}, 1)))
    with pytest.raises(MetricsError, match=r"'time\(\)' did not return a scalar"):
        PrometheusProvider(loopback.url).snapshot()


def test_is_online_asks_a_trivial_query(loopback):
    loopback.respond = lambda path, params: (200, "application/json", vector(({}, 1)))
    assert PrometheusProvider(loopback.url).is_online() is True
    assert loopback.requests[-1] == ("/api/v1/query", {"query": "vector(1)"})
    loopback.respond = lambda path, params: (500, "text/plain", "down")
    assert PrometheusProvider(loopback.url).is_online() is False


def test_timeout_is_a_metrics_error(loopback):
    import time

    def slow(path, params):
        time.sleep(1.0)
        return 200, "application/json", vector()

    loopback.respond = slow
    with pytest.raises(MetricsError, match=r"no answer within 0.2 s"):
        PrometheusProvider(loopback.url, timeout_s=0.2).snapshot()
