"""The cost gate: what serving the challenger costs, against a budget and against the champion.

Measured for the challenger and the champion alike, each in a fresh Python process (the
project's interpreter, isolated mode, an environment with no tokens or registry
credentials in it, ``OMP_NUM_THREADS=1`` as the router scores one row at a time):

- ``artifact_mb``: the size of the model directory (MiB);
- ``load_memory_mb``: the resident memory the loaded model holds (MiB): RSS after
  ``mlflow.pyfunc.load_model`` minus RSS before it, with mlflow and pandas already
  imported (what the model and the libraries it pulls in take);
- ``cpu_ms_per_prediction``: CPU time (``time.process_time``, every thread) of one
  single-row prediction, over ``predictions`` rows of the challenger's reference sample
  (its input columns; the model's input example when it logged no sample), the fastest
  of ``rounds`` rounds after a warm-up: the model's own scoring path
  (:mod:`promotion.gates._scoring`: ``predict_proba`` of a binary classifier, else pyfunc's
  ``predict``);
- ``cost_per_million``: ``cpu_ms_per_prediction`` turned into the price of a million
  predictions at ``price_per_cpu_hour``.

Checks: ``cost.<metric>`` for each metric in ``budget`` (an absolute maximum), and
``cost.<metric> vs champion`` for each in ``max_ratio`` (challenger at most r x the
champion; no champion, or the challenger already is it: passes and says so). A model
the artifact gate finds unsafe is never loaded (:func:`promotion.gates.artifact.require_safe`);
a load that fails or outlasts ``timeout_s`` cannot decide, and blocks.

Policy section (``gates.cost``), with its defaults (a budget is a maximum: the policy's
values replace these one by one)::

    price_per_cpu_hour: 0.05
    predictions: 200
    rounds: 3
    timeout_s: 300
    budget: {artifact_mb: 1024, load_memory_mb: 4096, cpu_ms_per_prediction: 50, cost_per_million: 1.0}
    max_ratio: {cpu_ms_per_prediction: 1.5, load_memory_mb: 1.5}
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import Error
from promotion.gates.base import Check, GateContext, GateResult, GateSpec

METRICS = ("artifact_mb", "load_memory_mb", "cpu_ms_per_prediction", "cost_per_million")
UNITS = {"artifact_mb": "MiB", "load_memory_mb": "MiB", "cpu_ms_per_prediction": "ms", "cost_per_million": ""}

PROBE = r"""
import gc, json, sys, time
import psutil
import pandas as pd
import mlflow.pyfunc
from promotion.gates import _scoring

path, sample, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
frame = pd.read_parquet(sample)
proc = psutil.Process()
gc.collect()
before = proc.memory_info().rss
model = _scoring.load(path)
gc.collect()
after = proc.memory_info().rss
rows = [frame.iloc[i:i + 1] for i in range(min(n, len(frame)))]
for row in rows[:5]:
    _scoring.predict_once(model, row)
best = float("inf")
for _ in range(rounds):
    t0 = time.process_time()
    for row in rows:
        _scoring.predict_once(model, row)
    best = min(best, time.process_time() - t0)
print(json.dumps({"load_bytes": after - before, "cpu_s": best / len(rows), "rows": len(rows)}))
"""


class CostError(Error):
    """A version's cost could not be measured."""


@dataclass(frozen=True)
class CostSettings:
    """``gates.cost``."""

    price_per_cpu_hour: float
    predictions: int
    rounds: int
    timeout_s: float
    budget: dict[str, float]
    max_ratio: dict[str, float]

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "CostSettings":
        return cls(float(m.get("price_per_cpu_hour", 0.05)), int(m.get("predictions", 200)), int(m.get("rounds", 3)),
                   float(m.get("timeout_s", 300)), {k: float(v) for k, v in (m.get("budget") or {}).items()},
                   {k: float(v) for k, v in (m.get("max_ratio") or {}).items()})


def _per_metric(minimum: dict) -> dict:
    return {"type": "object", "additionalProperties": False,
            "properties": {k: {"type": "number", **minimum} for k in METRICS}}


