"""Loading one model version for serving, after checking its artifact against a digest.

The artifact is fetched from the registry into ``<state>/artifacts`` (once, under a file
lock so that workers do not race), hashed with :func:`promotion._internal.digest.tree_digest`
and compared with the digest the routing state names. A cached copy that does not match
is fetched again once; if the registry's copy does not match either, the version is
refused with :class:`DigestMismatch` and never loaded.
"""

from __future__ import annotations

import fcntl
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion._internal.digest import tree_digest


class LoadError(Exception):
    """A version could not be loaded (registry, artifact or model failure)."""


class DigestMismatch(LoadError):
    """The artifact's bytes are not the ones the routing state vouches for."""


class InputError(ValueError):
    """A request's features do not fit the model (missing, unknown type, not finite)."""


@dataclass
class LoadedModel:
    """A verified, loaded model version, ready for single-row predictions."""

    version: int
    digest: str
    booster: Any
    threshold: float
    features: tuple[str, ...]

    @property
    def key(self) -> str:
        """Names this version and artifact (``<version>-<first 16 hex of the digest>``)."""
        return f"{self.version}-{self.digest.partition(':')[2][:16]}"

    def row(self, features: Any):
        """The request's features as a 1-row float32 array in the model's feature order."""
        import numpy as np

        if not isinstance(features, dict):
            raise InputError("features: must be an object of name -> number")
        values = []
        for name in self.features:
            try:
                v = features[name]
            except KeyError:
                raise InputError(f"features.{name}: missing (version {self.version} needs it)") from None
            if type(v) is not float and (type(v) is not int):
                raise InputError(f"features.{name}: must be a number")
            values.append(v)
        arr = np.array(values, dtype=np.float32).reshape(1, -1)
        return arr

    def predict_many(self, rows):
        """Scores of a 2-D float32 array of rows."""
        return self.booster.inplace_predict(rows, validate_features=False)

    def predict(self, row) -> float:
        score = float(self.booster.inplace_predict(row, validate_features=False)[0])
        if not math.isfinite(score):
            raise ValueError(f"version {self.version} returned a non-finite score")
        return score


def _locked_fetch(registry, name: str, version: int, cache: Path, refresh: bool) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}-{version}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if refresh:
                shutil.rmtree(cache / name / str(version), ignore_errors=True)
            return registry.artifact_path(name, version, cache=cache)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch_verified(registry, name: str, version: int, digest: str, cache: Path) -> Path:
    """A local copy of the artifact whose digest is ``digest``; DigestMismatch otherwise."""
    from promotion.errors import Error

    try:
        path = _locked_fetch(registry, name, version, cache, refresh=False)
        actual = tree_digest(path)
        if actual != digest:  # a stale or damaged cache: fetch once more from the registry
            path = _locked_fetch(registry, name, version, cache, refresh=True)
            actual = tree_digest(path)
    except Error as exc:
        raise LoadError(exc.diagnostics()) from exc
    except OSError as exc:
        raise LoadError(f"version {version}: artifact unreadable ({exc})") from exc
    if actual != digest:
        raise DigestMismatch(f"digest mismatch: artifact of version {version} is {actual}, expected {digest}")
    return path


def load(registry, name: str, version: int, digest: str, cache: Path) -> LoadedModel:
    """Fetch, verify and load ``name`` version ``version``."""
    path = fetch_verified(registry, name, version, digest, cache)
    try:
        import mlflow.models
        import mlflow.xgboost

        model = mlflow.xgboost.load_model(str(path))
        metadata = mlflow.models.Model.load(str(path)).metadata or {}
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        # one row per call: a thread pool only adds wake-up latency and spinning cores
        booster.set_param({"nthread": 1})
        threshold = float(metadata["decision_threshold"])
        features = tuple(metadata.get("features") or booster.feature_names or ())
    except Exception as exc:  # mlflow/xgboost raise many kinds; report one line
        raise LoadError(f"version {version}: cannot load model ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    if not features:
        raise LoadError(f"version {version}: model metadata names no features")
    return LoadedModel(version=version, digest=digest, booster=booster, threshold=threshold, features=features)
