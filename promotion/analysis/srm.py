"""Sample-ratio mismatch: does the canary receive the traffic share it was given?

If the router sends the canary 9 % of requests when it was told 5 %, something is wrong
with routing (or with the metrics), and every comparison between the versions is
suspect: stop and roll back. The test is the two-arm case of the Dirichlet-multinomial
e-process of Lindon & Malek (2022), "Anytime-valid inference for multinomial count
data" — see :class:`~promotion.analysis.sequential.SrmEProcess` — at the policy's
``srm_alpha``; it is two-sided and valid however often it is checked.

Usage::

    srm = SampleRatioCheck(alpha=0.001)
    alarm = srm.update(canary_requests=130, champion_requests=870, weight=0.05)
"""

from __future__ import annotations

import math

from promotion.analysis.sequential import SrmEProcess, e_value


class SampleRatioCheck:
    """Anytime-valid check of the observed canary share against the configured weight."""

    def __init__(self, alpha: float, state: dict | None = None) -> None:
        self.alpha = alpha
        self.process = SrmEProcess.from_dict(state) if state else SrmEProcess()

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    def update(self, canary_requests: float, champion_requests: float, weight: float) -> str | None:
        """Add a window (``weight`` as a fraction); the one-line reason if the split is off."""
        self.process.update(canary_requests, canary_requests + champion_requests, weight)
        return self.alarm()

    def alarm(self) -> str | None:
        p = self.process
        if p.log_value < math.log(self.threshold) or not p.n:
            return None
        return (f"sample ratio mismatch: canary received {p.k / p.n:.2%} of {p.n:,.0f} requests at "
                f"configured weight {p.weight:.2%} (e={e_value(p.log_value):.3g} >= {self.threshold:g})")

    def evidence(self) -> dict:
        p = self.process
        return {"e_value": e_value(p.log_value), "threshold": self.threshold, "weight": p.weight,
                "canary_requests": p.k, "requests": p.n, "observed_share": (p.k / p.n) if p.n else None}

    def to_dict(self) -> dict:
        return self.process.to_dict()
