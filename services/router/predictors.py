"""How a loaded version predicts: one adapter per kind of native model, pyfunc for the rest.

Every model is loaded through its pyfunc flavour (``mlflow.pyfunc.load_model``). pyfunc's
``predict`` returns classes but hides ``predict_proba``, and its schema enforcement costs
more than the model on one row, so for the flavours whose native model is known the
router takes that model (``PyFuncModel.get_raw_model()``) and calls it itself, on input it
has already checked against the signature:

- :class:`XGBoostBooster` - an XGBoost model on numeric columns: ``inplace_predict`` on a
  float32 matrix (no DataFrame, no DMatrix);
- :class:`LightGBMBooster` - a LightGBM model on numeric columns: ``Booster.predict`` on a
  matrix, one thread;
- :class:`Estimator` - anything with the scikit-learn API (pipelines, LightGBM and
  XGBoost with categorical columns): ``predict_proba`` (classifiers) or ``predict`` on a
  DataFrame with the signature's dtypes;
- :class:`PyFunc` - every other model (a custom ``PythonModel``, other flavours, models
  called with ``params``): ``PyFuncModel.predict`` on a DataFrame, as MLflow serves it.

Classifiers answer with the predicted class and, for two classes, the score (the
positive class's probability). The class is the most probable one, which is what these
models' ``predict`` returns; with a ``decision_threshold`` in the model's metadata, a
binary classifier predicts the positive class when its score is at or above it.
A custom model whose output is a DataFrame with ``prediction`` and ``score`` columns has
both reported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from services.router.payload import Batch
from services.router.signature import InputSchema


class PredictError(Exception):
    """The model's output cannot be an answer (wrong length, not finite, not JSON)."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """One answer per row: the prediction, and for classifiers the score and class."""

    predictions: list
    scores: list | None = None   # positive-class probability (binary classifiers)
    labels: list | None = None   # the predicted class (classifiers)
    positive: Any = None         # the class ``scores`` are the probability of (binary classifiers)

    def classes(self) -> list | None:
        """What a label is judged against: ``None`` for a regressor, ``[positive class]``
        for a binary classifier (1 for a custom model's ``score``), ``[]`` for others."""
        if self.labels is None:
            return None
        if self.positive is not None:
            return [self.positive]
        return [1] if self.scores is not None else []

    def decisions(self) -> list:
        """What a shadow's answer is compared on: the class, else the prediction."""
        return self.labels if self.labels is not None else self.predictions


def _classes(proba, classes, threshold: float | None) -> Prediction:
    """Classes (and binary scores) from probabilities: ``(n,)`` of the positive class or ``(n, k)``."""
    import numpy as np

    proba = np.asarray(proba)
    if proba.ndim == 2 and proba.shape[1] == 2:
        proba = proba[:, 1]
    if proba.ndim == 1:
        if not np.isfinite(proba).all():
            raise PredictError("returned a non-finite score")
        # argmax of (1 - p, p) picks the positive class only above 0.5; a threshold at or above
        idx = (proba >= threshold) if threshold is not None else (proba > 0.5)
        names = np.asarray(classes)
        labels = names[idx.astype(np.intp)].tolist()
        return Prediction(labels, proba.tolist(), labels, names[1:2].tolist()[0] if len(names) > 1 else None)
    if not np.isfinite(proba).all():
        raise PredictError("returned a non-finite probability")
    labels = np.asarray(classes)[np.argmax(proba, axis=1)].tolist()
    return Prediction(labels, None, labels)


def _values(out, n: int) -> list:
    """Model output as one JSON-ready value per row."""
    import numpy as np

    if hasattr(out, "to_numpy") and not hasattr(out, "columns"):  # a Series
        out = out.to_numpy()
    if isinstance(out, np.ndarray):
        if out.dtype.kind == "f" and not np.isfinite(out).all():
            raise PredictError("returned a non-finite prediction")
        values = out.tolist()
    elif isinstance(out, (list, tuple)):
        values = list(out)
    elif isinstance(out, dict):  # columns of equal length -> one object per row
        cols = {k: _values(v, n) for k, v in out.items()}
        if any(len(v) != n for v in cols.values()):
            raise PredictError(f"returned columns that are not {n} rows long")
        values = [{k: v[i] for k, v in cols.items()} for i in range(n)]
    elif n == 1 and isinstance(out, (int, float, str, bool)):
        values = [out]
    else:
        raise PredictError(f"returned a {type(out).__name__}, which is not one value per row")
    if len(values) != n:
        raise PredictError(f"returned {len(values)} predictions for {n} rows")
    for v in values:
        if type(v) is float and not math.isfinite(v):
            raise PredictError("returned a non-finite prediction")
    return values


