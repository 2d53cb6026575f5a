"""Which MLflow flavour a model object is, how to log it, and how to score it.

Kinds: ``sklearn`` (any scikit-learn estimator or pipeline), ``xgboost`` and ``lightgbm``
(their scikit-learn wrappers or native boosters), ``pyfunc`` (an
:class:`mlflow.pyfunc.PythonModel`), and ``uri`` (a model already logged to MLflow:
``runs:/<run>/<path>`` or ``models:/m-<id>``).

Scores come from the object itself when it has a scikit-learn API (``predict_proba`` for
classifiers), else from the pyfunc model loaded back from what was logged, so a custom
model is measured exactly as it will be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from promotion._internal.provenance import RegisterError, requirements

KINDS = ("sklearn", "xgboost", "lightgbm", "pyfunc")
# modules a pyfunc model always needs besides its own code
_BASE_MODULES = ("numpy", "pandas")


def detect(model: Any, flavor: str | None = None) -> str:
    """The kind of ``model``: one of :data:`KINDS`, or ``uri`` for a model URI string."""
    if isinstance(model, str):
        if flavor not in (None, "uri"):
            raise RegisterError(f"flavor={flavor!r} with a model URI: the URI's MLmodel names its flavour; drop flavor=")
        return "uri"
    if flavor is not None:
        if flavor not in KINDS:
            raise RegisterError(f"flavor={flavor!r}: must be one of {', '.join(KINDS)} (or pass a logged model's URI)")
        return flavor
    import mlflow.pyfunc

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return "pyfunc"
    top = type(model).__module__.split(".")[0]
    if top in ("xgboost", "lightgbm"):
        return top
    try:
        from sklearn.base import BaseEstimator

        if isinstance(model, BaseEstimator):
            return "sklearn"
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        pass
    raise RegisterError(f"cannot tell the MLflow flavour of a {type(model).__module__}.{type(model).__name__}: pass "
                        f"flavor= ({', '.join(KINDS)}), or log it with mlflow.<flavour>.log_model and pass its model URI")


def _modules_of(model: Any) -> set[str]:
    """Top-level modules of the model's class and of every nested estimator (pipelines)."""
    found = {type(model).__module__.split(".")[0]}
    get = getattr(model, "get_params", None)
    if callable(get):
        try:
            for value in get(deep=True).values():
                found.add(type(value).__module__.split(".")[0])
        except Exception:  # noqa: BLE001 - best effort: the class's module is still there
            pass
    return found


def pip_requirements(kind: str, model: Any) -> list[str]:
    """Pinned requirements of ``model`` (as installed here), without MLflow's slow inference."""
    wanted = set(_BASE_MODULES)
    if kind == "sklearn":
        wanted |= {"sklearn", "skops"} | _modules_of(model)
    elif kind in ("xgboost", "lightgbm"):
        wanted |= {kind} | ({"sklearn"} if hasattr(model, "get_params") else set())
    elif kind == "pyfunc":
        wanted |= {"cloudpickle"} | _modules_of(model)
    wanted -= {"builtins", "__main__", "mlflow"}
    return requirements(sorted(wanted))


def log_model(kind: str, model: Any, *, signature, pip_requirements: list[str], metadata: dict, **kwargs):
    """Log ``model`` as artifact ``model`` of the active run; returns MLflow's ModelInfo."""
    common = dict(name="model", signature=signature, pip_requirements=pip_requirements, metadata=metadata, **kwargs)
    if kind == "sklearn":
        import mlflow.sklearn

        if "serialization_format" not in kwargs and "skops_trusted_types" not in kwargs:
            common["skops_trusted_types"] = skops_trusted_types(model)
        return mlflow.sklearn.log_model(model, **common)
    if kind == "xgboost":
        import mlflow.xgboost

        return mlflow.xgboost.log_model(model, **common)
    if kind == "lightgbm":
        import mlflow.lightgbm

        return mlflow.lightgbm.log_model(model, **common)
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(python_model=model, **common)


# libraries whose types skops may load without asking: the model's own building blocks
_TRUSTED_MODULES = ("sklearn", "numpy", "scipy", "xgboost", "lightgbm")


def skops_trusted_types(model: Any) -> list[str] | None:
    """The types of ``model`` that skops does not trust by default but that come from the
    libraries it is built from (a fitted tree's ``sklearn.tree._tree.Tree``...).

    A type from anywhere else (the team's own transformer) is not trusted on its behalf:
    :class:`RegisterError` says how to decide.
    """
    try:
        import skops.io as sio

        untrusted = sio.get_untrusted_types(data=sio.dumps(model))
    except ImportError:
        return None
    except Exception as exc:  # noqa: BLE001 - skops cannot serialise it (a lambda...)
        raise RegisterError(f"the model cannot be saved in skops format ({exc.__class__.__name__}: {str(exc)[:200]}); "
                            "pass serialization_format=\"cloudpickle\"") from exc
    foreign = [t for t in untrusted if t.split(".")[0] not in _TRUSTED_MODULES]
    if foreign:
        raise RegisterError(f"the model holds types skops does not trust: {', '.join(foreign[:5])}; if they are yours "
                            "and safe to load, pass skops_trusted_types=[...] naming them (or "
                            "serialization_format=\"cloudpickle\")")
    return untrusted or None


@dataclass
class Scorer:
    """Predictions and scores of one model on a frame.

    ``predict`` returns what the model's pyfunc returns; ``proba`` (classifiers with one)
    the class probabilities, columns in ``classes`` order.
    """

    predict: Callable[[Any], Any]
    proba: Callable[[Any], Any] | None = None
    classes: list | None = None
    is_classifier: bool | None = None


def native_scorer(kind: str, model: Any) -> Scorer | None:
    """A scorer from the object itself, or None when only its logged pyfunc can score it."""
    if kind == "pyfunc":
        return None
    if kind == "xgboost" and not hasattr(model, "predict_proba") and hasattr(model, "inplace_predict"):
        return Scorer(predict=lambda X: model.inplace_predict(X))
    if not callable(getattr(model, "predict", None)):
        return None
    classifier = None
    if kind == "sklearn" or hasattr(model, "get_params"):
        from sklearn.base import is_classifier, is_regressor

        classifier = True if is_classifier(model) else (False if is_regressor(model) else None)
    proba = getattr(model, "predict_proba", None) if classifier is not False else None
    classes = list(getattr(model, "classes_", [])) or None
    return Scorer(predict=model.predict, proba=proba if callable(proba) else None, classes=classes,
                  is_classifier=classifier if classifier is not None else (True if callable(proba) else None))


def load_native(uri: str, flavors: dict) -> Any | None:
    """The flavour's own object for a logged model (for ``predict_proba``), or None."""
    import importlib

    for name in ("sklearn", "xgboost", "lightgbm"):
        if name in flavors:
            try:
                return importlib.import_module(f"mlflow.{name}").load_model(uri)
            except Exception:  # noqa: BLE001 - fall back to the pyfunc, which must load
                return None
    return None


def pyfunc_scorer(pyfunc) -> Scorer:
    """A scorer from a loaded pyfunc model: its ``predict`` is all there is (a custom
    model's ``score`` output column is read as the positive class's score).

    Categorical columns reach it as strings, as they do from a JSON request: the
    signature types them ``string`` and MLflow refuses a pandas categorical there.
    """
    import pandas as pd

    def predict(X):
        cats = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
        if cats:
            X = X.astype({c: object for c in cats})
            for c in cats:
                X[c] = X[c].where(X[c].isna(), X[c].astype(str))
        return pyfunc.predict(X)

    return Scorer(predict=predict)
