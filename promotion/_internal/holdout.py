"""Holdout metrics under the names the gates read.

Classification (binary): ``recall``, ``precision``, ``fpr``, ``f1``, ``accuracy`` at the
decision threshold, and ``auc``, ``log_loss`` from the positive class's score. Per
segment (the fairness gate's scheme): ``tpr_<segment>_<value>`` and ``fpr_<segment>_<value>``.
Multi-class: ``accuracy``, macro ``recall``/``precision``/``f1``, ``log_loss``, one-vs-rest
``auc``; no per-segment rates.

Regression: ``rmse``, ``mae``, ``r2``; per segment ``rmse_<segment>_<value>`` and
``mae_<segment>_<value>``.

Every task: ``latency_p95_ms`` (p95 of single-row predictions) and ``holdout_rows``. A
metric that is undefined on this holdout (AUC with one class present, a segment's TPR
with no positives in it) is left out rather than logged as 0: a gate that needs it then
says it is missing instead of judging a made-up number.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Callable

CLASSIFICATION = "classification"
REGRESSION = "regression"
TASKS = (CLASSIFICATION, REGRESSION)
CLASSIFICATION_METRICS = ("recall", "precision", "fpr", "f1", "accuracy", "auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
COMMON_METRICS = ("latency_p95_ms", "holdout_rows")
SEGMENT_RATES = {CLASSIFICATION: ("tpr", "fpr"), REGRESSION: ("rmse", "mae")}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def segment_key(value: Any) -> str:
    """A segment value as it appears in a metric name (``2.0`` -> ``2``; unsafe chars -> ``_``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
        if isinstance(value, float) and value.is_integer():
            value = int(value)
    return _UNSAFE.sub("_", str(value)) or "_"


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}


def binary_rates(y, pred) -> dict[str, float | None]:
    """recall (TPR), precision, FPR, F1 and accuracy of 0/1 labels ``pred`` against ``y``."""
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    tn = float(((pred == 0) & (y == 0)).sum())
    recall = tp / (tp + fn) if tp + fn else None
    precision = tp / (tp + fp) if tp + fp else (0.0 if recall is not None else None)
    f1 = None
    if recall is not None and precision is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"recall": recall, "precision": precision, "fpr": fp / (fp + tn) if fp + tn else None, "f1": f1,
            "accuracy": (tp + tn) / len(y) if len(y) else None}


def binary_metrics(y, scores, threshold: float, segments=None, segment_name: str = "segment") -> dict[str, float]:
    """Metrics of a binary classifier: ``y`` 0/1, ``scores`` the positive class's score."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=float)
    pred = (scores >= threshold).astype(int)
    metrics: dict[str, Any] = binary_rates(y, pred)
    if len(np.unique(y)) == 2:
        metrics["auc"] = roc_auc_score(y, scores)
        if np.all((scores >= 0) & (scores <= 1)):
            metrics["log_loss"] = log_loss(y, np.clip(scores, 1e-15, 1 - 1e-15), labels=[0, 1])
    if segments is not None:
        seg = np.asarray(segments)
        for s in _levels(seg):
            r = binary_rates(y[seg == s], pred[seg == s])
            metrics[f"tpr_{segment_name}_{segment_key(s)}"] = r["recall"]
            metrics[f"fpr_{segment_name}_{segment_key(s)}"] = r["fpr"]
    return _finite(metrics)


def multiclass_metrics(y, proba, classes) -> dict[str, float]:
    """Metrics of a multi-class classifier from its class probabilities (columns = ``classes``)."""
    import numpy as np
    from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_score, recall_score, roc_auc_score

    proba = np.asarray(proba, dtype=float)
    pred = np.asarray(classes)[proba.argmax(axis=1)]
    metrics: dict[str, Any] = {
        "accuracy": accuracy_score(y, pred),
        "recall": recall_score(y, pred, average="macro", zero_division=0),
        "precision": precision_score(y, pred, average="macro", zero_division=0),
        "f1": f1_score(y, pred, average="macro", zero_division=0),
    }
    try:
        metrics["log_loss"] = log_loss(y, proba, labels=list(classes))
        metrics["auc"] = roc_auc_score(y, proba, multi_class="ovr", labels=list(classes))
    except ValueError:  # a class absent from the holdout: undefined, left out
        pass
    return _finite(metrics)


def regression_metrics(y, pred, segments=None, segment_name: str = "segment") -> dict[str, float]:
    """RMSE, MAE and R² of ``pred`` against ``y``, and per-segment RMSE and MAE."""
    import numpy as np

    y = np.asarray(y, dtype=float)
    pred = np.asarray(pred, dtype=float).reshape(len(y), -1)[:, 0]
    err = pred - y

    def rmse_mae(e):
        return (float(np.sqrt(np.mean(e ** 2))), float(np.mean(np.abs(e)))) if len(e) else (None, None)

    rmse, mae = rmse_mae(err)
    ss = float(np.sum((y - y.mean()) ** 2))
    metrics: dict[str, Any] = {"rmse": rmse, "mae": mae, "r2": 1 - float(np.sum(err ** 2)) / ss if ss else None}
    if segments is not None:
        seg = np.asarray(segments)
        for s in _levels(seg):
            r, m = rmse_mae(err[seg == s])
            metrics[f"rmse_{segment_name}_{segment_key(s)}"] = r
            metrics[f"mae_{segment_name}_{segment_key(s)}"] = m
    return _finite(metrics)


def _levels(seg):
    import pandas as pd

    return [s for s in pd.unique(seg) if not (isinstance(s, float) and math.isnan(s))]


def latency_p95_ms(calls: list[Callable[[Any], Any]], rows: list[Any], reps: int = 200, warmup: int = 20) -> float:
    """p95, in milliseconds, of answering one row: every call in ``calls`` on that row.

    Rows are cycled so that a cache keyed on the input does not flatter the figure.
    """
    import numpy as np

    for i in range(warmup):
        for call in calls:
            call(rows[i % len(rows)])
    samples = []
    for i in range(reps):
        row = rows[i % len(rows)]
        t0 = time.perf_counter()
        for call in calls:
            call(row)
        samples.append(time.perf_counter() - t0)
    return float(np.percentile(samples, 95) * 1000)
