"""Scoring a model on the holdout: probabilities, labels, the task, the reference sample.

A model answers in many shapes (``predict_proba`` columns, a custom model's ``score``
column, labels that are strings); these helpers turn each into what
:mod:`promotion._internal.holdout` measures, and a failure to predict into
:class:`RegisterError` naming the input (the caller's data, not the registry, is wrong).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from promotion._internal import holdout
from promotion._internal.provenance import RegisterError


@contextmanager
def guard(name: str, what: str = "X_holdout") -> Iterator[None]:
    """A model that fails to predict is the caller's input problem, not the registry's."""
    from promotion.errors import Error

    try:
        yield
    except Error:
        raise
    except Exception as exc:  # whatever the model's library raises
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise RegisterError(f"model {name}: cannot predict on {what} ({exc.__class__.__name__}: {first})") from exc


def measure(task, scorer, X, y, threshold, positive, seg_name, seg_values):
    """(holdout metrics, positive-class scores or predictions) of the model on ``X``."""
    import numpy as np

    if task == holdout.REGRESSION:
        pred = np.asarray(scorer.predict(X), dtype=float).reshape(len(X), -1)[:, 0]
        return holdout.regression_metrics(y, pred, seg_values, seg_name or "segment"), pred
    proba, classes = _proba(scorer, X, y)
    if proba.shape[1] > 2:
        return holdout.multiclass_metrics(y, proba, classes), None
    y_bin = _binary(y, classes, positive)
    scores = proba[:, 1]
    return holdout.binary_metrics(y_bin, scores, float(threshold), seg_values, seg_name or "segment"), scores


def _proba(scorer, X, y):
    """(class probabilities, classes in column order). A classifier without probabilities
    (or a custom model answering labels) scores 1.0 for the predicted class."""
    import numpy as np
    import pandas as pd

    raw = scorer.proba(X) if scorer.proba is not None else scorer.predict(X)
    if isinstance(raw, pd.DataFrame) and "score" in raw.columns:  # a custom model's score column
        raw = raw["score"]
    raw = raw.to_numpy() if isinstance(raw, (pd.DataFrame, pd.Series)) else np.asarray(raw)
    labels = sorted(pd.unique(np.asarray(y)).tolist())
    if raw.dtype.kind not in "fiub":  # labels, not numbers: one-hot over the known classes
        pred = raw.reshape(len(raw))
        classes = scorer.classes or sorted(set(labels) | set(pd.unique(pred).tolist()))
        return np.column_stack([(pred == c).astype(float) for c in classes]), list(classes)
    arr = raw.astype(float)
    if arr.ndim == 1 or arr.shape[1] == 1:
        s = arr.reshape(len(arr))
        arr = np.column_stack([1 - s, s])
    classes = scorer.classes or (labels if len(labels) == arr.shape[1] else [0, 1])
    return arr, list(classes)


def _binary(y, classes, positive):
    import numpy as np

    pos = positive if positive is not None else classes[-1]
    if positive is not None and positive not in list(np.unique(y)):
        raise RegisterError(f"positive={positive!r}: not a label in y_holdout")
    return (np.asarray(y) == pos).astype(int)


def task_of(task, kind, model, scorer, y) -> str:
    """The task as given, else what the model says, else what the labels look like."""
    import numpy as np
    import pandas as pd

    if task:
        return task
    if scorer is not None and scorer.is_classifier is not None:
        return holdout.CLASSIFICATION if scorer.is_classifier else holdout.REGRESSION
    objective = _objective(kind, model)
    if objective:
        return holdout.CLASSIFICATION if objective.startswith(("binary", "multi", "cross")) else holdout.REGRESSION
    values = pd.Series(np.asarray(y))
    if values.dtype == bool or values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype):
        return holdout.CLASSIFICATION
    if values.nunique() <= 2 and set(values.unique().tolist()) <= {0, 1}:
        return holdout.CLASSIFICATION
    return holdout.REGRESSION


def _objective(kind: str, model: Any) -> str:
    """The training objective of a native booster (``binary:logistic``, ``regression``...), or ''."""
    import json

    try:
        if kind == "xgboost" and hasattr(model, "save_config"):
            return str(json.loads(model.save_config())["learner"]["objective"]["name"])
        if kind == "lightgbm" and hasattr(model, "params"):
            return str((model.params or {}).get("objective") or "")
    except Exception:  # noqa: BLE001 - no objective to read: fall back to the labels
        return ""
    return ""


def reference_frame(reference, X, seg_name, seg_values, rows, task, scorer, holdout_scores, y):
    """Up to ``rows`` rows of ``reference`` (else the holdout) with the model's ``score``
    (binary classifiers) or ``prediction`` (regression), and the segment column."""
    import numpy as np

    base = X if reference is None else reference
    missing = [c for c in X.columns if c not in base.columns]
    if missing:
        raise RegisterError(f"reference=: lacks the model's input column(s) {', '.join(map(str, missing[:5]))}")
    ref = base.sample(n=min(int(rows), len(base)), random_state=0) if len(base) > rows else base
    ref = ref.copy()
    features = ref[list(X.columns)]
    if task == holdout.REGRESSION:
        ref["prediction"] = np.asarray(scorer.predict(features), dtype=float).reshape(len(ref), -1)[:, 0]
    elif holdout_scores is not None:
        proba, _ = _proba(scorer, features, y)
        ref["score"] = proba[:, 1]
    if reference is None and seg_name and seg_name not in ref.columns and seg_values is not None:
        ref[seg_name] = np.asarray(seg_values)[X.index.get_indexer(ref.index)]
    return ref
