"""Register a model version that carries everything the gates need, in one call.

Usage, at the end of a training script (any scikit-learn pipeline, XGBoost, LightGBM, a
custom :class:`mlflow.pyfunc.PythonModel`, or the URI of a model already logged)::

    import promotion

    mv = promotion.register(pipeline, X_holdout, y_holdout, name="churn",
                            segment="region", reference=X_train, params={"C": 1.0})
    print(mv.version, mv.digest)

What the version gets (run metrics, run artifacts, version tags):

- holdout metrics (:mod:`promotion._internal.holdout`): classification ``recall``,
  ``precision``, ``fpr``, ``f1``, ``accuracy`` at ``threshold``, ``auc``, ``log_loss``;
  regression ``rmse``, ``mae``, ``r2``; per segment ``tpr_<segment>_<value>`` and
  ``fpr_<segment>_<value>`` (regression: ``rmse_...``, ``mae_...``); ``latency_p95_ms`` of
  single-row predictions through the logged pyfunc model; ``holdout_rows``;
- the model with its signature (inferred on the holdout, strings and categoricals
  included) and pinned ``pip_requirements`` (no slow requirement inference);
- ``reference/reference.parquet``: up to ``reference_rows`` rows of ``reference`` (default
  the holdout) with the model's ``score`` (classifiers) or ``prediction`` (regression),
  for the drift gate; ``environment.lock`` (or the ``env_lock`` file given);
- tags ``data_snapshot``, ``code_commit``, ``params``, ``env_lock``, ``artifact_digest``
  (the lineage gate's), ``reference_sample``, ``task``, ``flavor``, ``segment``,
  ``decision_threshold``.

It refuses (:class:`RegisterError`, exit 2) what the lineage gate would refuse, before
anything is registered: training code with uncommitted changes or outside git, data
whose digest cannot be computed. A version whose tags or digest cannot be written is
deleted again, so a half-registered version never reaches the registry's list.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from promotion._internal import flavors, holdout, provenance, scoring
from promotion._internal.provenance import RegisterError

__all__ = ["register", "RegisterError", "LINEAGE_TAGS", "REFERENCE_SAMPLE", "mlflow_at"]

LINEAGE_TAGS = ("data_snapshot", "code_commit", "params", "env_lock", "artifact_digest")
REFERENCE_SAMPLE = "reference/reference.parquet"
OWN_TAGS = (*LINEAGE_TAGS, "reference_sample", "task", "flavor", "registered_by", "segment", "decision_threshold",
            "description")
SIGNATURE_ROWS = 200
LATENCY_ROWS = 50


def register(model: Any, X_holdout, y_holdout, *, name: str, segment: Any = None, reference=None,
             task: str | None = None, flavor: str | None = None, threshold: float = 0.5, positive: Any = None,
             params: Mapping[str, Any] | None = None, train=None, data_snapshot: str | None = None,
             code_commit: str | None = None, code_dir: str | Path | None = None, env_lock: str | Path | None = None,
             metrics: Mapping[str, float] | None = None, tags: Mapping[str, str] | None = None,
             pip_requirements: list[str] | None = None, registry=None, experiment: str | None = None,
             reference_rows: int = 5000, latency_reps: int = 100, description: str | None = None,
             **log_model_kwargs):
    """Log ``model`` with what every gate needs and register it as a new version of ``name``.

    ``X_holdout`` is a DataFrame with named columns, ``y_holdout`` its labels or targets.
    ``segment``: a column of ``X_holdout`` (its name) or a Series/array of one value per
    holdout row (named by the Series' name, else ``segment``) for per-segment rates.
    ``reference``: training-time features for drift (default the holdout). ``task``:
    ``classification`` or ``regression`` (default: from the model, else from ``y``).
    ``train``: the training data (a frame, or ``(X, y)``), hashed into ``data_snapshot``
    with the holdout unless ``data_snapshot`` names your dataset's version. ``code_commit``
    overrides ``git rev-parse HEAD`` of the caller's repository (``code_dir``, default the
    calling script's folder, else the working directory). ``metrics`` and ``tags`` add
    your own. Other keyword arguments go to ``mlflow.<flavour>.log_model``.

    Returns the registered :class:`promotion.registry.ModelVersion`.
    """
    import pandas as pd

    if not isinstance(name, str) or not name.strip():
        raise RegisterError("name=: the registered model's name is required")
    X = _holdout_frame(X_holdout)
    y = _targets(y_holdout, len(X))
    seg_name, seg_values = _segment(segment, X)
    if task is not None and task not in holdout.TASKS:
        raise RegisterError(f"task={task!r}: must be one of {', '.join(holdout.TASKS)}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise RegisterError(f"threshold={threshold!r}: must be a number between 0 and 1 (the positive class's score)")
    if reference is not None and not isinstance(reference, pd.DataFrame):
        raise RegisterError("reference=: must be a pandas DataFrame of features (training data)")
    clash = sorted(set(map(str, tags or {})) & set(OWN_TAGS))
    if clash:
        raise RegisterError(f"tags=: {', '.join(clash)} are set by register itself; name your tags differently")
    kind = flavors.detect(model, flavor)

    # lineage before anything is written: a version the lineage gate would refuse is never created
    commit = code_commit.strip() if isinstance(code_commit, str) and code_commit.strip() else _commit(code_dir)
    snapshot = data_snapshot or provenance.frame_digest(*_train_frames(train), X, y)
    lock_name, lock_text, lock_digest = provenance.environment_lock(env_lock)

    registry = registry or _default_registry()
    with mlflow_at(registry):
        logged = _Logged(registry, kind, model, name, experiment, description)
        try:
            version = logged.run(X, y, task, threshold, positive, seg_name, seg_values, reference, reference_rows,
                                 latency_reps, params, metrics, pip_requirements, log_model_kwargs,
                                 lock_name, lock_text)
        except BaseException:
            logged.close(failed=True)
            raise
        logged.close(failed=False)
        all_tags = {
            "data_snapshot": snapshot, "code_commit": commit, "params": logged.params_digest,
            "env_lock": lock_digest, "reference_sample": REFERENCE_SAMPLE, "task": logged.task,
            "flavor": logged.flavor, "registered_by": "promotion.register",
            **({"segment": seg_name} if seg_name else {}),
            **({"decision_threshold": repr(float(threshold))} if logged.task == holdout.CLASSIFICATION else {}),
            **({"description": description} if description else {}),
        }
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        try:
            for key, value in all_tags.items():
                registry.set_tag(name, version, key, value)
            with tempfile.TemporaryDirectory(prefix="promotion-register-") as tmp:
                digest = _fresh_digest(registry, name, version, tmp)
            registry.set_tag(name, version, "artifact_digest", digest)
            mv = registry.version(name, version)
            missing = [t for t in LINEAGE_TAGS if not str(mv.tags.get(t) or "").strip()]
            if missing:
                raise RegisterError(f"model {name} version {version}: lineage tag(s) {', '.join(missing)} did not stick")
        except BaseException:
            _delete_version(registry, name, version)
            raise
    return mv


def _fresh_digest(registry, name: str, version: int, cache: str) -> str:
    """The artifact digest of a freshly downloaded copy (never a stale cache)."""
    from promotion._internal.digest import tree_digest

    return tree_digest(registry.artifact_path(name, version, cache=cache))


class _Logged:
    """One registration's MLflow run: logs the model, metrics and artifacts, registers."""

    def __init__(self, registry, kind: str, model: Any, name: str, experiment: str | None, description: str | None):
        self.registry, self.kind, self.model, self.name = registry, kind, model, name
        self.experiment, self.description = experiment, description
        self.started = False
        self.flavor = kind
        self.task = ""
        self.params_digest = ""

    def close(self, failed: bool) -> None:
        import mlflow

        if self.started:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
            self.started = False

    def _run_id(self) -> str:
        import mlflow

        from promotion.registry import EXPERIMENT

        active = mlflow.active_run()
        if active is not None:  # the team's own run: log into it and leave it open
            return active.info.run_id
        exp_name = self.experiment or EXPERIMENT
        exp = mlflow.get_experiment_by_name(exp_name)
        exp_id = exp.experiment_id if exp else mlflow.create_experiment(exp_name, artifact_location=self.registry.artifact_root)
        run = mlflow.start_run(experiment_id=exp_id, run_name=f"{self.name}-{self.description or 'register'}")
        self.started = True
        return run.info.run_id

    def run(self, X, y, task, threshold, positive, seg_name, seg_values, reference, reference_rows, latency_reps,
            params, extra_metrics, pip_requirements, log_model_kwargs, lock_name, lock_text) -> int:
        import mlflow
        from mlflow.models import Model, infer_signature, set_signature

        head = X.head(SIGNATURE_ROWS)
        native = self.model
        with _mlflow_errors(f"register model {self.name}"):
            if self.kind == "uri":
                uri = self.model
                logged = Model.load(uri)
                native = flavors.load_native(uri, logged.flavors)
                self.flavor = next((f for f in ("sklearn", "xgboost", "lightgbm") if f in logged.flavors), "pyfunc")
                scorer = (flavors.native_scorer(self.flavor, native) if native is not None else None) \
                    or flavors.pyfunc_scorer(_load_pyfunc(uri))
                run_id = _source_run(self.registry, uri)
                if logged.signature is None:
                    with scoring.guard(self.name):
                        out = scorer.predict(head)
                    set_signature(uri, infer_signature(head, out))
                model_params = provenance.model_params(native)
                self.task = scoring.task_of(task, self.flavor, native, scorer, y)
            else:
                scorer = flavors.native_scorer(self.kind, self.model)
                run_id = self._run_id()
                with scoring.guard(self.name):
                    out = scorer.predict(head) if scorer is not None else None
                signature = infer_signature(head, out) if out is not None else infer_signature(head)
                self.task = scoring.task_of(task, self.kind, self.model, scorer, y)
                metadata = {"task": self.task, "features": [str(c) for c in X.columns],
                            **({"decision_threshold": float(threshold)} if self.task == holdout.CLASSIFICATION else {})}
                info = flavors.log_model(self.kind, self.model, signature=signature, metadata=metadata,
                                         pip_requirements=pip_requirements or flavors.pip_requirements(self.kind, self.model),
                                         **log_model_kwargs)
                uri = info.model_uri
                if scorer is None:  # a custom model: measured through its logged pyfunc, as served
                    scorer = flavors.pyfunc_scorer(_load_pyfunc(uri))
                    with scoring.guard(self.name):
                        out = scorer.predict(head)
                    set_signature(uri, infer_signature(head, out))
                model_params = provenance.model_params(self.model)
            with scoring.guard(self.name):
                metrics, scores = scoring.measure(self.task, scorer, X, y, threshold, positive, seg_name, seg_values)
            # what the router runs per request: the score of a classifier that has one, else predict
            calls = [scorer.proba if self.task == holdout.CLASSIFICATION and scorer.proba is not None else scorer.predict]
            rows = [X.iloc[[i]] for i in range(min(len(X), LATENCY_ROWS))]
            with scoring.guard(self.name):
                metrics["latency_p95_ms"] = holdout.latency_p95_ms(calls, rows, reps=latency_reps)
            metrics["holdout_rows"] = float(len(X))
            for key, value in (extra_metrics or {}).items():
                if key in metrics:
                    raise RegisterError(f"metrics=: {key!r} is computed on the holdout; name your metric differently")
                metrics[str(key)] = float(value)
            all_params = {**model_params, **dict(params or {}), "task": self.task, "flavor": self.flavor}
            if self.task == holdout.CLASSIFICATION:
                all_params["decision_threshold"] = float(threshold)
            self.params_digest = provenance.params_digest(all_params)
            with scoring.guard(self.name, "reference="):
                ref = scoring.reference_frame(reference, X, seg_name, seg_values, reference_rows, self.task, scorer,
                                              scores, y)
            self._log(run_id, metrics, all_params, ref, lock_name, lock_text)
            mv = mlflow.register_model(uri, self.name)
        return int(mv.version)

    def _log(self, run_id, metrics, params, ref, lock_name, lock_text) -> None:
        import time

        from mlflow.entities import Metric, Param

        client = self.registry.client
        now = int(time.time() * 1000)
        existing = client.get_run(run_id).data.params
        # a resumed or caller's run may hold params already; MLflow refuses to change them
        loggable = {k: v for k, v in provenance.loggable_params(params).items() if k not in existing}
        items = [Param(k, v) for k, v in loggable.items()]
        for i in range(0, max(len(items), 1), 100):
            client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()] if i == 0 else [],
                             params=items[i:i + 100])
        with tempfile.TemporaryDirectory(prefix="promotion-register-") as tmp:
            (Path(tmp) / lock_name).write_text(lock_text)
            client.log_artifact(run_id, str(Path(tmp) / lock_name))
            path = Path(tmp) / Path(REFERENCE_SAMPLE).name
            try:
                ref.to_parquet(path, index=False)
            except Exception as exc:  # mixed-type object columns and friends
                raise RegisterError(f"reference sample: cannot be written as parquet ({exc.__class__.__name__}: "
                                    f"{str(exc)[:200]}); give reference= columns of one type each") from exc
            client.log_artifact(run_id, str(path), artifact_path=str(Path(REFERENCE_SAMPLE).parent))


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's and the store's failures as RegistryError; the package's own errors as they are."""
    from promotion.errors import Error
    from promotion.registry import _translated

    try:
        yield
    except Error:
        raise
    except Exception as exc:
        with _translated(what):
            raise exc


