"""Loading one model version for serving, after checking its artifact against a digest.

The artifact is fetched from the registry into ``<state>/artifacts`` (once, under a file
lock so that workers do not race), hashed with :func:`promotion.contract.digest.tree_digest`
and compared with the digest the routing state names. A cached copy that does not match
is fetched again once; if the registry's copy does not match either, the version is
refused with :class:`DigestMismatch` and never loaded.

A verified artifact is loaded through its pyfunc flavour, whatever the model (see
:mod:`services.router.predictors`); its signature says what input it takes
(:mod:`services.router.signature`) and the MLmodel metadata may carry a
``decision_threshold`` for a binary classifier::

    model = load(registry, "fraud-detector", 7, "sha256:…", cache)
    batch = payload.parse({"features": {"amount": 12.0, "merchant": "fuel"}})
    values = model.inputs(batch)            # InputError (HTTP 400) naming the column
    answer = model.answer(batch, model.predict(values, batch))
"""

from __future__ import annotations

import fcntl
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promotion.contract.digest import tree_digest
from promotion.registry import RegistryError
from services.router import predictors
from services.router.payload import Batch, InputError
from services.router.predictors import Prediction, PredictError
from services.router.signature import Column, InputSchema

__all__ = ["LoadedModel", "LoadError", "DigestMismatch", "InputError", "PredictError", "load", "load_local",
           "from_native", "fetch_verified"]


class LoadError(Exception):
    """A version could not be loaded (registry, artifact or model failure)."""


class DigestMismatch(LoadError):
    """The artifact's bytes are not the ones the routing state vouches for."""


@dataclass
class LoadedModel:
    """A verified, loaded model version."""

    version: int
    digest: str
    schema: InputSchema
    predictor: Any
    threshold: float | None = None
    path: str | None = None          # the verified artifact directory (shadow processes load it)
    flavour: str = ""
    pyfunc: Any = field(default=None, repr=False)
    takes_params: bool = False

    @property
    def key(self) -> str:
        """Names this version and artifact (``<version>-<first 16 hex of the digest>``)."""
        return f"{self.version}-{self.digest.partition(':')[2][:16]}"

    @property
    def features(self) -> tuple[str, ...]:
        """The input columns the signature names (empty when it names none)."""
        return self.schema.names

    def inputs(self, batch: Batch) -> dict[str, list]:
        """The batch's values of this version's input columns; InputError naming the column."""
        return self.schema.check(batch, self.version)

    def predict(self, values: dict[str, list], batch: Batch) -> Prediction:
        """One prediction per row; PredictError when the output cannot be an answer."""
        predictor = self.predictor
        if batch.params:
            if not self.takes_params:
                raise InputError(f"params: version {self.version} declares no parameters in its signature")
            predictor = predictors.PyFunc(self.pyfunc)
        try:
            return predictor.predict(self.schema, values, batch)
        except PredictError as exc:
            raise PredictError(f"version {self.version} {exc}") from None

    def answer(self, batch: Batch, p: Prediction) -> dict[str, Any]:
        """The response body (see :mod:`promotion.contract.predict`)."""
        if batch.legacy:
            if p.scores is not None:
                return {"version": self.version, "score": p.scores[0], "label": p.predictions[0]}
            return {"version": self.version, "prediction": p.predictions[0]}
        body = {"version": self.version, "predictions": p.predictions}
        if p.scores is not None:
            body["scores"] = p.scores
        return body


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
    try:
        path = _locked_fetch(registry, name, version, cache, refresh=False)
        actual = tree_digest(path)
        if actual != digest:  # a stale or damaged cache: fetch once more from the registry
            path = _locked_fetch(registry, name, version, cache, refresh=True)
            actual = tree_digest(path)
    except RegistryError as exc:
        raise LoadError(exc.diagnostics()) from exc
    except OSError as exc:
        raise LoadError(f"version {version}: artifact unreadable ({exc})") from exc
    if actual != digest:
        raise DigestMismatch(f"digest mismatch: artifact of version {version} is {actual}, expected {digest}")
    return path


def _threshold(metadata: dict, version: int) -> float | None:
    raw = metadata.get("decision_threshold")
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise LoadError(f"version {version}: MLmodel metadata decision_threshold: must be a number, "
                        f"not {str(raw)[:40]!r}")
    return value


def load_local(path: str | Path, version: int, digest: str) -> LoadedModel:
    """Load a verified artifact directory through its pyfunc flavour."""
    try:
        import mlflow.pyfunc

        pyfunc_model = mlflow.pyfunc.load_model(str(path))
        meta = pyfunc_model.metadata
        metadata = meta.metadata or {}
        threshold = _threshold(metadata, version)
        schema = InputSchema.from_mlflow(meta.get_input_schema(), metadata.get("features"))
        flavours = dict(meta.flavors)
        predictor = predictors.for_model(pyfunc_model, flavours, schema, threshold)
        takes_params = meta.get_params_schema() is not None
    except LoadError:
        raise
    except Exception as exc:  # mlflow and every flavour raise many kinds; report one line
        raise LoadError(f"version {version}: cannot load model ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    flavour = next((f for f in flavours if f != "python_function"), "python_function")
    return LoadedModel(version=version, digest=digest, schema=schema, predictor=predictor, threshold=threshold,
                       path=str(path), flavour=flavour, pyfunc=pyfunc_model, takes_params=takes_params)


def load(registry, name: str, version: int, digest: str, cache: Path) -> LoadedModel:
    """Fetch, verify and load ``name`` version ``version``."""
    return load_local(fetch_verified(registry, name, version, digest, cache), version, digest)


def from_native(version: int, digest: str, model, columns: dict[str, str] | tuple[str, ...],
                flavour: str, threshold: float | None = None) -> LoadedModel:
    """A version around an in-memory native model (``columns``: name -> MLflow type, or
    names of double columns); for tests and tools that have no artifact."""
    if not isinstance(columns, dict):
        columns = {n: "double" for n in columns}
    schema = InputSchema(tuple(Column(n, t) for n, t in columns.items()))
    predictor = predictors.for_native(model, (flavour,), schema, threshold)
    if predictor is None:
        raise LoadError(f"version {version}: no adapter for a {type(model).__name__} as {flavour}")
    return LoadedModel(version=version, digest=digest, schema=schema, predictor=predictor, threshold=threshold,
                       flavour=flavour)
