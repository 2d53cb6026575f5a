"""Scoring any MLflow model on a frame, for the gates that must run it (drift, cost).

A model is loaded through its pyfunc flavour. When the native model behind it
(``PyFuncModel.get_raw_model()``) is a binary classifier with ``predict_proba``, its
positive-class probability is the score (pyfunc's ``predict`` returns only classes);
otherwise pyfunc's ``predict`` is the output: a custom model's ``score`` column when it
has one, else its predictions (numbers for a regressor, labels for a classifier without
probabilities).

Input comes as the production window or a reference sample holds it: categorical columns
as strings. A LightGBM model trained on pandas categoricals is given them with the
categories it was trained on; pyfunc models get strings, as a JSON request gives them.

Loading a model runs whatever code it brings (a custom model, a pickle), so the gates
never load one in their own process, which holds the CI job's tokens: :func:`run_isolated`
starts a fresh ``python -I`` with an environment of ``PATH``, ``LANG`` and a temporary
``HOME`` only (no ``GITHUB_TOKEN``, no ``MLFLOW_TRACKING_*`` credentials), one thread per
BLAS/OpenMP pool, a time limit, and reads back only JSON and non-pickled numpy arrays.

Usage::

    model = load(path)                      # in the process that may run the model's code
    scores = score(model, frame)
    scores.kind, scores.values              # "probability" | "numeric" | "label", one value per row

    scores = score_isolated({7: path7, 8: path8}, frame, timeout_s=300)   # from a gate
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promotion.errors import Error

# what a process that runs a model's code may see of ours
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ")

_SCORE_PROBE = r"""
import json, sys
import numpy as np
import pandas as pd
from promotion.gates import _scoring

out, frame_path, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
frame = pd.read_parquet(frame_path)
kinds = {}
for key, (model_dir, columns) in jobs.items():
    s = _scoring.score(_scoring.load(model_dir), frame[columns])
    values = s.values.astype(str) if s.kind == "label" else s.values.astype("float64")
    np.save(f"{out}/{key}.npy", values, allow_pickle=False)
    kinds[key] = s.kind
print(json.dumps(kinds))
"""


class IsolatedError(Error):
    """A model could not be loaded or run in its isolated process."""


@dataclass
class Loaded:
    """A loaded model: its pyfunc, and the native model behind it when there is one."""

    pyfunc: Any
    raw: Any = None

    @property
    def binary_proba(self) -> bool:
        classes = getattr(self.raw, "classes_", None)
        return callable(getattr(self.raw, "predict_proba", None)) and classes is not None and len(classes) == 2


@dataclass
class Scores:
    """One value per row and what they are."""

    values: Any          # numpy array
    kind: str            # "probability" (in [0, 1]), "numeric" or "label"


def load(path: str | Path) -> Loaded:
    """The model in directory ``path`` (its pyfunc flavour, plus the native model if any)."""
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(path))
    try:
        raw = pyfunc.get_raw_model()
    except Exception:  # noqa: BLE001 - a custom PythonModel has no native model: pyfunc it is
        raw = None
    return Loaded(pyfunc, raw)


def as_trained(raw: Any, frame):
    """``frame`` with string columns cast to the pandas categories a LightGBM model was fitted on."""
    import pandas as pd

    cats = getattr(getattr(raw, "booster_", None), "pandas_categorical", None)
    if not cats:
        return frame
    order = [str(n) for n in (getattr(raw, "feature_name_", None) or frame.columns)]
    textual = [c for c in order if c in frame.columns and not pd.api.types.is_numeric_dtype(frame[c])]
    if len(textual) != len(cats):
        return frame
    return frame.assign(**{c: frame[c].astype(pd.CategoricalDtype(list(k))) for c, k in zip(textual, cats)})


def strings(frame):
    """``frame`` with pandas categoricals as plain strings (what a JSON request carries)."""
    import pandas as pd

    cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    if not cats:
        return frame
    out = frame.astype({c: object for c in cats})
    for c in cats:
        out[c] = out[c].where(out[c].isna(), out[c].astype(str))
    return out


def predict_once(model: Loaded, frame):
    """The raw output for ``frame``: probabilities of a binary classifier, else pyfunc's ``predict``."""
    if model.binary_proba:
        return model.raw.predict_proba(as_trained(model.raw, frame))
    return model.pyfunc.predict(strings(frame))


def score(model: Loaded, frame) -> Scores:
    """The model's scores on ``frame`` (one predict call)."""
    import numpy as np
    import pandas as pd

    if model.binary_proba:
        proba = np.asarray(model.raw.predict_proba(as_trained(model.raw, frame)), dtype=float)
        return Scores(proba[:, 1] if proba.ndim == 2 else proba, "probability")
    out = model.pyfunc.predict(strings(frame))
    if isinstance(out, pd.DataFrame):
        column = "score" if "score" in out.columns else ("prediction" if "prediction" in out.columns else out.columns[0])
        out = out[column]
    values = np.asarray(out)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"the model returned an output of shape {values.shape}, not one value per row")
    if values.dtype.kind in "biuf":
        values = values.astype(float)
        finite = values[np.isfinite(values)]
        is_score = column_is_score(out) and finite.size and finite.min() >= 0.0 and finite.max() <= 1.0
        return Scores(values, "probability" if is_score else "numeric")
    return Scores(values.astype(object), "label")


