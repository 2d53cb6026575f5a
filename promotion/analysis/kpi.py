"""Business KPIs: rollback when the canary is worse, and the ``experiment`` strategy's lift.

A KPI is a ratio per version, ``numerator / denominator`` (conversions per request,
clicks per impression), given as *cumulative* counts (the PromQL templates' values).
Each denominator unit contributes a value in ``[0, value_max]`` to the numerator (a
conversion: 0 or 1; capped revenue: up to the cap), independently within a version
(randomised routing). The policy gives a direction and a relative tolerance ("must not
drop by more than 1 %").

* :func:`kpi_regression` — the comparison of :mod:`promotion.analysis.bounded` (champion
  lower bound, canary bets against it) for ``H0: the canary's KPI is not worse than (1 - tolerance) x the champion's`` (or
  ``(1 + tolerance) x`` for lower-is-better). Rolling back when it rejects keeps the
  probability of ever rolling back a canary within tolerance at ``alpha`` (Ville).
* :func:`kpi_lift` — an anytime-valid confidence sequence for the relative lift
  ``canary / champion - 1`` (sign flipped for lower-is-better, so positive is always an
  improvement): time-uniform bounds for each version's mean at ``alpha/2`` each
  (:func:`~promotion.analysis.bounded.mean_bounds`, Howard et al. 2021) and their ratio;
  both hold at every time with probability ``>= 1 - alpha`` (union bound).
* :func:`experiment_decision` — promote only when the lift's lower bound exceeds the
  policy's ``min_effect``; at ``max_duration_s`` without that, end without promoting.
  ``P(promote | true lift <= min_effect) <= alpha`` whenever the decision is taken.

Usage::

    r = kpi_regression(state, KpiCounts(120, 10_000), KpiCounts(2_500, 190_000),
                       KpiTest("ctr", higher_is_better=True, tolerance=0.01), alpha=0.01)
    lift = kpi_lift(KpiCounts(120, 10_000), KpiCounts(2_500, 190_000), True, alpha=0.05)
    experiment_decision(lift, min_effect=0.02, elapsed_s=3600, max_duration_s=86400)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np

from promotion.analysis.bounded import ComparisonState, comparison_step, log_threshold, margin, mean_bounds
from promotion.analysis.sequential import e_value


@dataclass(frozen=True)
class KpiCounts:
    """Cumulative numerator and denominator of one version's KPI."""

    numerator: float
    denominator: float

    def __post_init__(self) -> None:
        if not (self.numerator >= 0 and self.denominator >= 0):
            raise ValueError("KPI counts must be >= 0")

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    def unit_sum(self, value_max: float, higher_is_better: bool) -> tuple[float, float]:
        """``(sum, n)`` of the per-unit values rescaled to [0, 1], higher is better."""
        if self.numerator > self.denominator * value_max * (1 + 1e-9):
            raise ValueError(f"KPI numerator {self.numerator:g} exceeds denominator x value_max "
                             f"({self.denominator:g} x {value_max:g}): each unit's value must be capped")
        s = self.numerator / value_max
        return (s if higher_is_better else self.denominator - s), self.denominator


@dataclass(frozen=True)
class KpiTest:
    """A policy KPI: its name, direction, relative ``tolerance`` and per-unit cap."""

    name: str
    higher_is_better: bool
    tolerance: float = 0.01
    value_max: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1 or not self.value_max > 0:
            raise ValueError("KPI tolerance must be in [0, 1) and value_max > 0")


@dataclass(frozen=True)
class KpiResult:
    """The KPI rollback test after an update."""

    state: ComparisonState
    name: str
    e_value: float
    threshold: float
    rejected: bool
    canary_value: float | None
    champion_value: float | None

    def evidence(self) -> dict:
        return {"kpi": self.name, "e_value": self.e_value, "threshold": self.threshold, "rejected": self.rejected,
                "canary": self.canary_value, "champion": self.champion_value}


def kpi_regression(state: ComparisonState, canary: KpiCounts, champion: KpiCounts, test: KpiTest,
                   alpha: float, paired: bool = True) -> KpiResult:
    """Advance the KPI's e-process for "canary worse than champion by more than the
    tolerance" with cumulative counts, and judge at ``alpha``. ``paired=False`` (probation:
    the champion serves nothing) bets on each new canary unit against the champion's
    bound so far, without waiting for new champion units."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    m = margin(test.higher_is_better, 0.0, test.tolerance)
    new = comparison_step(state, canary.unit_sum(test.value_max, test.higher_is_better),
                          champion.unit_sum(test.value_max, test.higher_is_better), m, alpha, paired=paired)
    log_t = log_threshold(alpha)
    return KpiResult(new, test.name, e_value(new.log_value), math.exp(log_t), new.log_value >= log_t,
                     canary.value, champion.value)


@dataclass(frozen=True)
class Lift:
    """Relative lift (positive = canary better), with anytime-valid bounds at ``1 - alpha``."""

    estimate: float | None
    lower: float
    upper: float
    alpha: float

    def to_dict(self) -> dict:
        return {"estimate": self.estimate, "lower": self.lower, "upper": self.upper, "alpha": self.alpha}


def lift_bounds(canary_sum, canary_n, champion_sum, champion_n, higher_is_better: bool, alpha: float):
    """Array form of :func:`kpi_lift`'s bounds: ``(lower, upper)`` of the relative lift from
    cumulative sums of per-unit values in [0, 1] (numpy arrays or numbers)."""
    cl, cu = mean_bounds(canary_sum, canary_n, alpha / 2)
    bl, bu = mean_bounds(champion_sum, champion_n, alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_lo = np.where(np.asarray(bu) > 0, np.asarray(cl) / np.asarray(bu), 0.0)
        ratio_hi = np.where(np.asarray(bl) > 0, np.asarray(cu) / np.asarray(bl), np.inf)
    if higher_is_better:
        return ratio_lo - 1, ratio_hi - 1
    return 1 - ratio_hi, 1 - ratio_lo


def kpi_lift(canary: KpiCounts, champion: KpiCounts, higher_is_better: bool, alpha: float,
             value_max: float = 1.0) -> Lift:
    """Confidence sequence for the relative lift of the canary's KPI over the champion's.

    ``higher_is_better``: lift = ``canary / champion - 1``; otherwise ``1 - canary /
    champion``. Valid at every time simultaneously with probability ``>= 1 - alpha``.
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    lo, hi = lift_bounds(canary.numerator / value_max, canary.denominator, champion.numerator / value_max,
                         champion.denominator, higher_is_better, alpha)
    est = None
    if canary.value is not None and champion.value:
        est = canary.value / champion.value - 1 if higher_is_better else 1 - canary.value / champion.value
    return Lift(est, float(lo), float(hi), alpha)


class ExperimentOutcome(str, Enum):
    """What the ``experiment`` strategy does after a look."""

    PROMOTE = "promote"
    """The lift's lower bound exceeds ``min_effect``: promote."""
    CONTINUE = "continue"
    """Not shown yet, time left: keep the split and measure."""
    END = "end"
    """``max_duration_s`` reached without the effect shown: end without promoting."""

    @property
    def completed(self) -> bool:
        return self is not ExperimentOutcome.CONTINUE


def experiment_decision(lift: Lift, min_effect: float, elapsed_s: float, max_duration_s: float) -> ExperimentOutcome:
    """Promote only on ``lift.lower > min_effect``; end at ``max_duration_s`` otherwise."""
    if lift.lower > min_effect:
        return ExperimentOutcome.PROMOTE
    if elapsed_s >= max_duration_s:
        return ExperimentOutcome.END
    return ExperimentOutcome.CONTINUE
