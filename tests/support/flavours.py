"""Models of several flavours in a real MLflow registry, logged the way their teams log them.

:func:`flavour_registry` registers, once per test session and base folder, versions of
one registered model (``byom``), each with ``mlflow.<flavour>.log_model``, a signature
(``infer_signature``) and ``pip_requirements`` (no requirement inference), then tags the
artifact digest as the product's registration does:

====  ===========  ===============================================================
 v    kind         model
====  ===========  ===============================================================
 1    sklearn      Pipeline: StandardScaler + OneHotEncoder(merchant, a string) -> LogisticRegression
 2    lightgbm     LGBMClassifier, merchant as a pandas categorical
 3    xgboost      XGBClassifier on the numeric columns
 4    custom       a ``mlflow.pyfunc.PythonModel`` (models from code) answering prediction + score
 5    regression   Pipeline: OneHotEncoder(merchant) + numeric -> Ridge
 6    tampered     like v1; its stored artifact is then altered (the digest no longer matches)
 7    shadow       like v1, another seed: a shadow candidate
====  ===========  ===============================================================

For rollouts, :func:`register_baseline`, :func:`register_custom` (e.g. :data:`BROKEN_MODEL`)
and :func:`register_regression` add versions; :func:`holdout_metrics` and
:func:`ready_for_gates` log what a training job logs for the gates.

Each :class:`Flavour` keeps the trained model (or the pyfunc model, for the custom one)
so tests compare the router's answers with the model's own ``predict``.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

NAME = "byom"
MERCHANTS = ("grocery", "fuel", "travel", "online")
COLUMNS = ("amount", "hour", "merchant")

CUSTOM_MODEL = textwrap.dedent('''
    import mlflow
    import pandas as pd


    class AmountRule(mlflow.pyfunc.PythonModel):
        """A hand-written rule: the score grows with the amount, travel counts double."""

        def predict(self, context, model_input, params=None):
            weight = model_input["merchant"].map({"travel": 2.0}).fillna(1.0)
            score = (model_input["amount"].clip(0, 100) * weight / 200.0).clip(0, 1)
            return pd.DataFrame({"prediction": (score >= 0.5).astype(int), "score": score})


    mlflow.models.set_model(AmountRule())
''')

# the same rule with a serving bug: every row with an odd hour raises (half of real traffic)
BROKEN_MODEL = textwrap.dedent('''
    import mlflow
    import pandas as pd


    class AmountRuleOddHours(mlflow.pyfunc.PythonModel):
        """The amount rule, broken: it cannot score a row whose hour is odd."""

        def predict(self, context, model_input, params=None):
            if (model_input["hour"] % 2 == 1).any():
                raise ValueError("hour must be even")
            weight = model_input["merchant"].map({"travel": 2.0}).fillna(1.0)
            score = (model_input["amount"].clip(0, 100) * weight / 200.0).clip(0, 1)
            return pd.DataFrame({"prediction": (score >= 0.5).astype(int), "score": score})


    mlflow.models.set_model(AmountRuleOddHours())
''')


@dataclass
class Flavour:
    version: int
    kind: str
    model: object            # the native model (the pyfunc model for the custom one)
    columns: tuple[str, ...]
    digest: str
    classifier: bool = True

    def expected(self, frame):
        """(predictions, scores or None) as the model itself gives them for ``frame``."""
        X = frame[list(self.columns)]
        if self.kind == "lightgbm":
            X = X.assign(merchant=X["merchant"].astype(_merchant_dtype()))
        if self.kind == "custom":
            out = self.model.predict(X)
            return out["prediction"].tolist(), out["score"].tolist()
        preds = self.model.predict(X).tolist()
        scores = self.model.predict_proba(X)[:, 1].tolist() if self.classifier else None
        return preds, scores


@dataclass
class FlavourRegistry:
    uri: str
    registry: object
    flavours: dict[str, Flavour]
    digests: dict[int, str] = field(default_factory=dict)

    def body(self, routes: dict[int, float], shadow: dict | None = None) -> dict:
        return {"routes": {str(v): w for v, w in routes.items()},
                "digests": {str(v): self.digests[v] for v in routes}, "shadow": shadow}


def _merchant_dtype():
    import pandas as pd

    return pd.CategoricalDtype(list(MERCHANTS))


def frame(n: int, seed: int):
    """Transactions: amount (double), hour (long), merchant (string), and a label."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"amount": np.round(rng.gamma(2.0, 20.0, n), 2), "hour": rng.integers(0, 24, n),
                       "merchant": rng.choice(MERCHANTS, n)})
    risk = df["amount"] / 80 + (df["merchant"] == "travel") * 0.8 + (df["hour"] < 6) * 0.5
    df["label"] = (risk + rng.normal(0, 0.3, n) > 1.2).astype(int)
    df["spend_next"] = df["amount"] * 0.7 + df["hour"] * 0.3 + (df["merchant"] == "fuel") * 5.0
    return df