def directory_mb(path: Path) -> float:
    """Size of the files under ``path`` in MiB (links not followed)."""
    total = 0
    for base, _, names in os.walk(path):
        for name in names:
            p = Path(base) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total / (1 << 20)


def measure(model_dir: Path, sample: Path, predictions: int, rounds: int, timeout_s: float,
            price_per_cpu_hour: float, what: str) -> dict[str, float]:
    """The four cost metrics of the model in ``model_dir``, timed on the rows of parquet ``sample``
    in an isolated process (:func:`promotion.gates._scoring.run_isolated`)."""
    from promotion.gates._scoring import IsolatedError, run_isolated

    try:
        out = run_isolated(PROBE, [str(model_dir), str(sample), str(predictions), str(rounds)], timeout_s,
                           f"{what}: loading and timing")
    except IsolatedError as exc:
        raise CostError(exc.message) from exc
    try:
        got = json.loads(out.strip().splitlines()[-1])
        cpu_s, load = float(got["cpu_s"]), float(got["load_bytes"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CostError(f"{what}: the measuring process printed no result") from exc
    return {"artifact_mb": round(directory_mb(model_dir), 3),
            "load_memory_mb": round(max(load, 0.0) / (1 << 20), 1),
            "cpu_ms_per_prediction": round(cpu_s * 1000, 4),
            "cost_per_million": round(cpu_s * 1e6 / 3600 * price_per_cpu_hour, 6)}


class CostGate(GateSpec):
    name = "cost"
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "price_per_cpu_hour": {"type": "number", "minimum": 0, "maximum": 1000},
        "predictions": {"type": "integer", "minimum": 10, "maximum": 100000},
        "rounds": {"type": "integer", "minimum": 1, "maximum": 20},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
        "budget": _per_metric({"exclusiveMinimum": 0}),
        "max_ratio": _per_metric({"exclusiveMinimum": 0}),
    }}
    defaults = {"price_per_cpu_hour": 0.05, "predictions": 200, "rounds": 3, "timeout_s": 300,
                "budget": {"artifact_mb": 1024, "load_memory_mb": 4096, "cpu_ms_per_prediction": 50,
                           "cost_per_million": 1.0},
                "max_ratio": {"cpu_ms_per_prediction": 1.5, "load_memory_mb": 1.5}}
    Settings = CostSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        from promotion.gates.artifact import require_safe

        s = self.Settings.from_mapping(settings)
        version = ctx.env.model.version
        pol = lambda *k: ctx.policy_line("gates", "cost", *k)  # noqa: E731
        with tempfile.TemporaryDirectory(prefix="promotion-cost-sample-") as tmp:
            path = ctx.artifact(version)
            require_safe(ctx, version)  # before anything else: an unsafe model is named as such
            frame = _sample(ctx, version)
            ours = measure(path, _write(frame, _columns(path, frame), Path(tmp) / "challenger.parquet"),
                           s.predictions, s.rounds, s.timeout_s, s.price_per_cpu_hour, f"v{version}")
            checks = [self._budget(metric, ours[metric], limit, version, pol("budget", metric))
                      for metric, limit in s.budget.items()]
            details: dict[str, Any] = {"challenger": ours, "price_per_cpu_hour": s.price_per_cpu_hour,
                                       "predictions": min(s.predictions, len(frame))}
            if s.max_ratio:
                checks += self._vs_champion(ctx, s, ours, frame, Path(tmp), details, pol)
        if not checks:
            checks.append(Check.block("cost", "the policy sets no budget and no ratio to check", *pol()))
        return GateResult(self.name, tuple(checks), details)

    def _budget(self, metric: str, value: float, limit: float, version: int, where) -> Check:
        unit = UNITS[metric]
        shown = f"{value:.4g}{' ' + unit if unit else ''}"
        msg = f"v{version}: {metric} {shown}" + (" (at the policy's price per CPU hour)" if metric == "cost_per_million" else "")
        return Check.judge(f"cost.{metric}", value, f"<= {limit:g}", value <= limit,
                           msg if value <= limit else f"{msg}, over the budget of {limit:g}", *where)

    def _vs_champion(self, ctx: GateContext, s: CostSettings, ours, frame, tmp: Path, details, pol) -> list[Check]:
        from promotion.gates.artifact import require_safe

        champion_version, source = ctx.champion_version()
        if champion_version is None or ctx.challenger_is_champion():
            why = (f"no champion in {ctx.env.name} ({source}): nothing to compare with" if champion_version is None
                   else f"v{champion_version} already is the champion in {ctx.env.name}")
            return [Check.judge(f"cost.{m} vs champion", ours[m], "no champion" if champion_version is None
                                else f"v{champion_version}", True, why, *pol("max_ratio", m)) for m in s.max_ratio]
        if champion_version == ctx.env.model.version:
            # a model switch to a version of the same number: artifacts and their scans are
            # keyed by version, so the champion's could be taken for the challenger's
            why = (f"cannot decide: the champion is {ctx.champion_model()} v{champion_version}, the same version "
                   f"number as the challenger {ctx.model} v{champion_version}; measure the switch separately")
            return [Check.block(f"cost.{m} vs champion", why, f"<= {r:g} x champion", *pol("max_ratio", m))
                    for m, r in s.max_ratio.items()]
        try:
            path = ctx.artifact(champion_version)
            require_safe(ctx, champion_version)
            theirs = measure(path, _write(frame, _columns(path, frame), tmp / "champion.parquet"), s.predictions,
                             s.rounds, s.timeout_s, s.price_per_cpu_hour, f"champion v{champion_version}")
        except Error as exc:
            return [Check.block(f"cost.{m} vs champion", f"cannot decide: {exc.diagnostics()}", f"<= {r:g} x champion",
                                *pol("max_ratio", m)) for m, r in s.max_ratio.items()]
        details["champion"] = {"version": champion_version, **theirs}
        checks = []
        for metric, ratio in s.max_ratio.items():
            need = ratio * theirs[metric]
            ok = ours[metric] <= need
            msg = (f"{metric}: v{ctx.env.model.version} {ours[metric]:.4g} vs v{champion_version} "
                   f"{theirs[metric]:.4g}")
            checks.append(Check.judge(f"cost.{metric} vs champion", ours[metric],
                                      f"<= {need:.4g} ({ratio:g} x v{champion_version})", ok,
                                      msg if ok else f"{msg}, more than {ratio:g} x the champion", *pol("max_ratio", metric)))
        return checks


