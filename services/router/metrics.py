"""The service's Prometheus metrics, labelled by model version (low cardinality).

Created on first use, inside the worker: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` only
after the service module is imported, and ``prometheus_client`` picks its multiprocess
mode at import time. ``/metrics`` (BentoML's) aggregates all workers.
"""

from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The metric families plus per-version child caches (label lookups off the hot path)."""

    def __init__(self, registry=None) -> None:
        import prometheus_client as pc

        kw = {"registry": registry} if registry is not None else {}
        self.requests = pc.Counter("promotion_requests", "Predict requests routed to a model version",
                                   ["version"], **kw)
        self.errors = pc.Counter("promotion_request_errors", "Failed predict requests by version and kind",
                                 ["version", "kind"], **kw)
        self.latency = pc.Histogram("promotion_request_latency_seconds",
                                    "Routing + predict time inside the handler", ["version"],
                                    buckets=LATENCY_BUCKETS, **kw)
        self.shadow_requests = pc.Counter("promotion_shadow_requests", "Requests mirrored to a shadow version",
                                          ["version"], **kw)
        self.shadow_agreement = pc.Counter("promotion_shadow_agreement",
                                           "Shadow label equal to the served label", ["version", "agree"], **kw)
        self.shadow_latency = pc.Histogram("promotion_shadow_latency_seconds", "Shadow predict time",
                                           ["version"], buckets=LATENCY_BUCKETS, **kw)
        self.shadow_dropped = pc.Counter("promotion_shadow_dropped", "Mirrored requests dropped (queue full)",
                                         ["version"], **kw)
        self._children: dict[tuple, object] = {}

    @staticmethod
    def observe_many(histogram, values: list[float]) -> None:
        """``histogram.observe(x)`` for every x, with one write per bucket touched and one
        for the sum instead of two per value (each is a locked write to a shared file in
        multiprocess mode). Falls back to ``observe`` if prometheus_client's histogram
        layout is not the one this relies on."""
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
            for x in values:
                histogram.observe(x)
            return
        counts = [0] * len(bounds)
        for x in values:
            counts[bisect.bisect_left(bounds, x)] += 1  # the first bound >= x, as observe() does
        total.inc(sum(values))
        for i, n in enumerate(counts):
            if n:
                buckets[i].inc(n)

    def child(self, family, *labels: str):
        key = (id(family), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = family.labels(*labels)
        return c


_lock = threading.Lock()
_instance: Metrics | None = None


def get() -> Metrics:
    """The process-wide metrics (created once)."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = Metrics()
        return _instance
