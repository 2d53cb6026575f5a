"""Absolute service-level objectives for the canary, tested anytime-validly.

Two objectives from the policy's ``slo`` section:

* error rate at most ``error_rate_max``;
* p95 latency at most ``latency_p95_ms_max``, i.e. at most 5 % of requests slower than
  it. The histogram only resolves its bucket bounds, so the test counts requests slower
  than the smallest bound at or above the objective (a request over that bound is
  certainly over the objective: the test never blames the canary for bucket width).

Each is a one-sided :class:`~promotion.analysis.sequential.OddsEProcess` over every
canary request of the rollout, rejecting "the canary meets the objective" at
``e >= 1/alpha``. A point estimate over a small sample would fire on noise (3 errors in
the first 50 requests is 6 %, and happens to 1.4 % of canaries whose true rate is 1 %);
an e-process fires on evidence. The point readings are still reported for people.

Usage::

    check = SloCheck(error_rate_max=0.05, latency_p95_ms_max=100, alpha=0.0125)
    alarms = check.update(window.get(canary))     # [] or one-line reasons
"""

from __future__ import annotations

import math

from promotion.analysis.sequential import OddsEProcess, e_value
from promotion.metrics.base import VersionCounters

SLO_QUANTILE = 0.95


def bound_at_or_above(bounds, value: float) -> float | None:
    """The smallest finite histogram bound ``>= value`` (tolerating float noise)."""
    for b in bounds:
        if not math.isinf(b) and b >= value * (1 - 1e-9):
            return b
    return None


class SloCheck:
    """Anytime-valid checks of the canary against the policy's absolute SLOs."""

    def __init__(self, error_rate_max: float, latency_p95_ms_max: float, alpha: float, state: dict | None = None) -> None:
        self.error_rate_max = error_rate_max
        self.latency_p95_s = latency_p95_ms_max / 1000.0
        self.alpha = alpha
        state = state or {}
        self.errors = OddsEProcess.from_dict(state["errors"]) if "errors" in state else OddsEProcess()
        self.latency = OddsEProcess.from_dict(state["latency"]) if "latency" in state else OddsEProcess()
        self.latency_bound = state.get("latency_bound")
        self.requests = float(state.get("requests", 0.0))
        self.error_count = float(state.get("error_count", 0.0))
        self.observed = float(state.get("observed", 0.0))
        self.slow = float(state.get("slow", 0.0))

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    def update(self, canary: VersionCounters) -> list[str]:
        """Add the canary's window; return the one-line reasons of any breach."""
        n = canary.requests
        if n > 0:
            k = min(max(canary.errors, 0.0), n)
            self.errors.update(k, n, self.error_rate_max)
            self.requests += n
            self.error_count += k
        if canary.latency_count > 0:
            bound = bound_at_or_above(canary.latency_bounds, self.latency_p95_s)
            if bound is not None:
                slow = canary.slower_than(bound)
                self.latency.update(slow, canary.latency_count, 1 - SLO_QUANTILE)
                self.latency_bound = bound
                self.observed += canary.latency_count
                self.slow += slow
        return self.alarms()

    def alarms(self) -> list[str]:
        out = []
        log_t = math.log(self.threshold)
        if self.errors.log_value >= log_t:
            out.append(
                f"error-rate SLO breached: canary {self.error_count / self.requests:.2%} errors over "
                f"{self.requests:,.0f} requests, objective {self.error_rate_max:.2%} "
                f"(e={e_value(self.errors.log_value):.3g} >= {self.threshold:g})")
        if self.latency.log_value >= log_t:
            out.append(
                f"p95 latency SLO breached: {self.slow / self.observed:.1%} of {self.observed:,.0f} canary requests "
                f"took over {self.latency_bound * 1000:g} ms, objective p95 <= {self.latency_p95_s * 1000:g} ms "
                f"(e={e_value(self.latency.log_value):.3g} >= {self.threshold:g})")
        return out

    def evidence(self) -> dict:
        return {
            "error_rate": {"e_value": e_value(self.errors.log_value), "threshold": self.threshold,
                           "objective": self.error_rate_max, "errors": self.error_count, "requests": self.requests},
            "latency_p95": {"e_value": e_value(self.latency.log_value), "threshold": self.threshold,
                            "objective_ms": self.latency_p95_s * 1000,
                            "tested_bound_ms": None if self.latency_bound is None else self.latency_bound * 1000,
                            "slower": self.slow, "observed": self.observed},
        }

    def to_dict(self) -> dict:
        return {"errors": self.errors.to_dict(), "latency": self.latency.to_dict(), "latency_bound": self.latency_bound,
                "requests": self.requests, "error_count": self.error_count, "observed": self.observed, "slow": self.slow}