def column_is_score(out) -> bool:
    return getattr(out, "name", None) == "score"


def run_isolated(script: str, args: list[str], timeout_s: float, what: str) -> str:
    """Run ``script`` in a fresh, isolated interpreter (see the module docstring); its stdout.

    Fails with :class:`IsolatedError` naming ``what`` on a timeout or a non-zero exit.
    """
    with tempfile.TemporaryDirectory(prefix="promotion-isolated-") as home:
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(HOME=home, TMPDIR=home, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false", PYTHONWARNINGS="ignore")
        try:
            proc = subprocess.run([sys.executable, "-I", "-c", script, *args], capture_output=True, text=True,
                                  timeout=timeout_s, cwd=home, env=env)
        except subprocess.TimeoutExpired as exc:
            raise IsolatedError(f"{what}: took longer than {timeout_s:g} s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise IsolatedError(f"{what}: failed ({last})")
    return proc.stdout


def score_isolated(models: dict[int, tuple[Path, list[str]]], frame, timeout_s: float,
                   cache: Path | None = None) -> dict[int, Scores]:
    """Scores of each ``{version: (model directory, input columns)}`` on ``frame``, computed in
    one isolated process (the models load there, not here).

    ``cache`` (a folder in this machine's local state): the scores are kept under a key of
    the artifacts' bytes, the input columns, the rows and this module's scoring code, so
    judging the same versions on the same window again (the gate after an approval, the
    rollout's re-run) reads them back instead of loading and running both models again.
    """
    key = _cache_key(models, frame) if cache is not None else None
    if key is not None:
        hit = cache / key
        if (hit / "kinds.json").is_file():
            try:
                return _read_scores(hit, json.loads((hit / "kinds.json").read_text()), models, len(frame), "cached scores")
            except IsolatedError:
                pass  # unreadable: score again and replace it
    with tempfile.TemporaryDirectory(prefix="promotion-scores-") as tmp:
        frame.reset_index(drop=True).to_parquet(Path(tmp) / "frame.parquet", index=False)
        jobs = {str(v): [str(path), list(cols)] for v, (path, cols) in models.items()}
        what = "scoring " + ", ".join(f"v{v}" for v in models)
        out = run_isolated(_SCORE_PROBE, [tmp, str(Path(tmp) / "frame.parquet"), json.dumps(jobs)], timeout_s, what)
        try:
            kinds = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise IsolatedError(f"{what}: no usable result ({str(exc)[:200]})") from exc
        result = _read_scores(Path(tmp), kinds, models, len(frame), what)
        if key is not None:
            _keep(Path(tmp), kinds, models, cache / key)
    return result


def _read_scores(folder: Path, kinds: Any, models, rows: int, what: str) -> dict[int, Scores]:
    import numpy as np

    try:
        result = {}
        for v in models:
            values = np.load(folder / f"{v}.npy", allow_pickle=False)  # never unpickle what a model wrote
            kind = kinds[str(v)]
            if kind not in ("probability", "numeric", "label") or values.ndim != 1 or len(values) != rows:
                raise ValueError(f"v{v} returned {values.shape} values of kind {kind!r} for {rows} rows")
            result[v] = Scores(values.astype(object) if kind == "label" else values, kind)
    except (ValueError, KeyError, IndexError, TypeError, OSError) as exc:
        raise IsolatedError(f"{what}: no usable result ({str(exc)[:200]})") from exc
    return result


def _cache_key(models, frame) -> str | None:
    """sha256 of what the scores depend on, or None when it cannot be told."""
    import hashlib

    import pandas as pd

    from promotion._internal.digest import tree_digest

    h = hashlib.sha256(_SCORE_PROBE.encode())
    h.update(Path(__file__).read_bytes())  # the scoring code itself
    try:
        for v, (path, cols) in sorted(models.items()):
            h.update(json.dumps([v, tree_digest(path), list(cols)]).encode())
        h.update(json.dumps([list(map(str, frame.columns)), [str(t) for t in frame.dtypes]]).encode())
        h.update(pd.util.hash_pandas_object(frame.reset_index(drop=True), index=True).values.tobytes())
    except (OSError, TypeError, ValueError):
        return None
    return h.hexdigest()


def _keep(src: Path, kinds: Any, models, dest: Path) -> None:
    """Keep the scores (best effort: a cache that cannot be written is only slower)."""
    import shutil

    try:
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        for v in models:
            shutil.copyfile(src / f"{v}.npy", tmp / f"{v}.npy")
        (tmp / "kinds.json").write_text(json.dumps(kinds))
        os.replace(tmp, dest) if not dest.exists() else shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass
