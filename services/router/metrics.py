"""The service's Prometheus metrics, labelled by model version (low cardinality).

Created on first use, inside the worker: BentoML sets ``PROMETHEUS_MULTIPROC_DIR`` only
after the service module is imported, and ``prometheus_client`` picks its multiprocess
mode at import time. ``/metrics`` (BentoML's) aggregates all workers. Names, labels and
buckets are the contract's (:mod:`promotion.contract.metrics`).
"""

from __future__ import annotations

import bisect
import threading

from promotion.contract import metrics as names
from promotion.contract.metrics import LATENCY_BUCKETS  # noqa: F401 - the service's buckets are the contract's
from promotion.contract.metrics import LABEL_DELAY_BUCKETS, SCORE_BUCKETS


class Metrics:
    """The metric families plus per-version child caches (label lookups off the hot path)."""

    def __init__(self, registry=None) -> None:
        import prometheus_client as pc

        kw = {"registry": registry} if registry is not None else {}
        self.requests = pc.Counter(names.REQUESTS_FAMILY, "Predict requests routed to a model version",
                                   ["version"], **kw)
        self.errors = pc.Counter(names.ERRORS_FAMILY, "Failed predict requests by version and kind",
                                 ["version", "kind"], **kw)
        self.latency = pc.Histogram(names.LATENCY_FAMILY,
                                    "Routing + predict time inside the handler", ["version"],
                                    buckets=LATENCY_BUCKETS, **kw)
        self.shadow_requests = pc.Counter(names.SHADOW_REQUESTS_FAMILY,
                                          "Rows mirrored to a shadow version and answered", ["version"], **kw)
        self.shadow_agreement = pc.Counter(names.SHADOW_AGREEMENT_FAMILY,
                                           "Shadow answer (class, else prediction) equal to the served one",
                                           ["version", "agree"], **kw)
        self.shadow_latency = pc.Histogram(names.SHADOW_LATENCY_FAMILY, "Shadow predict time per row",
                                           ["version"], buckets=LATENCY_BUCKETS, **kw)
        self.shadow_dropped = pc.Counter(names.SHADOW_DROPPED_FAMILY, "Mirrored rows dropped (queue full)",
                                         ["version"], **kw)
        # model quality: labels joined by POST /feedback (services/router/feedback.py), scores per row
        self.labels = pc.Counter(names.LABELS_FAMILY, "Labelled rows of binary classifiers by outcome",
                                 ["version", "segment", "outcome"], **kw)
        self.label_values = pc.Counter(names.LABEL_VALUES_FAMILY, "Labelled rows of regressors",
                                       ["version", "segment"], **kw)
        self.label_abs_error = pc.Counter(names.LABEL_ABS_ERROR_FAMILY, "Sum of |prediction - value| of labelled rows",
                                          ["version", "segment"], **kw)
        self.label_squared_error = pc.Counter(names.LABEL_SQUARED_ERROR_FAMILY,
                                              "Sum of (prediction - value)^2 of labelled rows", ["version", "segment"],
                                              **kw)
        self.label_delay = pc.Histogram(names.LABEL_DELAY_FAMILY, "Seconds from prediction to label", ["version"],
                                        buckets=LABEL_DELAY_BUCKETS, **kw)
        self.score = pc.Histogram(names.SCORE_FAMILY, "Score of every served row (binary classifiers)", ["version"],
                                  buckets=SCORE_BUCKETS, **kw)
        self.feedback = pc.Counter(names.FEEDBACK_FAMILY, "Feedback items by result", ["result"], **kw)
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
