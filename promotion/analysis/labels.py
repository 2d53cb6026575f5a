"""Delayed labels: is the canary's recall, FPR, precision or loss worse than the champion's?

Ground truth arrives after the prediction (``POST /feedback`` or a polled labels
dataset). Each version has *cumulative* labelled counts: for a classifier the confusion
counts at the decision threshold (:class:`ClassifierCounts`), for a regressor the count
and the sums of clipped absolute and squared errors (:class:`RegressorCounts`). A label
that arrives after its step ended is added to the counts of the version that made the
prediction, so it is simply part of that version's next increment.

:func:`compare_labels` runs the comparison of :mod:`promotion.analysis.bounded` (a
time-uniform lower bound for the champion, Bernoulli-dominated bets on the canary's
increments against it, mixture over bet sizes) for
the one-sided null "the canary's metric is not worse than the champion's by more than
``tolerance``", on the same window of traffic. Rolling back when it rejects keeps the
probability of ever rolling back a canary that is within tolerance at most ``alpha``
(Ville's inequality), however often it is checked and however late labels arrive,
provided a label's delay does not depend on its value.

The metrics, as values in [0, 1] per labelled request:

* ``recall`` (TPR): hits among labelled positives, higher is better;
* ``precision``: correct among labelled predicted positives, higher is better;
* ``fpr``: false positives among labelled negatives, lower is better;
* ``mae`` / ``mse``: absolute / squared error, clipped to ``loss_max``, lower is better.

Usage::

    result = compare_labels(ComparisonState.new(), canary_counts, champion_counts,
                            LabelTest("recall", absolute=0.02), alpha=0.01)
    if result.rejected: ...           # result.state is kept for the next window
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from promotion.analysis.bounded import ComparisonState, Margin, comparison_step, log_threshold, margin
from promotion.analysis.sequential import e_value

CLASSIFIER_METRICS = ("recall", "precision", "fpr")
REGRESSOR_METRICS = ("mae", "mse")


@dataclass(frozen=True)
class ClassifierCounts:
    """Cumulative confusion counts of one version's labelled requests."""

    tp: float = 0.0
    fp: float = 0.0
    fn: float = 0.0
    tn: float = 0.0

    def __post_init__(self) -> None:
        if min(self.tp, self.fp, self.fn, self.tn) < 0:
            raise ValueError("confusion counts must be >= 0")

    @property
    def labelled(self) -> float:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def recall(self) -> float | None:
        """TPR: ``tp / (tp + fn)``; ``None`` without labelled positives."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def fpr(self) -> float | None:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else None

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None


@dataclass(frozen=True)
class RegressorCounts:
    """Cumulative labelled count and sums of errors. Each request's error must be clipped
    to the test's ``loss_max`` (in its own units: absolute, or squared) before it is added:
    the guarantee needs bounded values."""

    n: float = 0.0
    sum_abs_error: float = 0.0
    sum_squared_error: float = 0.0

    def __post_init__(self) -> None:
        if min(self.n, self.sum_abs_error, self.sum_squared_error) < 0:
            raise ValueError("regressor counts must be >= 0")

    @property
    def mae(self) -> float | None:
        return self.sum_abs_error / self.n if self.n else None

    @property
    def mse(self) -> float | None:
        return self.sum_squared_error / self.n if self.n else None


@dataclass(frozen=True)
class LabelTest:
    """One label metric as the policy states it.

    ``absolute``: tolerated worsening in the metric's units (0.02 = two points of recall;
    for ``mae``/``mse``, in loss units). ``relative``: tolerated worsening as a fraction of
    the champion's value. ``loss_max``: the clip applied to each error (regressors only).
    """

    metric: str
    absolute: float = 0.0
    relative: float = 0.0
    loss_max: float = 1.0

    def __post_init__(self) -> None:
        if self.metric not in CLASSIFIER_METRICS + REGRESSOR_METRICS:
            raise ValueError(f"unknown label metric {self.metric!r}")
        if not self.loss_max > 0:
            raise ValueError("loss_max must be > 0")

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ("recall", "precision")

    @property
    def margin(self) -> Margin:
        scale = self.loss_max if self.metric in REGRESSOR_METRICS else 1.0
        return margin(self.higher_is_better, self.absolute / scale, self.relative)


def good_sum(counts: ClassifierCounts | RegressorCounts, test: LabelTest) -> tuple[float, float]:
    """``(sum, n)`` of the per-request values in [0, 1], higher is better, that ``test``
    compares: hits for recall and precision, true negatives for FPR, ``1 - loss/loss_max``
    for regressors."""
    if test.metric in CLASSIFIER_METRICS:
        if not isinstance(counts, ClassifierCounts):
            raise ValueError(f"metric {test.metric} needs classifier counts")
        if test.metric == "recall":
            return counts.tp, counts.tp + counts.fn
        if test.metric == "precision":
            return counts.tp, counts.tp + counts.fp
        return counts.tn, counts.fp + counts.tn
    if not isinstance(counts, RegressorCounts):
        raise ValueError(f"metric {test.metric} needs regressor counts")
    loss = counts.sum_abs_error if test.metric == "mae" else counts.sum_squared_error
    if loss > counts.n * test.loss_max * (1 + 1e-9):
        raise ValueError(f"{test.metric}: the sum of errors exceeds n * loss_max; errors must be clipped to loss_max")
    return counts.n - loss / test.loss_max, counts.n


@dataclass(frozen=True)
class LabelResult:
    """The label test after an update: state to keep, e-value, and readings for the record."""

    state: ComparisonState
    metric: str
    e_value: float
    threshold: float
    rejected: bool
    canary_value: float | None
    champion_value: float | None
    canary_labelled: float
    champion_labelled: float

    def evidence(self) -> dict:
        return {"metric": self.metric, "e_value": self.e_value, "threshold": self.threshold,
                "rejected": self.rejected, "canary": self.canary_value, "champion": self.champion_value,
                "canary_labelled": self.canary_labelled, "champion_labelled": self.champion_labelled}


def compare_labels(state: ComparisonState, canary: ClassifierCounts | RegressorCounts,
                   champion: ClassifierCounts | RegressorCounts, test: LabelTest, alpha: float,
                   paired: bool = True) -> LabelResult:
    """Update the label test with both versions' cumulative counts and judge at ``alpha``.

    Guarantee: if the canary's metric is within ``test``'s tolerance of the champion's,
    ``P(rejected at any update) <= alpha``. ``rejected`` stays true once reached.
    ``paired=False``: against the champion's frozen baseline (probation, see
    :func:`promotion.analysis.bounded.comparison_update`).
    """
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    new = comparison_step(state, good_sum(canary, test), good_sum(champion, test), test.margin, alpha, paired=paired)
    log_t = log_threshold(alpha)
    return LabelResult(new, test.metric, e_value(new.log_value), math.exp(log_t), new.log_value >= log_t,
                       getattr(canary, test.metric), getattr(champion, test.metric),
                       good_sum(canary, test)[1], good_sum(champion, test)[1])