def payloads(df, columns) -> dict[str, dict]:
    """The same rows in each of MLflow's scoring formats."""
    cols = list(columns)
    records = df[cols].to_dict("records")
    return {
        "dataframe_split": {"dataframe_split": {"columns": cols, "data": df[cols].values.tolist()}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": records},
        "inputs": {"inputs": {c: df[c].tolist() for c in cols}},
    }


def _sklearn_pipeline(seed: int, df):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), ["amount", "hour"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"])])
    sample = df.sample(frac=0.8, random_state=seed)
    return Pipeline([("pre", pre), ("clf", LogisticRegression(C=0.5 + seed % 3))]).fit(
        sample[list(COLUMNS)], sample["label"])


def _log(registry, kind: str, log, name: str = NAME):
    """Run ``log()`` inside a run of the product's experiment and tag the new version's
    artifact digest; returns the version."""
    import mlflow

    from promotion.registration import mlflow_at
    from promotion.registry import EXPERIMENT, _translated

    with _translated(f"register {name} ({kind})"), mlflow_at(registry):
        exp = mlflow.get_experiment_by_name(EXPERIMENT)
        exp_id = exp.experiment_id if exp else mlflow.create_experiment(EXPERIMENT,
                                                                         artifact_location=registry.artifact_root)
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{name}-{kind}"):
            info = log()
    version = int(info.registered_model_version)
    from promotion.contract.digest import tree_digest

    with tempfile.TemporaryDirectory() as tmp:
        registry.set_tag(name, version, "artifact_digest",
                         tree_digest(registry.artifact_path(name, version, cache=tmp)))
    return version


def register_pipeline(registry, seed: int, name: str = NAME):
    """Train and register a scikit-learn pipeline with a string column (v1's kind); its ModelVersion."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    df = frame(3000, seed=5)
    X = df[list(COLUMNS)]
    model = _sklearn_pipeline(seed, df)
    sig = infer_signature(X.head(100), model.predict(X.head(100)))
    v = _log(registry, "sklearn", lambda: mlflow.sklearn.log_model(
        model, name="model", signature=sig, pip_requirements=["scikit-learn"], registered_model_name=name),
        name=name)
    return registry.version(name, v)


def _register_all(registry, work: Path) -> dict[str, Flavour]:
    import lightgbm
    import mlflow.lightgbm
    import mlflow.pyfunc
    import mlflow.sklearn
    import mlflow.xgboost
    import xgboost
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = frame(3000, seed=5)
    X = df[list(COLUMNS)]
    numeric = ["amount", "hour"]
    out: dict[str, Flavour] = {}

    def sklearn_version(kind: str, model):
        sig = infer_signature(X.head(100), model.predict(X.head(100)))
        v = _log(registry, kind, lambda: mlflow.sklearn.log_model(
            model, name="model", signature=sig, pip_requirements=["scikit-learn"], registered_model_name=NAME))
        return v

    pipe = _sklearn_pipeline(1, df)
    out["sklearn"] = Flavour(sklearn_version("sklearn", pipe), "sklearn", pipe, COLUMNS, "")

    Xc = X.assign(merchant=X["merchant"].astype(_merchant_dtype()))
    lgbm = lightgbm.LGBMClassifier(n_estimators=30, num_leaves=8, verbose=-1, random_state=0).fit(Xc, df["label"])
    sig = infer_signature(Xc.head(100), lgbm.predict(Xc.head(100)))
    v = _log(registry, "lightgbm", lambda: mlflow.lightgbm.log_model(
        lgbm, name="model", signature=sig, pip_requirements=["lightgbm"], registered_model_name=NAME))
    out["lightgbm"] = Flavour(v, "lightgbm", lgbm, COLUMNS, "")

    xgbm = xgboost.XGBClassifier(n_estimators=25, max_depth=3, n_jobs=1, random_state=0).fit(X[numeric], df["label"])
    sig = infer_signature(X[numeric].head(100), xgbm.predict(X[numeric].head(100)))
    v = _log(registry, "xgboost", lambda: mlflow.xgboost.log_model(
        xgbm, name="model", signature=sig, pip_requirements=["xgboost"], registered_model_name=NAME))
    out["xgboost"] = Flavour(v, "xgboost", xgbm, tuple(numeric), "")

    code = work / "amount_rule.py"
    code.write_text(CUSTOM_MODEL)
    custom_cols = ("amount", "merchant")
    sample_out = {"prediction": np.zeros(5, dtype=int), "score": np.zeros(5)}
    import pandas as pd

    sig = infer_signature(X[list(custom_cols)].head(5), pd.DataFrame(sample_out))
    v = _log(registry, "custom", lambda: mlflow.pyfunc.log_model(
        name="model", python_model=str(code), signature=sig, pip_requirements=["mlflow", "pandas"],
        registered_model_name=NAME))
    local = mlflow.pyfunc.load_model(str(registry.artifact_path(NAME, v, cache=work / "local")))
    out["custom"] = Flavour(v, "custom", local, custom_cols, "")

    reg = Pipeline([("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"])],
                                              remainder="passthrough")), ("ridge", Ridge(alpha=1.0))])
    reg.fit(X, df["spend_next"])
    out["regression"] = Flavour(sklearn_version("regression", reg), "regression", reg, COLUMNS, "", classifier=False)

    tampered = _sklearn_pipeline(2, df)
    out["tampered"] = Flavour(sklearn_version("tampered", tampered), "sklearn", tampered, COLUMNS, "")
    shadow = _sklearn_pipeline(3, df)
    out["shadow"] = Flavour(sklearn_version("shadow", shadow), "sklearn", shadow, COLUMNS, "")
    for f in out.values():
        f.digest = registry.version(NAME, f.version).digest
    from tests.support.fraud_versions import artifact_store_path

    store = artifact_store_path(registry, NAME, out["tampered"].version)
    weights = next(p for p in sorted(store.iterdir()) if p.suffix in (".pkl", ".skops", ".joblib"))
    with open(weights, "ab") as fh:
        fh.write(b"\0")
    return out


def register_baseline(registry, name: str = NAME) -> Flavour:
    """A weak scikit-learn classifier on ``hour`` alone: the first deployment a better
    flavour replaces."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    df = frame(3000, seed=5)
    model = LogisticRegression().fit(df[["hour"]], df["label"])
    sig = infer_signature(df[["hour"]].head(100), model.predict(df[["hour"]].head(100)))
    v = _log(registry, "baseline", lambda: mlflow.sklearn.log_model(
        model, name="model", signature=sig, pip_requirements=["scikit-learn"], registered_model_name=name), name=name)
    return Flavour(v, "sklearn", model, ("hour",), registry.version(name, v).digest)


def register_custom(registry, code: str, work: Path, kind: str = "custom", name: str = NAME,
                    columns: tuple[str, ...] = ("amount", "hour", "merchant")) -> Flavour:
    """A custom ``PythonModel`` from ``code`` (models from code), answering prediction + score."""
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.models import infer_signature

    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{kind}_model.py"
    path.write_text(code)
    X = frame(5, seed=5)[list(columns)].assign(hour=0)
    sig = infer_signature(X, pd.DataFrame({"prediction": np.zeros(5, dtype=int), "score": np.zeros(5)}))
    v = _log(registry, kind, lambda: mlflow.pyfunc.log_model(
        name="model", python_model=str(path), signature=sig, pip_requirements=["mlflow", "pandas"],
        registered_model_name=name), name=name)
    local = mlflow.pyfunc.load_model(str(registry.artifact_path(name, v, cache=work / f"local-{v}")))
    return Flavour(v, "custom", local, columns, registry.version(name, v).digest)


def register_regression(registry, name: str, merchant: bool) -> Flavour:
    """A Ridge regression of ``spend_next``: on the numeric columns alone, or with the
    merchant one-hot encoded (the better model)."""
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = frame(3000, seed=5)
    columns = COLUMNS if merchant else ("amount", "hour")
    X = df[list(columns)]
    if merchant:
        model = Pipeline([("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant"])],
                                                    remainder="passthrough")), ("ridge", Ridge(alpha=1.0))])
    else:
        model = Ridge(alpha=1.0)
    model.fit(X, df["spend_next"])
    sig = infer_signature(X.head(100), model.predict(X.head(100)))
    v = _log(registry, "regression", lambda: mlflow.sklearn.log_model(
        model, name="model", signature=sig, pip_requirements=["scikit-learn"], registered_model_name=name), name=name)
    return Flavour(v, "regression", model, columns, registry.version(name, v).digest, classifier=False)


