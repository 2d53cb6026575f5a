"""The drift gate: is the world the challenger was trained for the world it will serve?

Compares, per feature, the challenger's reference sample (a run artifact logged at
training, named by the version's ``reference_sample`` tag) with the recent production
window named in the environment file (``drift.production_window``: a directory of the
service's inference logs, or a ``.parquet``/``.csv``/``.jsonl`` dataset), and names the
worst features.

Features and their kinds: the challenger's signature inputs; a ColSpec of type
``string``, ``boolean`` or ``binary`` is *categorical*, ``integer``, ``long``, ``float``,
``double`` or ``datetime`` is *numeric* (a tensor or object input is skipped, and said
so). Without a signature: the reference sample's columns, categorical when their dtype is
object, string, category or bool. ``categorical: [name, ...]`` in the policy makes a
numeric-coded column (a merchant code) categorical.

- numeric features: PSI on the reference's quantile bins, and the two-sample
  Kolmogorov-Smirnov test; blocks at PSI >= ``psi_max`` or KS p-value < ``ks_p_min``;
- categorical features: PSI over the reference's categories plus an ``(unseen)`` bucket
  for values the reference never had (the ``max_categories`` most frequent, the rest in
  one ``(other)`` bucket), and Pearson's chi-square test of homogeneity instead of KS;
  blocks at PSI >= ``psi_max`` or chi-square p-value < ``chi2_p_min``.

Checks: ``drift.psi`` (every feature), ``drift.ks_p`` (when there are numeric features),
``drift.chi2_p`` (when there are categorical ones), ``drift.prediction_psi``.

Prediction drift: the champion and the challenger score the same window (any flavour,
see :mod:`promotion.gates._scoring`) and the PSI of the challenger's scores against the
champion's blocks at ``prediction_psi_max``: probabilities on ``bins`` equal-width bins of
[0, 1], other numeric outputs (a regressor's) on the champion's quantile bins, labels as
categories. With no champion, the challenger's window scores are compared with its own
reference scores (a ``score`` column of the reference sample). The models are loaded and
run in one isolated process (:func:`promotion.gates._scoring.score_isolated`: no tokens in
its environment), never in the gate's; a model the artifact gate finds unsafe is not
loaded at all: the check cannot decide, and blocks.

No window configured, an unreadable window, or fewer than ``min_rows`` rows: the gate
cannot decide, so it blocks.

Policy section (``gates.drift``), with its defaults::

    psi_max: 0.2
    ks_p_min: 0.01
    chi2_p_min: 0.01
    prediction_psi_max: 0.2
    bins: 10
    min_rows: 500
    report_worst: 5
    max_categories: 50
    categorical: []

Usage (the statistics alone)::

    from promotion.gates.drift import feature_drift, categorical_drift
    result = feature_drift([ref["amount"].to_numpy()], [prod["amount"].to_numpy()])
    print(result.psi[0], result.ks_p[0])
    cats = categorical_drift([ref["merchant"]], [prod["merchant"]])
    print(cats.psi[0], cats.chi2_p[0], cats.unseen[0])
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import Error
from promotion.gates.base import Check, GateContext, GateResult, GateSpec

__all__ = ["DriftGate", "DriftSettings", "feature_drift", "categorical_drift", "psi", "score_psi", "read_window",
           "WindowError"]

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
        from promotion.contract.inference_log import read_inference_log

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



_STATS = ("feature_drift", "categorical_drift", "psi", "score_psi", "FeatureDrift", "CategoryDrift")


def __getattr__(name: str):
    # the statistics need numpy and scipy: imported on first use, not when a policy is loaded
    if name in _STATS:
        from promotion.gates import _stats

        return getattr(_stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class DriftSettings:
    """``gates.drift``."""

    psi_max: float = 0.2
    ks_p_min: float = 0.01
    chi2_p_min: float = 0.01
    prediction_psi_max: float = 0.2
    bins: int = 10
    min_rows: int = 500
    report_worst: int = 5
    max_categories: int = 50
    categorical: tuple[str, ...] = ()
    timeout_s: float = 300.0

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "DriftSettings":
        d = cls()
        return cls(float(m.get("psi_max", d.psi_max)), float(m.get("ks_p_min", d.ks_p_min)),
                   float(m.get("chi2_p_min", d.chi2_p_min)), float(m.get("prediction_psi_max", d.prediction_psi_max)),
                   int(m.get("bins", d.bins)), int(m.get("min_rows", d.min_rows)),
                   int(m.get("report_worst", d.report_worst)), int(m.get("max_categories", d.max_categories)),
                   tuple(m.get("categorical") or ()), float(m.get("timeout_s", d.timeout_s)))


_P = {"type": "number", "minimum": 0, "maximum": 1}


class DriftGate(GateSpec):
    name = "drift"
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "psi_max": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "ks_p_min": _P,
        "chi2_p_min": _P,
        "prediction_psi_max": {"type": "number", "exclusiveMinimum": 0, "maximum": 10},
        "bins": {"type": "integer", "minimum": 2, "maximum": 1000},
        "min_rows": {"type": "integer", "minimum": 1},
        "report_worst": {"type": "integer", "minimum": 1, "maximum": 100},
        "max_categories": {"type": "integer", "minimum": 1, "maximum": 10000},
        "categorical": {"type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1}},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
    }}
    defaults = {"psi_max": 0.2, "ks_p_min": 0.01, "chi2_p_min": 0.01, "prediction_psi_max": 0.2, "bins": 10,
                "min_rows": 500, "report_worst": 5, "max_categories": 50, "categorical": [],
                "timeout_s": 300}
    Settings = DriftSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        import numpy as np
        import pandas as pd

        from promotion.gates._stats import categorical_drift, feature_drift

        s = self.Settings.from_mapping(settings)
        env_file, env_line = ctx.env_line("drift", "production_window")
        pol = lambda *k: ctx.policy_line("gates", "drift", *k)  # noqa: E731

        if not ctx.env.production_window:
            return GateResult(self.name, (Check.block(
                "drift.window", f"cannot decide: {ctx.env.display} names no drift.production_window",
                f">= {s.min_rows} rows", env_file, env_line),))
        where = Path(ctx.env.production_window)
        where = where if where.is_absolute() else ctx.project.root / where
        window = read_window(where)
        if len(window) < s.min_rows:
            return GateResult(self.name, (Check.block(
                "drift.window", f"cannot decide: the production window has {len(window)} rows; at least {s.min_rows} are needed",
                f">= {s.min_rows} rows", env_file, env_line),))

        mv = ctx.challenger()
        reference = self._reference(ctx, mv)
        kinds, skipped = self._features(ctx, reference, s.categorical)
        features = list(kinds)
        missing = [f for f in features if f not in window.columns]
        if missing:
            return GateResult(self.name, (Check.block(
                "drift.features", f"cannot decide: the production window lacks feature(s) {', '.join(missing)}",
                "all features", env_file, env_line),))
        if not features:
            return GateResult(self.name, (Check.block(
                "drift.features", f"cannot decide: v{mv.version} has no feature drift can compare"
                + (f" (skipped: {', '.join(skipped)})" if skipped else ""), "all features", env_file, env_line),))
        numeric = [f for f in features if kinds[f] == "numeric"]
        categorical = [f for f in features if kinds[f] == "categorical"]

        def column(frame, name):
            values = frame[name]
            if pd.api.types.is_datetime64_any_dtype(values):
                values = values.astype("int64").where(values.notna())
            return pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

        rows: dict[str, dict[str, Any]] = {}
        if numeric:
            fd = feature_drift([column(reference, f) for f in numeric], [column(window, f) for f in numeric], bins=s.bins)
            for i, f in enumerate(numeric):
                rows[f] = {"feature": f, "kind": "numeric", "psi": round(float(fd.psi[i]), 6),
                           "ks_statistic": round(float(fd.ks_d[i]), 6), "ks_p": float(fd.ks_p[i])}
        if categorical:
            cd = categorical_drift([reference[f] for f in categorical], [window[f] for f in categorical],
                                   max_categories=s.max_categories)
            for i, f in enumerate(categorical):
                rows[f] = {"feature": f, "kind": "categorical", "psi": round(float(cd.psi[i]), 6),
                           "chi2": round(float(cd.chi2[i]), 6), "chi2_p": float(cd.chi2_p[i]),
                           "unseen_share": round(float(cd.unseen[i]), 6), "categories": int(cd.n_categories[i])}
        table = [rows[f] for f in features]
        n = len(window)
        by_psi = sorted(features, key=lambda f: -rows[f]["psi"])
        psi_bad = [f for f in by_psi if rows[f]["psi"] >= s.psi_max]
        worst_psi = ", ".join(f"{f} {rows[f]['psi']:.3f}" + _unseen(rows[f]) for f in by_psi[:s.report_worst])
        checks = [Check.judge("drift.psi", round(rows[by_psi[0]]["psi"], 4), f"< {s.psi_max}", not psi_bad,
                              (f"PSI >= {s.psi_max} for {', '.join(psi_bad)}; " if psi_bad else "")
                              + f"worst: {worst_psi} ({n} production rows)", *pol("psi_max"))]
        test_bad: list[str] = []
        for group, key, limit, label in ((numeric, "ks_p", s.ks_p_min, "KS"), (categorical, "chi2_p", s.chi2_p_min, "chi-square")):
            if not group:
                continue
            by_p = sorted(group, key=lambda f: rows[f][key])
            bad = [f for f in by_p if rows[f][key] < limit]
            test_bad += bad
            lowest = ", ".join(f"{f} {rows[f][key]:.2g}" for f in by_p[:s.report_worst])
            checks.append(Check.judge(f"drift.{key}", float(rows[by_p[0]][key]), f">= {limit}", not bad,
                                      (f"{label} p < {limit} for {', '.join(bad)}; " if bad else "") + f"lowest: {lowest}",
                                      *pol(f"{key}_min")))
        disagreement: dict = {}  # filled when both versions were scored on the same rows
        checks.append(self._prediction_drift(ctx, mv, reference, window, features, s, pol("prediction_psi_max"),
                                             disagreement))
        if skipped:
            ctx.notes.append(f"drift: skipped input(s) that are neither numeric nor categorical: {', '.join(skipped)}")
        details = {"rows": n, "reference_rows": len(reference), "features": table,
                   "blocking_features": sorted(set(psi_bad) | set(test_bad)),
                   **({"prediction_disagreement": disagreement} if disagreement else {})}
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

    def _features(self, ctx: GateContext, reference, categorical: tuple[str, ...]) -> tuple[dict[str, str], list[str]]:
        """({feature: "numeric" | "categorical"}, [skipped inputs]) in signature order."""
        import pandas as pd

        from promotion.gates.schema import input_kinds

        try:
            kinds = input_kinds(ctx.artifact(ctx.env.model.version))
        except Error:
            kinds = None
        if kinds:
            present = {f: k for f, k in kinds.items() if f in reference.columns}
            kinds = present or kinds
        else:
            kinds = {}
            for c in reference.columns:
                if c in NOT_FEATURES:
                    continue
                dtype = reference[c].dtype
                numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
                kinds[str(c)] = "numeric" if numeric or pd.api.types.is_datetime64_any_dtype(dtype) else "categorical"
        for f in categorical:
            if f in kinds:
                kinds[f] = "categorical"
        skipped = [f for f, k in kinds.items() if k not in ("numeric", "categorical")]
        return {f: k for f, k in kinds.items() if k in ("numeric", "categorical")}, skipped

    def _prediction_drift(self, ctx: GateContext, mv, reference, window, features, s: DriftSettings, where,
                          disagreement: dict | None = None) -> Check:
        import numpy as np

        from promotion.gates._stats import categorical_drift, psi, score_psi

        name, limit = "drift.prediction_psi", s.prediction_psi_max
        sample = window[features].iloc[-MAX_SCORED_ROWS:]
        champion = ctx.champion()
        if champion is not None and not ctx.challenger_is_champion() and champion.version == mv.version:
            # a model switch to a version of the same number: scores are keyed by version
            return Check.block(name, f"cannot decide: the champion is {champion.name} v{champion.version}, the same "
                                     f"version number as the challenger {mv.name} v{mv.version}", f"< {limit}", *where)
        versions = [mv.version] + ([champion.version] if champion is not None and not ctx.challenger_is_champion() else [])
        scores = _scores(ctx, versions, window.iloc[-MAX_SCORED_ROWS:], s.timeout_s)
        challenger = scores[mv.version]
        if len(versions) == 2:
            base, label = scores[champion.version], f"v{champion.version} (champion)"
            if disagreement is not None:  # what a shadow of the challenger should disagree on (rollout.shadow)
                from promotion.analysis.score_shift import prediction_disagreement

                measured = prediction_disagreement(challenger, base, (_threshold(mv), _threshold(champion)))
                if measured:
                    disagreement.update(measured, challenger=mv.version, champion=champion.version)
        elif "score" in reference.columns:
            from promotion.gates._scoring import Scores

            values = reference["score"].to_numpy(dtype=float)
            finite = values[np.isfinite(values)]
            in_unit = bool(finite.size) and finite.min() >= 0 and finite.max() <= 1
            base = Scores(values, "probability" if in_unit and challenger.kind == "probability" else "numeric")
            label = f"v{mv.version}'s reference scores"
        else:
            return Check.block(name, "cannot decide: no champion and no reference scores to compare with", f"< {limit}", *where)
        if "label" in (base.kind, challenger.kind):
            value, how = float(categorical_drift([base.values], [challenger.values], s.max_categories).psi[0]), "labels"
        elif base.kind == challenger.kind == "probability":
            value, how = score_psi(base.values, challenger.values, s.bins), f"{s.bins} equal-width score bins"
        else:
            value = psi(np.asarray(base.values, dtype=float), np.asarray(challenger.values, dtype=float), s.bins)
            how = f"{s.bins} quantile bins of the baseline's outputs"
        return Check.judge(name, round(value, 4), f"< {limit}", value < limit,
                           f"v{mv.version} scores vs {label} on {len(sample)} production rows ({how})", *where)


def _threshold(mv) -> float | None:
    """The version's ``decision_threshold`` tag (the router's class cut-off), if usable."""
    try:
        value = float((getattr(mv, "tags", None) or {}).get("decision_threshold"))
    except (TypeError, ValueError):
        return None
    return value if 0 <= value <= 1 else None


def _unseen(row: Mapping[str, Any]) -> str:
    share = row.get("unseen_share")
    return f" ({share:.1%} unseen)" if share else ""


def _scores(ctx: GateContext, versions: list[int], window, timeout_s: float) -> dict:
    """Scores of each version on ``window``, computed in one isolated process; never for an
    artifact the artifact gate finds unsafe."""
    from promotion.gates import _scoring
    from promotion.gates.artifact import require_safe
    from promotion.gates.schema import input_kinds

    models = {}
    for version in versions:
        path = ctx.artifact(version)
        require_safe(ctx, version)
        columns = list(input_kinds(path) or {}) or [c for c in window.columns if c not in NOT_FEATURES]
        missing = [c for c in columns if c not in window.columns]
        if missing:
            raise WindowError(f"the production window lacks v{version}'s input(s) {', '.join(missing)}")
        models[version] = (path, columns)
    needed = list(dict.fromkeys(c for _, cols in models.values() for c in cols))
    try:
        from promotion._internal.paths import state_dir

        # this machine's local state (never the repository's): judging the same versions on
        # the same window again reads the scores back
        cache = state_dir(ctx.project.root) / "cache" / "scores"
        return _scoring.score_isolated(models, window[needed], timeout_s, cache=cache)
    except _scoring.IsolatedError as exc:
        raise WindowError(f"cannot score the window: {exc.message}") from exc