def _holdout_frame(X):
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        raise RegisterError("X_holdout: must be a pandas DataFrame with named columns (the signature, the drift "
                            "gate and the router use the names)")
    if len(X) < 2:
        raise RegisterError(f"X_holdout: has {len(X)} row(s); a holdout needs at least 2")
    if not X.index.is_unique:
        X = X.reset_index(drop=True)
    return X


def _targets(y, n: int):
    import numpy as np
    import pandas as pd

    arr = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != n:
        raise RegisterError(f"y_holdout: must hold one value per row of X_holdout ({n}); got shape {arr.shape}")
    if pd.isna(pd.Series(arr)).any():
        raise RegisterError("y_holdout: holds missing values; metrics on the holdout would be undefined")
    return arr


def _segment(segment, X):
    """(segment attribute name, one value per holdout row) or (None, None)."""
    import numpy as np
    import pandas as pd

    if segment is None:
        return None, None
    if isinstance(segment, str):
        if segment not in X.columns:
            raise RegisterError(f"segment={segment!r}: not a column of X_holdout (pass the values instead: "
                                f"segment=pd.Series(values, name={segment!r}))")
        return segment, X[segment].to_numpy()
    values = np.asarray(segment.to_numpy() if isinstance(segment, pd.Series) else segment)
    if values.ndim != 1 or len(values) != len(X):
        raise RegisterError(f"segment=: must hold one value per row of X_holdout ({len(X)})")
    seg_name = str(getattr(segment, "name", None) or "segment")
    return holdout.segment_key(seg_name), values