def holdout_metrics(flavour: Flavour, n: int = 2000, seed: int = 99) -> dict[str, float]:
    """What a training job logs: the model's metrics on a fixed holdout (auc, recall and
    log loss for a classifier; rmse and mae for a regression)."""
    from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, recall_score, roc_auc_score

    hold = frame(n, seed=seed)
    preds, scores = flavour.expected(hold)
    if not flavour.classifier:
        return {"rmse": float(mean_squared_error(hold["spend_next"], preds) ** 0.5),
                "mae": float(mean_absolute_error(hold["spend_next"], preds))}
    return {"auc": float(roc_auc_score(hold["label"], scores)), "recall": float(recall_score(hold["label"], preds)),
            "log_loss": float(log_loss(hold["label"], np.clip(scores, 1e-6, 1 - 1e-6)))}


def ready_for_gates(registry, name: str, version: int, metrics: dict[str, float]) -> None:
    """Log ``metrics`` on the version's run and tag its lineage (data snapshot, code commit,
    params, environment lock), as ``promotion.register`` does for a team's training job."""
    from mlflow.tracking import MlflowClient

    from promotion.registry import _translated

    mv = registry.version(name, version)
    with _translated(f"log metrics of {name} v{version}"):
        client = MlflowClient(tracking_uri=registry.uri)
        for key, value in metrics.items():
            client.log_metric(mv.run_id, key, value)
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag(name, version, key, "sha256:" + f"{version:x}".rjust(64, "0"))


_cache: dict[Path, FlavourRegistry] = {}


def flavour_registry(base: Path) -> FlavourRegistry:
    """The registry of the flavours above under ``base`` (registered once per session)."""
    base = Path(base)
    if base in _cache:
        return _cache[base]
    from promotion.registry import Registry

    base.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("PROMOTION_STATE", "MLFLOW_TRACKING_URI")}
    os.environ["PROMOTION_STATE"] = str(base / "state")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        reg = Registry(root=base)
        flavours = _register_all(reg, base)
    finally:
        for key, value in saved.items():  # later tests must not inherit this registry
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result = FlavourRegistry(uri=reg.uri, registry=reg, flavours=flavours,
                             digests={f.version: f.digest for f in flavours.values()})
    _cache[base] = result
    return result
