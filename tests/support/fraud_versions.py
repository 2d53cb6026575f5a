"""Model versions for tests and benches, including ones that fail for real.

- :func:`register_tiny`: a normal fraud-detector version (the ``tiny`` spec, ~1 s).
- :func:`register_extra_feature`: a version trained with one more feature than the
  champion uses (``session_risk``). Requests that do not send it fail on that version
  only, with error kind ``input`` - a genuine schema regression, not a flag.
- :func:`tamper_artifact`: change the bytes of a registered version's model file in the
  registry's artifact store, so its registered ``artifact_digest`` no longer matches -
  what a replaced or corrupted artifact looks like to the service.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

EXTRA_FEATURE = "session_risk"


def register_tiny(registry, name: str = "fraud-detector"):
    """Train and register the ``tiny`` spec; returns its ModelVersion (with ``.digest``)."""
    from services.fraud import train

    return train.register(registry, train.SPECS["tiny"], name=name)


def register_extra_feature(registry, name: str = "fraud-detector", extra: str = EXTRA_FEATURE, rows: int = 8000):
    """Register a version whose model needs ``extra`` besides the usual features."""
    import mlflow
    import mlflow.xgboost
    import xgboost as xgb

    from promotion._internal.digest import tree_digest
    from promotion.registration import mlflow_at
    from promotion.registry import EXPERIMENT, _translated
    from services.fraud import data

    frame = data.generate(rows, seed=105)
    rng = np.random.default_rng(7)
    frame[extra] = rng.random(len(frame))
    features = [*data.FEATURES, extra]
    model = xgb.XGBClassifier(n_estimators=20, max_depth=3, learning_rate=0.3, tree_method="hist",
                              n_jobs=2, random_state=0)
    model.fit(frame[features], frame[data.LABEL])
    with _translated(f"register model {name}"), mlflow_at(registry):
        exp = mlflow.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else mlflow.create_experiment(EXPERIMENT, artifact_location=registry.artifact_root)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-extra-feature"):
            info = mlflow.xgboost.log_model(
                model, name="model", pip_requirements=["xgboost"],
                metadata={"decision_threshold": 0.5, "features": features},
                registered_model_name=name)
    version = int(info.registered_model_version)
    with tempfile.TemporaryDirectory() as tmp:
        registry.set_tag(name, version, "artifact_digest", tree_digest(registry.artifact_path(name, version, cache=tmp)))
    return registry.version(name, version)


def artifact_store_path(registry, name: str, version: int) -> Path:
    """Where the registry keeps the version's model files (local file stores only)."""
    mv = registry.client.get_model_version(name, str(version))
    location = None
    model_id = getattr(mv, "model_id", None)
    if model_id:
        location = registry.client.get_logged_model(model_id).artifact_location
    if location is None:
        location = registry.client.get_model_version_download_uri(name, str(version))
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{location}: not a local artifact store")
    return Path(unquote(parsed.path))


def tamper_artifact(registry, name: str, version: int) -> Path:
    """Append a byte to the version's model weights in the store; returns the file changed."""
    store = artifact_store_path(registry, name, version)
    candidates = sorted(p for p in store.iterdir() if p.suffix in (".ubj", ".json", ".xgb", ".bin"))
    target = candidates[0] if candidates else store / "MLmodel"
    with open(target, "ab") as fh:
        fh.write(b"\0")
    return target
