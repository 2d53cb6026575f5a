"""Score shift in the live canary: the policy's ``analysis.score_shift``, judged every window.

The router exports every served row's score per version (``promotion_score``, fixed bins
of :data:`promotion.contract.metrics.SCORE_BUCKETS`); each window's increase is added to
per-version bin counts since the canary started, and
:func:`promotion.analysis.score_shift.score_shift_step` tests, at the weight the window
was served at, that each scored row went to the canary with the configured probability
whatever its score bin: equality of the two score distributions on randomised halves of
the same traffic (Lindon & Malek 2022; Lindon, Sanden & Shirikian 2022; see that
module). Its e-value crossing ``1 / share`` rolls back naming the signal; the share is
the policy's ``alpha`` split by :func:`promotion.analysis.budget.alpha_shares` (one share
for ``score_shift``), so a canary whose scores do not shift is rolled back by it with
probability at most that share, however often it is looked at.

Like labels, a score shift can only roll back: it never holds a step. At 100 % (no
champion traffic) and in windows without scores (a regressor, a service without the
series) it learns nothing. Assumption: rows are routed independently; a batch request's
rows all go to one version, so a service answering large batches should keep this
signal off (its rows are not independent draws of the split).

Usage::

    sig = ScoreShiftSignal(alpha=0.05 / 5)
    alarms = sig.update(window.get(canary), window.get(champion), weight=0.05)
"""

from __future__ import annotations

import math

from promotion.analysis.score_shift import ScoreShiftState, score_shift_step
from promotion.metrics.base import VersionCounters

ROLES = ("canary", "champion")


def _mean(bins: list[float], bounds: list[float]) -> float | None:
    """The mean score, from bin counts at the bins' midpoints (the last, open bin at its lower edge)."""
    n = sum(bins)
    if not n:
        return None
    lows = [0.0, *bounds[:-1]]
    mids = [lo if math.isinf(hi) else (lo + hi) / 2 for lo, hi in zip(lows, bounds)]
    return sum(c * m for c, m in zip(bins, mids)) / n


class ScoreShiftSignal:
    """Per-version score-bin counts since the canary started, and the shift e-process."""

    def __init__(self, alpha: float, state: dict | None = None) -> None:
        self.alpha = alpha
        s = state or {}
        self.bounds: list[float] = [math.inf if b == "+Inf" else float(b) for b in s.get("bounds", [])]
        self.bins = {r: [float(x) for x in (s.get("bins") or {}).get(r, [])] for r in ROLES}
        self.state = ScoreShiftState.from_dict(s["state"]) if s.get("state") else ScoreShiftState()
        self.rejected = bool(s.get("rejected", False))

    def to_dict(self) -> dict:
        return {"bounds": ["+Inf" if math.isinf(b) else b for b in self.bounds], "bins": self.bins,
                "state": self.state.to_dict(), "rejected": self.rejected}

    @property
    def threshold(self) -> float:
        return 1 / self.alpha

    def update(self, canary: VersionCounters, champion: VersionCounters, weight: float) -> list[str]:
        """Add one window's increase of both versions, served at canary probability
        ``weight`` (0..1); the alarm it raises, if any."""
        qc, qb = canary.quality, champion.quality
        bounds = list(qc.score_bounds or qb.score_bounds)
        if not bounds:
            return []
        if any(q.score_bounds and list(q.score_bounds) != bounds for q in (qc, qb)):
            return []  # the versions export different bins: not comparable in this window
        if self.bounds != bounds:
            # new bins (first window, or the service changed them): start the counts over;
            # the closed factor carries over (score_shift_step restarts on changed bins)
            self.bounds, self.bins = bounds, {r: [0.0] * len(bounds) for r in ROLES}
        for role, q in (("canary", qc), ("champion", qb)):
            inc = q.score_bins() if q.score_counts else (0.0,) * len(bounds)
            self.bins[role] = [a + max(b, 0.0) for a, b in zip(self.bins[role], inc)]
        self.state = score_shift_step(self.state, self.bins["canary"], self.bins["champion"], weight)
        if self.state.log_value < math.log(self.threshold):
            return []
        self.rejected = True
        mc, mb = _mean(self.bins["canary"], self.bounds), _mean(self.bins["champion"], self.bounds)
        means = "" if mc is None or mb is None else f"mean score {mc:.3f} vs {mb:.3f}, "
        return [f"score shift: canary scores differ in distribution from the champion's on the same traffic "
                f"({means}{sum(self.bins['canary']):,.0f} / {sum(self.bins['champion']):,.0f} scored rows; "
                f"e={self.state.e_value:.3g} >= {self.threshold:.3g})"]

    def evidence(self) -> dict:
        return {"signal": "score_shift", "alpha": self.alpha, "threshold": self.threshold,
                "e_value": self.state.e_value, "rejected": self.rejected, "weight": self.state.weight,
                "scored": {r: sum(self.bins[r]) for r in ROLES},
                "mean_score": {r: _mean(self.bins[r], self.bounds) for r in ROLES},
                "bounds": ["+Inf" if math.isinf(b) else b for b in self.bounds], "bins": dict(self.bins)}
