"""Score shift: do canary and champion scores differ in distribution on the same traffic?

Canary and champion see randomised shares of the same requests, so with the same model
behaviour their score histograms (fixed bins, exported per version by the router) differ
only by chance. :func:`score_shift_step` tests

    H0: each request goes to the canary with the configured probability ``w``,
        whatever its score bin

which holds when the score distributions are equal (and the split is as configured).
Conditionally on bin ``j`` holding ``T_j`` requests, the canary's count there is
Binomial(``T_j``, ``w``) under H0, independently across bins; under a shift the canary's
share differs between bins. The e-value is the product over bins of beta-binomial Bayes
factors of the cumulative counts, prior Beta(c w, c (1 - w)): the Dirichlet-multinomial
test of Lindon & Malek (2022), "Anytime-valid inference for multinomial count data"
(NeurIPS), applied per bin, which is a test martingale under H0 (a Bayes factor with a
prior on the alternative only). As in Lindon, Sanden & Shirikian (2022), "Rapid
regression detection in software deployments through sequential testing" (KDD), the
test is of equality in distribution between the two arms of a randomised split, checked
after every window. A new weight closes the running factor and starts another (a product
of test martingales started at stopping times), so ``P(ever e >= 1/alpha) <= alpha``.

A sample-ratio mismatch also rejects H0; it is a failure of the canary either way, and the
separate SRM check names it.

:func:`disagreement_test` is the shadow-mode check: disagreements with the champion,
against the rate the holdout predicts (plus a tolerance), a one-sided mixture of
Bernoulli likelihood ratios (:func:`~promotion.analysis.sequential.odds_log_lr`) on the
cumulative counts.

Usage::

    state = score_shift_step(ScoreShiftState(), canary_hist, champion_hist, weight=0.05)
    if state.log_value >= math.log(1 / alpha): ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from promotion.analysis.sequential import e_value, mixture_log_value, odds_log_lr, srm_log_bf

# Prior concentration of each bin's beta-binomial: the canary's share of a bin is
# expected within about sqrt(w (1 - w) / c) of w. 100 puts a PSI-0.2 shift (bin shares
# moving by about a third at w = 5 %) inside the prior's bulk.
SHIFT_CONCENTRATION = 100.0


def score_shift_log_bf(canary_counts, champion_counts, w, concentration: float = SHIFT_CONCENTRATION):
    """Log e-value of per-bin counts (last axis: bins) collected at canary probability
    ``w``: the sum over bins of beta-binomial log Bayes factors."""
    k = np.asarray(canary_counts, dtype=float)
    t = k + np.asarray(champion_counts, dtype=float)
    return np.sum(srm_log_bf(k, t, np.asarray(w, dtype=float)[..., None], concentration), axis=-1)


@dataclass(frozen=True)
class ScoreShiftState:
    """The running test: the factor closed at earlier weights, the weight now, and the
    cumulative histograms when it began."""

    log_closed: float = 0.0
    weight: float | None = None
    canary_base: tuple[float, ...] = ()
    champion_base: tuple[float, ...] = ()
    log_open: float = 0.0

    @property
    def log_value(self) -> float:
        return self.log_closed + self.log_open

    @property
    def e_value(self) -> float:
        return e_value(self.log_value)

    def to_dict(self) -> dict:
        return {"log_closed": self.log_closed, "weight": self.weight, "canary_base": list(self.canary_base),
                "champion_base": list(self.champion_base), "log_open": self.log_open}

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreShiftState":
        return cls(float(d["log_closed"]), d["weight"], tuple(d["canary_base"]), tuple(d["champion_base"]),
                   float(d["log_open"]))


def score_shift_step(state: ScoreShiftState, canary_hist, champion_hist, weight: float) -> ScoreShiftState:
    """Update with both versions' *cumulative* score histograms (same fixed bins) and the
    canary probability ``weight`` in (0, 1) they were served at since the last update.

    Judge with ``state.log_value >= log(1/alpha)``. The first update at a weight only sets
    the baseline (earlier counts may be from another weight); a change of weight or of
    the bins, or a count that went down (a restarted exporter), starts a new factor.
    """
    c = tuple(float(x) for x in canary_hist)
    b = tuple(float(x) for x in champion_hist)
    if len(c) != len(b) or not c:
        raise ValueError("canary and champion histograms need the same, non-empty bins")
    if not 0 < weight < 1:
        return state
    restart = (state.weight is None or not math.isclose(weight, state.weight) or len(state.canary_base) != len(c)
               or any(x < y for x, y in zip(c, state.canary_base)) or any(x < y for x, y in zip(b, state.champion_base)))
    if restart:
        return ScoreShiftState(state.log_value, float(weight), c, b, 0.0)
    kc = np.subtract(c, state.canary_base)
    kb = np.subtract(b, state.champion_base)
    return ScoreShiftState(state.log_closed, state.weight, state.canary_base, state.champion_base,
                           float(score_shift_log_bf(kc, kb, weight)))


def disagreement_test(disagreements: float, n: float, expected_rate: float, tolerance: float = 0.0) -> float:
    """Log e-value against "shadow disagreement rate <= expected_rate + tolerance", from
    cumulative counts (fixed null, so the mixture of cumulative likelihood ratios is a
    test martingale). Reject at ``>= log(1/alpha)``."""
    if not 0 <= disagreements <= n:
        raise ValueError("disagreements must be between 0 and n")
    p0 = expected_rate + tolerance
    if not 0 <= p0 < 1:
        raise ValueError("expected_rate + tolerance must be in [0, 1)")
    if p0 == 0:
        return math.inf if disagreements > 0 else 0.0
    return float(mixture_log_value(odds_log_lr(disagreements, n, p0)))


def prediction_disagreement(challenger, champion, thresholds: tuple[float | None, float | None] = (None, None)):
    """``{"rate", "rows"}``: on how many of the same rows two models' decisions differ, as
    the router's shadow compares them (the class for classifiers, the prediction
    otherwise); ``None`` when nothing can be compared.

    ``challenger`` and ``champion`` are :class:`promotion.gates._scoring.Scores` (values,
    kind). A positive-class probability becomes the class at the model's
    ``decision_threshold`` (``>=``), else above 0.5, as the router decides.
    """
    a, b = np.asarray(challenger.values), np.asarray(champion.values)
    if a.shape != b.shape or a.ndim != 1 or not a.size:
        return None

    def decisions(values, kind, threshold):
        if kind == "probability":
            v = values.astype(float)
            return v >= threshold if threshold is not None else v > 0.5
        return values

    if (challenger.kind == "probability") != (champion.kind == "probability"):
        return None  # a class against a raw output: no rate the shadow would reproduce
    da = decisions(a, challenger.kind, thresholds[0])
    db = decisions(b, champion.kind, thresholds[1])
    differ = np.asarray([x != y for x, y in zip(da.tolist(), db.tolist())], dtype=bool)
    return {"rate": round(float(differ.mean()), 6), "rows": int(a.size)}


def judge_disagreement(disagreements: float, compared: float, expected_rate: float | None, tolerance: float,
                       alpha: float) -> dict:
    """The shadow's disagreements with the champion, judged against the holdout's rate.

    Returns the evidence: ``expected_rate``, ``tolerance``, ``observed_rate``, counts,
    ``e_value``, ``threshold`` (``1/alpha``) and ``rejected``; with no usable expected rate,
    ``cannot_decide`` says why (and nothing is rejected).
    """
    out = {"expected_rate": expected_rate, "tolerance": tolerance, "compared": int(compared),
           "disagreements": int(disagreements), "observed_rate": (disagreements / compared) if compared else None,
           "alpha": alpha, "threshold": 1 / alpha, "e_value": None, "rejected": False}
    if expected_rate is None:
        return {**out, "cannot_decide": "the gates measured no disagreement rate between the two versions"}
    if not 0 <= expected_rate + tolerance < 1:
        return {**out, "cannot_decide": f"expected disagreement {expected_rate:.2%} + tolerance {tolerance:.2%} "
                                        "leaves nothing to test"}
    log_e = disagreement_test(disagreements, compared, expected_rate, tolerance)
    return {**out, "e_value": e_value(log_e), "rejected": bool(log_e >= math.log(1 / alpha))}
