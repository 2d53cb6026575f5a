"""The drift gate: is the world the challenger was trained for the world it will serve?

Compares, per feature, the challenger's reference sample (a run artifact logged at
training, named by the version's ``reference_sample`` tag) with the recent production
window named in the environment file (``drift.production_window``: a directory of the
service's inference logs, or a ``.parquet``/``.csv``/``.jsonl`` dataset). Blocks at
PSI >= ``psi_max`` or KS p-value < ``ks_p_min`` and names the worst features.

Prediction drift: the champion and the challenger score the same window; the PSI of the
challenger's scores against the champion's (``bins`` equal-width score bins on [0, 1])
blocks at ``prediction_psi_max``. With no
champion, the challenger's window scores are compared with its own reference scores.

No window configured, an unreadable window, or fewer than ``min_rows`` rows: the gate
cannot decide, so it blocks.

Usage (the statistics alone)::

    from promotion.gates.drift import feature_drift
    result = feature_drift([ref["amount"].to_numpy()], [prod["amount"].to_numpy()])
    print(result.psi[0], result.ks_p[0])
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import Error
from promotion.gates._stats import FeatureDrift, feature_drift, psi, score_psi
from promotion.gates.base import Check, GateContext, GateResult

__all__ = ["DriftGate", "feature_drift", "psi", "score_psi", "read_window", "FeatureDrift"]

MAX_WINDOW_ROWS = 1_000_000     # the most recent rows are kept
MAX_SCORED_ROWS = 200_000       # prediction drift scores at most this many rows per model
NOT_FEATURES = {"score", "segment", "is_fraud", "label", "version", "ts", "time", "timestamp", "request_id"}


class WindowError(Error):
    """The production window cannot be read."""


def read_window(path: Path):
    """The production window as a DataFrame of feature columns (plus whatever else it holds)."""
    import pandas as pd

    try:
        if path.is_dir():
            frame = _read_log_dir(path)
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        elif path.suffix in (".jsonl", ".json"):
            frame = _read_jsonl([path])
        elif not path.exists():
            raise WindowError(f"production window {path} does not exist")
        else:
            raise WindowError(f"production window {path}: unsupported format (use a log directory, .parquet, .csv or .jsonl)")
    except Error:
        raise
    except Exception as exc:
        raise WindowError(f"production window {path}: cannot read ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    if len(frame) > MAX_WINDOW_ROWS:
        frame = frame.iloc[-MAX_WINDOW_ROWS:]
    return frame


def _read_log_dir(path: Path):
    """The service's sampled inference log (its state dir or its ``inference/`` dir), or a
    directory of ``*.jsonl`` rows with a ``features`` mapping."""
    if path.name == "inference" or (path / "inference").is_dir():
        from services.router.inference_log import read_inference_log

        state = path.parent if path.name == "inference" else path
        frame = read_inference_log(state, include_shadow=False)  # mirrored rows were not served
        if frame.empty:
            raise WindowError(f"production window {path}: the inference log holds no requests yet")
        return frame
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise WindowError(f"production window {path}: no *.jsonl inference logs in it")
    return _read_jsonl(files)


def _read_jsonl(files):
    import pandas as pd

    parts = [pd.read_json(f, lines=True, dtype=False) for f in files if f.stat().st_size]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return _normalise(frame)


def _normalise(data):
    """Inference log rows ``{"features": {...}, "score": s, "version": v}`` -> flat columns."""
    import pandas as pd

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(list(data))
    if "features" in frame.columns:
        feats = pd.DataFrame(frame["features"].tolist(), index=frame.index)
        frame = pd.concat([feats, frame.drop(columns=["features"])], axis=1)
    return frame


class DriftGate:
    name = "drift"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        import numpy as np
        import pandas as pd

        env_file, env_line = ctx.env_line("drift", "production_window")
        pol = lambda *k: ctx.policy_line("gates", "drift", *k)  # noqa: E731
        psi_max, ks_p_min = float(settings["psi_max"]), float(settings["ks_p_min"])
        pred_max, bins = float(settings["prediction_psi_max"]), int(settings["bins"])
        min_rows, worst_n = int(settings["min_rows"]), int(settings["report_worst"])

        if not ctx.env.production_window:
            return GateResult(self.name, (Check.block(
                "drift.window", f"cannot decide: {ctx.env.display} names no drift.production_window",
                f">= {min_rows} rows", env_file, env_line),))
        where = Path(ctx.env.production_window)
        where = where if where.is_absolute() else ctx.project.root / where
        window = read_window(where)
        if len(window) < min_rows:
            return GateResult(self.name, (Check.block(
                "drift.window", f"cannot decide: the production window has {len(window)} rows; at least {min_rows} are needed",
                f">= {min_rows} rows", env_file, env_line),))

        mv = ctx.challenger()
        reference = self._reference(ctx, mv)
        features = self._features(ctx, reference)
        missing = [f for f in features if f not in window.columns]
        if missing:
            return GateResult(self.name, (Check.block(
                "drift.features", f"cannot decide: the production window lacks feature(s) {', '.join(missing)}",
                "all features", env_file, env_line),))

        def column(frame, name):
            return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

        fd = feature_drift([column(reference, f) for f in features], [column(window, f) for f in features], bins=bins)
        table = [{"feature": f, "psi": round(float(fd.psi[i]), 6), "ks_statistic": round(float(fd.ks_d[i]), 6),
                  "ks_p": float(fd.ks_p[i])} for i, f in enumerate(features)]
        by_psi = sorted(range(len(features)), key=lambda i: -fd.psi[i])
        by_p = sorted(range(len(features)), key=lambda i: fd.ks_p[i])
        psi_bad = [features[i] for i in by_psi if fd.psi[i] >= psi_max]
        ks_bad = [features[i] for i in by_p if fd.ks_p[i] < ks_p_min]
        worst_psi = ", ".join(f"{features[i]} {fd.psi[i]:.3f}" for i in by_psi[:worst_n])
        worst_p = ", ".join(f"{features[i]} {fd.ks_p[i]:.2g}" for i in by_p[:worst_n])
        n = len(window)
        checks = [
            Check.judge("drift.psi", round(float(fd.psi[by_psi[0]]), 4), f"< {psi_max}", not psi_bad,
                        (f"PSI >= {psi_max} for {', '.join(psi_bad)}; " if psi_bad else "")
                        + f"worst: {worst_psi} ({n} production rows)", *pol("psi_max")),
            Check.judge("drift.ks_p", float(fd.ks_p[by_p[0]]), f">= {ks_p_min}", not ks_bad,
                        (f"KS p < {ks_p_min} for {', '.join(ks_bad)}; " if ks_bad else "")
                        + f"lowest: {worst_p}", *pol("ks_p_min")),
        ]
        checks.append(self._prediction_drift(ctx, mv, reference, window, features, pred_max, bins, pol("prediction_psi_max")))
        details = {"rows": n, "reference_rows": len(reference), "features": table,
                   "blocking_features": sorted(set(psi_bad) | set(ks_bad))}
        return GateResult(self.name, tuple(checks), details)

    def _reference(self, ctx: GateContext, mv):
        import pandas as pd

        rel = mv.tags.get("reference_sample")
        if not rel or not mv.run_id:
            raise WindowError(f"v{mv.version} has no reference sample (tag reference_sample) to compare with")
        with tempfile.TemporaryDirectory(prefix="promotion-ref-") as tmp:
            path = ctx.registry.download_run_artifact(mv.run_id, rel, tmp)
            try:
                return pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path)
            except Exception as exc:
                raise WindowError(f"v{mv.version} reference sample {rel}: cannot read ({exc.__class__.__name__})") from exc

    def _features(self, ctx: GateContext, reference) -> list[str]:
        from promotion.gates.schema import signature_columns

        try:
            sig = signature_columns(ctx.artifact(ctx.env.model.version))
        except Error:
            sig = None
        if sig is not None and sig[0] and all(not k.startswith("[") for k in sig[0]):
            return [f for f in sig[0] if f in reference.columns] or list(sig[0])
        return [c for c in reference.columns if c not in NOT_FEATURES]

    def _prediction_drift(self, ctx: GateContext, mv, reference, window, features, limit, bins, where) -> Check:
        name = "drift.prediction_psi"
        sample = window[features].iloc[-MAX_SCORED_ROWS:]
        challenger_scores = _score(ctx, mv.version, sample)
        champion = ctx.champion()
        if champion is not None and champion.version != mv.version:
            base, label = _score(ctx, champion.version, sample), f"v{champion.version} (champion)"
        elif "score" in reference.columns:
            base, label = reference["score"].to_numpy(dtype=float), f"v{mv.version}'s reference scores"
        else:
            return Check.block(name, "cannot decide: no champion and no reference scores to compare with", f"< {limit}", *where)
        value = score_psi(base, challenger_scores, bins)
        return Check.judge(name, round(value, 4), f"< {limit}", value < limit,
                           f"v{mv.version} scores vs {label} on {len(sample)} production rows", *where)


def _score(ctx: GateContext, version: int, frame):
    """Positive-class scores of ``version`` on ``frame`` (vectorised, one predict call)."""
    import numpy as np

    key = ("model", version)
    if key not in ctx._cache:
        import mlflow.xgboost

        try:
            ctx._cache[key] = mlflow.xgboost.load_model(str(ctx.artifact(version)))
        except Error:
            raise
        except Exception as exc:
            raise WindowError(f"cannot load v{version} to score the window ({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    model = ctx._cache[key]
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(frame)[:, 1], dtype=float)
    import xgboost as xgb

    return np.asarray(model.predict(xgb.DMatrix(frame)), dtype=float)