_GENERATED = re.compile(r"^(Column_|f)\d+$")  # LightGBM's and XGBoost's names for unnamed columns


def _feature_order(native_names, schema: InputSchema) -> tuple[str, ...] | None:
    """The model's own column order when the signature has every one of them; the
    signature's order for a model fitted without names; None when they disagree."""
    if native_names is None or len(native_names) == 0:
        return schema.names
    names = tuple(str(n) for n in native_names)
    if set(names) <= set(schema.names):
        return names
    if len(names) == len(schema.names) and all(_GENERATED.match(n) for n in names):
        return schema.names  # fitted on a matrix: columns are positional, in signature order
    return None


class XGBoostBooster:
    """An XGBoost booster on numeric columns (``classes``: an ``XGBClassifier``'s)."""

    kind = "xgboost"

    def __init__(self, booster, names: tuple[str, ...], classes=None, threshold: float | None = None,
                 binary: bool = False) -> None:
        booster.set_param({"nthread": 1})  # one row per call: threads add wake-ups, not speed
        self.booster, self.names, self.classes, self.threshold = booster, names, classes, threshold
        self.binary = binary  # a bare booster with a binary:logistic objective: scores, 0/1 classes

    def predict(self, schema: InputSchema, values: dict[str, list], batch: Batch) -> Prediction:
        out = self.booster.inplace_predict(schema.matrix(values, self.names), validate_features=False)
        if self.classes is not None:
            return _classes(out, self.classes, self.threshold)
        if self.binary:
            return _classes(out, (0, 1), 0.5 if self.threshold is None else self.threshold)
        return Prediction(_values(out, batch.n))


class LightGBMBooster:
    """A LightGBM booster on numeric columns (``classes``: an ``LGBMClassifier``'s)."""

    kind = "lightgbm"

    def __init__(self, booster, names: tuple[str, ...], classes=None, threshold: float | None = None,
                 binary: bool = False) -> None:
        self.booster, self.names, self.classes, self.threshold, self.binary = booster, names, classes, threshold, binary

    def predict(self, schema: InputSchema, values: dict[str, list], batch: Batch) -> Prediction:
        out = self.booster.predict(schema.matrix(values, self.names, "float64"), num_threads=1)
        if self.classes is not None:
            return _classes(out, self.classes, self.threshold)
        if self.binary:
            return _classes(out, (0, 1), 0.5 if self.threshold is None else self.threshold)
        return Prediction(_values(out, batch.n))


class Estimator:
    """A model with the scikit-learn API, on a DataFrame (or a matrix when it was fitted on one)."""

    kind = "sklearn"

    def __init__(self, model, schema: InputSchema, names: tuple[str, ...], threshold: float | None = None,
                 categories: dict[str, Any] | None = None) -> None:
        self.model, self.names, self.threshold, self.categories = model, names, threshold, categories
        fitted = getattr(model, "feature_names_in_", None)
        # fitted on an unnamed matrix: give it one (a DataFrame would only earn a warning)
        self.as_matrix = fitted is None and schema.numeric and not categories
        self.classifier = hasattr(model, "predict_proba") and hasattr(model, "classes_")
        self.classes = list(model.classes_) if self.classifier else None

    def predict(self, schema: InputSchema, values: dict[str, list], batch: Batch) -> Prediction:
        if self.as_matrix:
            X = schema.matrix(values, self.names, "float64")
        else:
            X = schema.frame(values, self.names, self.categories)
        if self.classifier:
            return _classes(self.model.predict_proba(X), self.classes, self.threshold)
        return Prediction(_values(self.model.predict(X), batch.n))


class PyFunc:
    """``PyFuncModel.predict``, as MLflow's scoring server calls it."""

    kind = "pyfunc"

    def __init__(self, pyfunc_model) -> None:
        self.model = pyfunc_model

    def predict(self, schema: InputSchema, values: dict[str, list], batch: Batch) -> Prediction:
        import pandas as pd

        if schema.tensor is not None:
            data = schema.tensor_input(batch, 0)
        elif schema.columns is not None:
            data = schema.frame(values)
        elif batch.columns is not None:
            data = pd.DataFrame(values)  # no signature: pandas infers the dtypes, as MLflow does
        else:
            data = pd.DataFrame(batch.positional)
        out = self.model.predict(data, params=batch.params) if batch.params else self.model.predict(data)
        n = batch.n
        if isinstance(out, pd.DataFrame):
            if "prediction" in out.columns:  # the documented convention for a custom model's scores
                preds = _values(out["prediction"].to_numpy(), n)
                if "score" not in out.columns:
                    return Prediction(preds)
                scores = _values(out["score"].to_numpy(dtype=float), n)
                return Prediction(preds, scores, preds)
            if len(out.columns) == 1:
                return Prediction(_values(out.iloc[:, 0].to_numpy(), n))
            return Prediction(_values({str(c): out[c].to_numpy() for c in out.columns}, n))
        return Prediction(_values(out, n))


