"""The service's Prometheus metrics: names, labels and latency buckets.

The router exports them (labelled by model version) and the package's metrics providers
read them back::

    from promotion.contract import metrics
    metrics.REQUESTS            # "promotion_requests_total", the sample name in /metrics
    metrics.LATENCY_BUCKETS     # upper bounds in seconds, without +Inf

Every family has a ``version`` label (the model version, an integer); errors also have
``kind`` (``input``, ``predict``, ``shadow``, ``unavailable``) and shadow agreement
``agree`` (``true`` / ``false``). A request is one HTTP call, whatever number of rows
it carries.

Model-quality series (labels arrive through ``POST /feedback``, see
:mod:`promotion.contract.feedback`), per row, counted for the version that served the
row whenever the label arrives:

- ``promotion_labels_total{version, segment, outcome}``: labelled rows of a binary
  classifier by ``outcome`` (``tp``, ``fp``, ``fn``, ``tn``: the served class, decided at
  the version's threshold, against the label);
- ``promotion_label_values_total``, ``promotion_label_abs_error_total``,
  ``promotion_label_squared_error_total`` ``{version, segment}``: a regressor's labelled
  rows, and the sums of ``|prediction - value|`` and ``(prediction - value)**2``;
- ``promotion_label_delay_seconds{version}``: histogram of label arrival minus prediction
  (:data:`LABEL_DELAY_BUCKETS`);
- ``promotion_score{version}``: histogram of every served row's score (binary
  classifiers), over the fixed bins :data:`SCORE_BUCKETS`;
- ``promotion_feedback_total{result}``: feedback items by ``result`` (``accepted``,
  ``duplicate``, ``unknown``, ``invalid``); no version label.

``segment`` is the value of the request column the service is told is the segment
(``PROMOTION_SEGMENT_COLUMN``, the fairness gate's ``segment``), ``""`` without one; at
most :data:`SEGMENT_VALUES_MAX` values per service are kept, the rest count as
:data:`OTHER_SEGMENT`. Summing over ``segment`` gives the version's totals.
"""

from __future__ import annotations

import math

# families as declared with prometheus_client (counters gain "_total" in the text format)
REQUESTS_FAMILY = "promotion_requests"
ERRORS_FAMILY = "promotion_request_errors"
LATENCY_FAMILY = "promotion_request_latency_seconds"
SHADOW_REQUESTS_FAMILY = "promotion_shadow_requests"
SHADOW_AGREEMENT_FAMILY = "promotion_shadow_agreement"
SHADOW_LATENCY_FAMILY = "promotion_shadow_latency_seconds"
SHADOW_DROPPED_FAMILY = "promotion_shadow_dropped"

# sample names as they appear in the text format
REQUESTS = REQUESTS_FAMILY + "_total"
ERRORS = ERRORS_FAMILY + "_total"
LATENCY = LATENCY_FAMILY
SHADOW_REQUESTS = SHADOW_REQUESTS_FAMILY + "_total"
SHADOW_AGREEMENT = SHADOW_AGREEMENT_FAMILY + "_total"
SHADOW_LATENCY = SHADOW_LATENCY_FAMILY
SHADOW_DROPPED = SHADOW_DROPPED_FAMILY + "_total"

LABELS_FAMILY = "promotion_labels"
LABEL_VALUES_FAMILY = "promotion_label_values"
LABEL_ABS_ERROR_FAMILY = "promotion_label_abs_error"
LABEL_SQUARED_ERROR_FAMILY = "promotion_label_squared_error"
LABEL_DELAY_FAMILY = "promotion_label_delay_seconds"
SCORE_FAMILY = "promotion_score"
FEEDBACK_FAMILY = "promotion_feedback"

LABELS = LABELS_FAMILY + "_total"
LABEL_VALUES = LABEL_VALUES_FAMILY + "_total"
LABEL_ABS_ERROR = LABEL_ABS_ERROR_FAMILY + "_total"
LABEL_SQUARED_ERROR = LABEL_SQUARED_ERROR_FAMILY + "_total"
LABEL_DELAY = LABEL_DELAY_FAMILY
SCORE = SCORE_FAMILY
FEEDBACK = FEEDBACK_FAMILY + "_total"

VERSION_LABEL = "version"
ERROR_KINDS = ("input", "predict", "shadow", "unavailable")
SEGMENT_LABEL = "segment"
OUTCOMES = ("tp", "fp", "fn", "tn")
FEEDBACK_RESULTS = ("accepted", "duplicate", "unknown", "invalid")
SEGMENT_VALUES_MAX = 20
OTHER_SEGMENT = "__other__"

# latency histogram upper bounds (seconds); the exported histogram adds +Inf
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                   0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
LATENCY_BOUNDS = (*LATENCY_BUCKETS, math.inf)

# score histogram: 20 bins of width 0.05 over [0, 1] (the exported histogram adds +Inf)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
SCORE_BOUNDS = (*SCORE_BUCKETS, math.inf)
# label delay (seconds from prediction to label)
LABEL_DELAY_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)
LABEL_DELAY_BOUNDS = (*LABEL_DELAY_BUCKETS, math.inf)