def _train_frames(train) -> tuple:
    if train is None:
        return ()
    return tuple(train) if isinstance(train, (tuple, list)) else (train,)


def _caller_file() -> Path | None:
    """The first source file on the stack outside this package: the training script."""
    here = Path(__file__).resolve().parent
    for frame in inspect.stack(context=0)[1:]:
        path = Path(frame.filename)
        if not path.is_file():
            continue
        resolved = path.resolve()
        if here in resolved.parents:
            continue
        return resolved
    return None


def _commit(code_dir) -> str:
    from promotion._internal.git import Git

    if code_dir is not None:
        return provenance.code_commit(Path(code_dir))
    caller = _caller_file()
    if caller is not None and Git(caller.parent).is_repo():
        return provenance.code_commit(caller.parent, caller)
    return provenance.code_commit(Path.cwd())


def _default_registry():
    """Where MLflow is pointed (an active run's, $MLFLOW_TRACKING_URI, ``mlflow.set_tracking_uri``),
    else the project's embedded store."""
    import mlflow

    from promotion.config import Project
    from promotion.errors import ConfigError
    from promotion.registry import Registry

    try:
        root = Project.discover(Path.cwd()).root
    except ConfigError:
        root = Path.cwd()
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return Registry.for_root(root)
    try:
        from mlflow.tracking._tracking_service.utils import is_tracking_uri_set
    except ImportError:  # pragma: no cover - older MLflow
        is_tracking_uri_set = lambda: False  # noqa: E731
    if mlflow.active_run() is not None or is_tracking_uri_set():
        return Registry(mlflow.get_tracking_uri(), root)
    return Registry(None, root)