# -- choosing the adapter ----------------------------------------------------------------

def _estimator(model, schema: InputSchema, threshold, categories=None) -> Estimator | None:
    names = _feature_order(getattr(model, "feature_names_in_", None), schema)
    return Estimator(model, schema, names, threshold, categories) if names else None


def _objective(booster, kind: str) -> str:
    try:
        if kind == "xgboost":
            import json

            return json.loads(booster.save_config())["learner"]["objective"]["name"]
        return str(booster.dump_model(num_iteration=0).get("objective", ""))
    except Exception:  # an objective we cannot read is treated as "not binary"
        return ""


def _xgboost(raw, schema: InputSchema, threshold):
    import xgboost

    if isinstance(raw, xgboost.XGBModel):
        booster = raw.get_booster()
        classes = getattr(raw, "classes_", None) if isinstance(raw, xgboost.XGBClassifier) else None
        categorical = "c" in (booster.feature_types or ())
        if schema.numeric and not categorical:
            names = _feature_order(booster.feature_names, schema)
            return XGBoostBooster(booster, names, classes, threshold) if names else None
        raw.set_params(n_jobs=1)
        strings = {c.name: None for c in schema.columns if c.type == "string"}  # xgboost re-codes them
        return _estimator(raw, schema, threshold, strings)
    if isinstance(raw, xgboost.Booster) and schema.numeric:
        names = _feature_order(raw.feature_names, schema)
        binary = _objective(raw, "xgboost") == "binary:logistic"
        return XGBoostBooster(raw, names, None, threshold, binary) if names else None
    return None


def _lightgbm(raw, schema: InputSchema, threshold):
    import lightgbm

    booster = raw.booster_ if isinstance(raw, lightgbm.LGBMModel) else raw
    if not isinstance(booster, lightgbm.Booster):
        return None
    pandas_categorical = getattr(booster, "pandas_categorical", None)
    if isinstance(raw, lightgbm.LGBMModel):
        classes = raw.classes_ if isinstance(raw, lightgbm.LGBMClassifier) else None
        if schema.numeric and not pandas_categorical:
            names = _feature_order(booster.feature_name(), schema)
            return LightGBMBooster(booster, names, classes, threshold) if names else None
        raw.set_params(n_jobs=1)
        strings = [c.name for c in schema.columns if c.type == "string"]
        cats = dict(zip(strings, pandas_categorical)) if len(strings) == len(pandas_categorical or ()) else {}
        return _estimator(raw, schema, threshold, cats or None)
    if schema.numeric and not pandas_categorical:
        names = _feature_order(booster.feature_name(), schema)
        binary = _objective(booster, "lightgbm").startswith("binary")
        return LightGBMBooster(booster, names, None, threshold, binary) if names else None
    return None


def for_model(pyfunc_model, flavours: dict, schema: InputSchema, threshold: float | None):
    """The fastest faithful adapter for a loaded pyfunc model (:class:`PyFunc` when no other fits)."""
    generic = PyFunc(pyfunc_model)
    if schema.columns is None or set(flavours) == {"python_function"}:
        return generic
    try:
        raw = pyfunc_model.get_raw_model()
    except Exception:  # NotImplementedError, MlflowException: pyfunc is the way in
        return generic
    try:
        return for_native(raw, flavours, schema, threshold) or generic
    except ImportError:
        return generic


def for_native(raw, flavours: dict | tuple, schema: InputSchema, threshold: float | None = None):
    """The adapter for a native model of one of the known flavours, or None."""
    if "xgboost" in flavours:
        return _xgboost(raw, schema, threshold)
    if "lightgbm" in flavours:
        return _lightgbm(raw, schema, threshold)
    if "sklearn" in flavours and hasattr(raw, "predict"):
        return _estimator(raw, schema, threshold)
    return None


__all__ = ["Prediction", "PredictError", "XGBoostBooster", "LightGBMBooster", "Estimator", "PyFunc",
           "for_model", "for_native"]
