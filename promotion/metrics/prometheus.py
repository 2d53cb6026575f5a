"""The Prometheus HTTP API as a metrics source.

Each snapshot runs instant queries (``GET /api/v1/query``) at one evaluation time (the
server's own ``time()``, so the controller's clock never has to agree with Prometheus's),
so all series of a snapshot describe the same instant. Prometheus answers with what it
last scraped, up to one scrape interval old: the snapshot's ``taken_at`` is therefore the
oldest scrape time of the ``scraped_at`` query's series, not the query time, so that the
rollout controller can wait for counts scraped after a weight change before it measures
the new weight (:meth:`PrometheusProvider.now`). The queries are PromQL templates
in which ``$selector`` stands for the environment's extra label matchers
(``metrics.selector`` in ``environments/<env>.yaml``, e.g. ``job="fraud"``); the
defaults read the service's metric contract and sum over every label but ``version``::

    from promotion.metrics.prometheus import PrometheusProvider
    provider = PrometheusProvider("http://prometheus:9090", selector='job="fraud"')
    snap = provider.snapshot()

    # a different naming scheme: override any template
    PrometheusProvider(url, queries={"requests": 'sum by (version) (http_requests_total{$selector})'})

Templates must keep the result labels: ``version`` on every query, plus ``le`` on
``latency_buckets``, ``kind`` on ``errors``, and ``agree`` on ``shadow_agreement``;
``scraped_at`` must return sample timestamps (``timestamp()``) of the counted series.
Any HTTP error, timeout, or payload that is not a Prometheus vector raises
:class:`~promotion.errors.MetricsError`: the caller fails closed.
"""

from __future__ import annotations

import math
from string import Template

from promotion.errors import MetricsError
from promotion.metrics import base
from promotion.metrics.base import Snapshot, counters_from_samples

DEFAULT_QUERIES: dict[str, str] = {
    "requests": "sum by (version) (promotion_requests_total{$selector})",
    "errors": "sum by (version, kind) (promotion_request_errors_total{$selector})",
    "latency_buckets": "sum by (version, le) (promotion_request_latency_seconds_bucket{$selector})",
    "latency_sum": "sum by (version) (promotion_request_latency_seconds_sum{$selector})",
    "shadow_requests": "sum by (version) (promotion_shadow_requests_total{$selector})",
    "shadow_agreement": "sum by (version, agree) (promotion_shadow_agreement_total{$selector})",
    # when the counts above were scraped: the oldest target's last scrape
    "scraped_at": "min(timestamp(promotion_requests_total{$selector}))",
}

# Which contract sample each query's result stands for.
_SAMPLE_NAME = {
    "requests": base.REQUESTS,
    "errors": base.ERRORS,
    "latency_buckets": base.LATENCY + "_bucket",
    "latency_sum": base.LATENCY + "_sum",
    "shadow_requests": base.SHADOW_REQUESTS,
    "shadow_agreement": base.SHADOW_AGREEMENT,
}


class PrometheusProvider:
    """Queries a Prometheus server at ``url`` (its base address, e.g. ``http://host:9090``)."""

    def __init__(self, url: str, *, selector: str = "", queries: dict[str, str] | None = None,
                 timeout_s: float = 5.0, session=None) -> None:
        import requests

        unknown = sorted(set(queries or {}) - set(DEFAULT_QUERIES))
        if unknown:
            raise MetricsError(f"prometheus: unknown query name(s) {', '.join(unknown)} (known: {', '.join(DEFAULT_QUERIES)})")
        self.url = url.rstrip("/")
        self.selector = selector.strip()
        self.timeout_s = timeout_s
        self.templates = {**DEFAULT_QUERIES, **(queries or {})}
        self._session = session or requests.Session()

    def query_for(self, name: str) -> str:
        """The PromQL sent for query ``name``, with the selector filled in."""
        try:
            return Template(self.templates[name]).substitute(selector=self.selector)
        except (KeyError, ValueError) as exc:
            raise MetricsError(f"prometheus: query template {name!r} is invalid ({exc})") from None

    def _get(self, path: str, params: dict) -> dict:
        import requests

        where = f"prometheus {self.url}"
        try:
            response = self._session.get(self.url + path, params=params, timeout=self.timeout_s)
        except requests.Timeout:
            raise MetricsError(f"{where}: no answer within {self.timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise MetricsError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise MetricsError(f"{where}: HTTP {response.status_code}, answer is not JSON")
        if response.status_code != 200 or payload.get("status") != "success":
            detail = payload.get("error") or payload.get("status") or "no error given"
            raise MetricsError(f"{where}: HTTP {response.status_code}: {_first_line(detail)}")
        data = payload.get("data")
        if not isinstance(data, dict):
            raise MetricsError(f"{where}: answer has no data")
        return data

    def query(self, promql: str, at: float) -> list[tuple[dict, float]]:
        """One instant query: ``[(labels, value)]``. Only an instant vector is accepted."""
        data = self._get("/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
        if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise MetricsError(f"prometheus {self.url}: {promql!r} did not return an instant vector")
        out = []
        for item in data["result"]:
            try:
                labels, value = dict(item["metric"]), float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                raise MetricsError(f"prometheus {self.url}: {promql!r} returned a malformed sample") from None
            if math.isnan(value):
                continue  # a stale or empty series carries no count
            out.append((labels, value))
        return out

    def now(self) -> float:
        """Prometheus's current time (``time()``): a snapshot whose ``taken_at`` is at or
        after it counts only what was scraped after this call."""
        data = self._get("/api/v1/query", {"query": "time()"})
        try:
            if data["resultType"] != "scalar":
                raise TypeError
            return float(data["result"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            raise MetricsError(f"prometheus {self.url}: 'time()' did not return a scalar") from None

    def snapshot(self) -> Snapshot:
        at = self.now()
        samples = []
        for name, sample_name in _SAMPLE_NAME.items():
            for labels, value in self.query(self.query_for(name), at):
                samples.append((sample_name, labels, value))
        versions = counters_from_samples(samples, f"prometheus {self.url}")
        scraped = [value for _, value in self.query(self.query_for("scraped_at"), at)]
        # no counted series yet: nothing was served that a later scrape could add to the past
        return Snapshot(min(scraped) if scraped else at, versions)

    def is_online(self) -> bool:
        try:
            data = self._get("/api/v1/query", {"query": "vector(1)"})
        except MetricsError:
            return False
        return data.get("resultType") == "vector"


def _first_line(value) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else "no detail"
