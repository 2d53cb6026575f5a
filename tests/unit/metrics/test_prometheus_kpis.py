"""The Prometheus source evaluates the policy's KPI templates per version; a query that
fails or returns nothing is a reason, never a number."""

from __future__ import annotations

import json

from promotion.analysis.kpi_signal import KpiSettings
from promotion.metrics.prometheus import PrometheusProvider

NOW = 1700000000.5
KPI = KpiSettings("conversion", 'sum(conv_total{version="{version}"})',
                  'sum(promotion_requests_total{version="{version}", {selector}})')


def vector(*values):
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "value": [NOW, str(v)]} for v in values]}})


def server(answers):
    def respond(path, params):
        q = params.get("query", "")
        if q == "time()":
            return 200, "application/json", json.dumps({"status": "success", "data": {
                "resultType": "scalar", "result": [NOW, f"{NOW:.3f}"]}})
        if q in answers:
            status, body = answers[q]
            return status, "application/json", body
        return 200, "application/json", vector()
    return respond


def test_templates_get_the_version_and_selector_and_are_read_at_one_instant(loopback):
    loopback.respond = server({
        'sum(conv_total{version="7"})': (200, vector(30)),
        'sum(promotion_requests_total{version="7", job="fraud"})': (200, vector(600, 400)),  # summed
        'sum(conv_total{version="6"})': (200, vector(90)),
        'sum(promotion_requests_total{version="6", job="fraud"})': (200, vector(3000)),
    })
    got = PrometheusProvider(loopback.url, selector='job="fraud"').kpi_counts([KPI], {"canary": 7, "champion": 6})
    assert got == {"conversion": {"canary": (30.0, 1000.0), "champion": (90.0, 3000.0)}}
    assert {p["time"] for _, p in loopback.requests if p.get("query") != "time()"} == {f"{NOW:.3f}"}


def test_no_series_or_a_failed_query_is_a_reason(loopback):
    loopback.respond = server({'sum(conv_total{version="7"})': (200, vector(3))})
    got = PrometheusProvider(loopback.url, selector='job="fraud"').kpi_counts([KPI], {"canary": 7, "champion": 6})
    assert got["conversion"].startswith("denominator query for v7 returned no series")
    assert "or vector(0)" in got["conversion"]
    loopback.respond = server({'sum(conv_total{version="7"})': (400, json.dumps(
        {"status": "error", "error": "parse error at char 5"}))})
    got = PrometheusProvider(loopback.url).kpi_counts([KPI], {"canary": 7, "champion": 6})
    assert got["conversion"].startswith("numerator query for v7 failed:") and "parse error" in got["conversion"]
