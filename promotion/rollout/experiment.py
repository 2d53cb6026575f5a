"""The ``experiment`` strategy: hold an A/B split, promote only on a shown KPI lift.

``rollout.strategy: experiment`` walks one step at ``experiment.weights.canary`` (for
example 10 %: the champion keeps 90 %). The canary analysis judges every window as in any
step (errors, latency, SLOs and sample ratio still roll back), and the step passes only
once the experiment KPI's anytime-valid lift (:func:`promotion.analysis.kpi.kpi_lift`)
has a lower bound above ``min_effect``; then the rollout promotes. At
``max_duration_s`` without that, :func:`ended` ends the experiment without promoting:
traffic back to the champion, the alias left where it is, the environment file
reverted and a signed ``rollback`` record whose reason says the experiment ended
without showing the improvement (the record's action is the one that says what
happened to traffic and alias; the reason and ``evidence.experiment`` say why)::

    rollout:
      strategy: experiment
      experiment: {weights: {canary: 10}, kpi: conversion, min_effect: 0.02, max_duration_s: 86400}

The guarantee (:func:`promotion.analysis.kpi.experiment_decision`): a canary whose true
lift is at most ``min_effect`` is promoted with probability at most the experiment's
``alpha``, however often it is looked at.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from promotion.analysis.kpi import ExperimentOutcome, Lift, experiment_decision
from promotion.rollout.transitions import begin_rollback

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState

ENDED = "experiment ended without showing the improvement"


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.2%}"


def ended(ctx: "Context", st: "RolloutState", verdict, elapsed: float, reading: dict) -> bool:
    """End the experiment without promoting once ``max_duration_s`` passed undecided;
    True when it did (the caller returns)."""
    ex = getattr(ctx.settings, "experiment", None)
    if ex is None or verdict.outcome.value != "inconclusive":
        return False  # a pass promotes, a failure already rolled back
    evidence = dict(verdict.evidence or {})
    shown = evidence.get("experiment") or {}
    raw = shown.get("lift") or {}
    lower, upper = raw.get("lower"), raw.get("upper")  # null: unbounded
    lift = Lift(raw.get("estimate"), -math.inf if lower is None else float(lower),
                math.inf if upper is None else float(upper), float(raw.get("alpha") or ex.alpha))
    outcome = experiment_decision(lift, ex.min_effect, elapsed, ex.max_duration_s)
    if outcome is not ExperimentOutcome.END:
        return False
    why = "; ".join(r for r in verdict.reasons if not r.startswith("experiment:"))
    reason = (f"{ENDED}: {ex.kpi} lift {_pct(lift.estimate)} (lower bound {_pct(lift.lower)}) did not exceed "
              f"min_effect {ex.min_effect:.2%} within max_duration_s {ex.max_duration_s:g}"
              + (f"; also undecided: {why}" if why else ""))
    evidence["experiment"] = {**shown, "outcome": outcome.value, "elapsed_s": round(elapsed, 2),
                              "max_duration_s": ex.max_duration_s}
    st.steps.append({"step": st.step + 1, "weight": st.weight, "seconds": round(elapsed, 2), **reading,
                     "verdict": "ended"})
    ctx.emit(st, "experiment_ended", kpi=ex.kpi, lift=dict(raw), min_effect=ex.min_effect)  # JSON: null, not inf
    begin_rollback(ctx, st, reason, evidence=evidence)
    return True