def _sample(ctx: GateContext, version: int):
    """Rows to time predictions on: the version's reference sample, else its input example."""
    from promotion.gates.drift import WindowError

    mv = ctx.challenger()
    try:
        from promotion.gates.drift import DriftGate

        return DriftGate()._reference(ctx, mv)
    except WindowError as first:
        example = _input_example(ctx.artifact(version))
        if example is None:
            raise CostError(f"v{version}: no rows to time predictions on ({first.message}; and no input example "
                            "in the model)") from first
        return example


def _input_example(model_dir: Path):
    import pandas as pd
    from mlflow.models import Model

    try:
        example = Model.load(str(model_dir / "MLmodel")).load_input_example(str(model_dir))
    except Exception:  # noqa: BLE001 - a missing or unreadable example: there is none
        return None
    if isinstance(example, pd.DataFrame) and len(example):
        return example
    if isinstance(example, dict):
        try:
            return pd.DataFrame(example)
        except ValueError:
            return None
    return None


def _columns(model_dir: Path, frame) -> list[str]:
    """The model's input columns found in ``frame`` (its signature's), else the frame's features."""
    from promotion.gates.drift import NOT_FEATURES
    from promotion.gates.schema import input_kinds

    kinds = input_kinds(model_dir)
    if kinds:
        missing = [c for c in kinds if c not in frame.columns]
        if missing:
            raise CostError(f"the sample to time predictions on lacks input column(s) {', '.join(missing)}")
        return list(kinds)
    return [c for c in frame.columns if c not in NOT_FEATURES]


def _write(frame, columns: list[str], path: Path) -> Path:
    frame[columns].reset_index(drop=True).to_parquet(path, index=False)
    return path