@contextmanager
def mlflow_at(registry) -> Iterator[None]:
    """Point MLflow's fluent API (and $MLFLOW_TRACKING_URI) at ``registry`` for the block, then
    put back exactly what was there."""
    import mlflow

    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    registry.check_credentials()
    # set_tracking_uri also exports $MLFLOW_TRACKING_URI; put back exactly what was there,
    # or a later `promotion` call in this process would talk to MLflow's default store
    variables = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    before = (getattr(tracking_utils, "_tracking_uri", None), getattr(registry_utils, "_registry_uri", None))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        registry_utils._registry_uri = before[1]
        for key, value in variables.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _load_pyfunc(uri: str):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(uri)


def _source_run(registry, uri: str) -> str:
    """The MLflow run that logged the model at ``uri`` (its metrics go there)."""
    import mlflow

    run_id = None
    if uri.startswith("runs:/"):
        run_id = uri[len("runs:/"):].split("/")[0]
    elif uri.startswith("models:/m-"):
        run_id = mlflow.get_logged_model(uri[len("models:/"):].split("/")[0]).source_run_id
    elif uri.startswith("models:/"):
        ref = uri[len("models:/"):]
        model_name, sep, rest = ref.partition("@")
        if sep:
            mv = registry.client.get_model_version_by_alias(model_name, rest)
        else:
            model_name, _, version = ref.partition("/")
            mv = registry.client.get_model_version(model_name, version)
        run_id = mv.run_id
    if not run_id:
        raise RegisterError(f"model {uri}: names no MLflow run to log the holdout metrics in; pass a runs:/ or "
                            "models:/ URI of a model logged in a run, or the model object itself")
    return run_id


def _delete_version(registry, name: str, version: int) -> None:
    try:
        registry.client.delete_model_version(name, str(version))
    except Exception:  # noqa: BLE001, S110 - the failure that led here is the one to report
        pass
