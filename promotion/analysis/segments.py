"""Segments: which segment's regression rolls the canary back, with multiplicity control.

The fairness gate's segment column is also used online: each signal (errors, labels,
KPI) is run per segment, and each segment's e-process gives an e-value. Testing K
segments at ``1/alpha`` each would roll back healthy canaries about K times too often;
two corrections keep the false-rollback rate of the whole family at ``alpha``:

* **e-BH** (Wang & Ramdas 2022, "False discovery rate control with e-values", JRSS-B
  84(3)): with e-values sorted ``e_(1) >= ... >= e_(K)``, reject the ``k*`` largest where
  ``k* = max{k : e_(k) >= K / (k alpha)}``. FDR <= alpha under *any* dependence between
  segments. When no segment regressed every rejection is false, so the probability of
  rolling back at all is at most alpha. Applied to e-processes at the time it first
  rejects (a stopping time), the stopped values are still e-values (optional stopping),
  so checking after every window keeps this.
* **Bonferroni**: reject segment k when ``e_k >= K / alpha`` (Ville's inequality per
  segment plus a union bound): family-wise error <= alpha. Never rejects more than
  e-BH; kept for policies that want the simpler statement.

A regression confined to one segment then rolls back even when the aggregate looks fine,
and the record names the segment(s).

Usage::

    d = segment_decision({"EU": math.log(900.0), "US": 0.1}, alpha=0.01, method="e-bh")
    d.triggered          # ("EU",)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from promotion.analysis.sequential import e_value

METHODS = ("e-bh", "bonferroni")


def e_bh(e_values: Mapping[str, float], alpha: float) -> tuple[str, ...]:
    """Segments the e-BH procedure rejects at level ``alpha`` (largest e-value first)."""
    _check(alpha)
    k_total = len(e_values)
    ranked = sorted(e_values.items(), key=lambda kv: (-kv[1], kv[0]))
    k_star = 0
    for k, (_, e) in enumerate(ranked, start=1):
        if e >= k_total / (k * alpha):
            k_star = k
    return tuple(name for name, _ in ranked[:k_star])


def bonferroni(e_values: Mapping[str, float], alpha: float) -> tuple[str, ...]:
    """Segments whose e-value reaches ``K / alpha`` (largest first)."""
    _check(alpha)
    k_total = len(e_values)
    ranked = sorted(e_values.items(), key=lambda kv: (-kv[1], kv[0]))
    return tuple(name for name, e in ranked if e >= k_total / alpha)


@dataclass(frozen=True)
class SegmentDecision:
    """Which segments triggered, by which procedure, at what level."""

    triggered: tuple[str, ...]
    method: str
    alpha: float
    e_values: dict

    @property
    def rejected(self) -> bool:
        return bool(self.triggered)

    def evidence(self) -> dict:
        return {"method": self.method, "alpha": self.alpha, "segments": len(self.e_values),
                "triggered": list(self.triggered), "e_values": dict(self.e_values)}


def segment_decision(log_e_values: Mapping[str, float], alpha: float, method: str = "e-bh") -> SegmentDecision:
    """Apply ``method`` ("e-bh" or "bonferroni") to per-segment *log* e-values."""
    if method not in METHODS:
        raise ValueError(f"segment correction must be one of {', '.join(METHODS)}, not {method!r}")
    es = {str(k): e_value(float(v)) for k, v in log_e_values.items()}
    chosen = e_bh(es, alpha) if method == "e-bh" else bonferroni(es, alpha)
    return SegmentDecision(chosen, method, alpha, es)


def _check(alpha: float) -> None:
    if not 0 < alpha < 1 or math.isnan(alpha):
        raise ValueError("alpha must be in (0, 1)")
