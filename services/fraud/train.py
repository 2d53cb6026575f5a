"""Train the example fraud model and register a version with full lineage.

A registered version carries what the gates need: holdout metrics on a fixed holdout
shared by every version (AUC, precision, recall, FPR, F1, per-segment TPR/FPR, single-row
predict latency p95), lineage tags (data snapshot sha256, code commit, params, environment
lock digest), the artifact sha256 and a reference sample (features and scores) for drift.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from services.fraud import data

HOLDOUT_SEED = 999
VALIDATION_SEED = 998
HOLDOUT_ROWS = 40_000
VALIDATION_ROWS = 60_000
TARGET_RECALL = 0.965
REFERENCE_ROWS = 5_000


@dataclass(frozen=True)
class Spec:
    """What to train: data size and model capacity."""

    train_rows: int
    n_estimators: int
    max_depth: int
    learning_rate: float
    seed: int
    description: str = ""


SPECS = {
    "v1": Spec(30_000, 80, 3, 0.2, seed=101, description="small baseline"),
    "v2": Spec(100_000, 300, 5, 0.1, seed=102, description="more data, more capacity"),
    # Slightly better offline, but ~12x the trees: far slower per request online.
    "v3": Spec(200_000, 2000, 9, 0.03, seed=103, description="far larger model"),
    # For tests: fast to train.
    "tiny": Spec(8_000, 20, 3, 0.3, seed=104, description="tiny (tests)"),
}


def _environment_lock() -> tuple[str, str]:
    """(lock text, its digest): every installed distribution as ``name==version``."""
    from importlib import metadata

    pins = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]},
                  key=str.lower)
    text = "\n".join(pins) + "\n"
    return text, "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _code_commit() -> str:
    """The git commit of the training code, or the code's own digest outside git."""
    override = os.environ.get("PROMOTION_CODE_COMMIT")
    if override:
        return override
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "sha256:" + hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _confusion(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp = float(((pred == 1) & (y == 1)).sum())
    fp = float(((pred == 1) & (y == 0)).sum())
    fn = float(((pred == 0) & (y == 1)).sum())
    tn = float(((pred == 0) & (y == 0)).sum())
    recall = tp / (tp + fn) if tp + fn else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    return {
        "recall": recall, "precision": precision,
        "fpr": fp / (fp + tn) if fp + tn else 0.0,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }


def latency_p95_ms(booster, row: np.ndarray, reps: int = 300) -> float:
    """p95 of single-row predict latency, in milliseconds."""
    for _ in range(20):
        booster.inplace_predict(row)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        booster.inplace_predict(row)
        samples.append(time.perf_counter() - t0)
    return float(np.percentile(samples, 95) * 1000)


def evaluate(model, threshold: float, holdout) -> dict[str, float]:
    """Holdout metrics of ``model`` at ``threshold``, overall and per segment."""
    from sklearn.metrics import roc_auc_score

    X = holdout[list(data.FEATURES)]
    y = holdout[data.LABEL].to_numpy()
    scores = model.predict_proba(X)[:, 1]
    pred = (scores >= threshold).astype(int)
    metrics = {"auc": float(roc_auc_score(y, scores)), **_confusion(y, pred)}
    seg = holdout[data.SEGMENT].to_numpy()
    for s in np.unique(seg):
        m = _confusion(y[seg == s], pred[seg == s])
        metrics[f"tpr_segment_{s}"] = m["recall"]
        metrics[f"fpr_segment_{s}"] = m["fpr"]
    metrics["latency_p95_ms"] = latency_p95_ms(model.get_booster(), X.iloc[:1].to_numpy(dtype=np.float32))
    metrics["holdout_rows"] = float(len(holdout))
    return metrics


def fit(spec: Spec):
    """Train on the spec's data; returns (model, decision threshold, training frame)."""
    import xgboost as xgb

    train = data.generate(spec.train_rows, seed=spec.seed)
    model = xgb.XGBClassifier(
        n_estimators=spec.n_estimators, max_depth=spec.max_depth, learning_rate=spec.learning_rate,
        tree_method="hist", n_jobs=2, random_state=0,
    )
    model.fit(train[list(data.FEATURES)], train[data.LABEL])
    # the highest threshold that still reaches the target recall on validation data
    val = data.generate(VALIDATION_ROWS, seed=VALIDATION_SEED)
    sv = model.predict_proba(val[list(data.FEATURES)])[:, 1]
    pos = np.sort(sv[val[data.LABEL].to_numpy() == 1])
    threshold = float(pos[int(np.floor((1 - TARGET_RECALL) * len(pos)))])
    return model, threshold, train


def register(registry, spec: Spec, name: str = "fraud-detector") -> "object":
    """Train ``spec`` and register a new version of ``name`` with metrics and lineage.

    ``registry`` is a :class:`promotion.registry.Registry`. Returns its ModelVersion.
    """
    import mlflow
    import mlflow.xgboost
    from mlflow.models import infer_signature

    from promotion._internal.digest import tree_digest
    from promotion.registration import mlflow_at
    from promotion.registry import EXPERIMENT, _translated

    model, threshold, train = fit(spec)
    holdout = data.generate(HOLDOUT_ROWS, seed=HOLDOUT_SEED)
    metrics = evaluate(model, threshold, holdout)
    X = train[list(data.FEATURES)]
    lock_text, lock_digest = _environment_lock()
    params = {**asdict(spec), "decision_threshold": threshold}
    params_digest = "sha256:" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    reference = X.sample(n=min(REFERENCE_ROWS, len(X)), random_state=0).copy()
    reference["score"] = model.predict_proba(reference[list(data.FEATURES)])[:, 1]
    reference[data.SEGMENT] = train.loc[reference.index, data.SEGMENT].to_numpy()

    with _translated(f"register model {name}"), mlflow_at(registry):
        exp = mlflow.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else mlflow.create_experiment(EXPERIMENT, artifact_location=registry.artifact_root)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-{spec.description or 'train'}") as run:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "environment.lock").write_text(lock_text)
                reference.to_parquet(Path(tmp) / "reference.parquet", index=False)
                mlflow.log_artifact(str(Path(tmp) / "environment.lock"))
                mlflow.log_artifact(str(Path(tmp) / "reference.parquet"), artifact_path="reference")
            signature = infer_signature(X.head(100), model.predict_proba(X.head(100))[:, 1])
            info = mlflow.xgboost.log_model(
                model, name="model", signature=signature, pip_requirements=["xgboost"],
                metadata={"decision_threshold": threshold, "features": list(data.FEATURES)},
                registered_model_name=name,
            )
        version = int(info.registered_model_version)
        tags = {
            "data_snapshot": data.snapshot_digest(train),
            "code_commit": _code_commit(),
            "params": params_digest,
            "env_lock": lock_digest,
            "decision_threshold": repr(threshold),
            "reference_sample": "reference/reference.parquet",
            "description": spec.description,
        }
        for key, value in tags.items():
            registry.set_tag(name, version, key, value)
    registry.set_tag(name, version, "artifact_digest", tree_digest(registry.artifact_path(name, version)))
    return registry.version(name, version)
