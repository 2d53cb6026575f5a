"""Traffic schedules from the policy: explicit steps, exponential ramp, blue-green.

Each schedule is a list of :class:`promotion.config.Step` whose last weight is 100.
Blue-green validates the canary with shadow traffic first (see ``shadow_phase``) and then
flips 0 -> 100 in a single step, which is analysed like any other and reverted instantly
on failure.
"""

from __future__ import annotations

from promotion.config import Policy, Step


def steps_for(policy: Policy) -> list[Step]:
    """The weight steps a rollout walks through, ending at 100."""
    if policy.strategy == "steps":
        return list(policy.steps)
    if policy.strategy == "exponential":
        e = policy.exponential
        initial, rate, cap = float(e["initial"]), float(e["rate"]), float(e.get("max", 100))
        hold, min_req, max_s = float(e.get("hold_s", 0)), int(e.get("min_requests", 0)), float(e.get("max_s", 300))
        weights: list[float] = []
        k = 0
        while True:
            w = min(cap, initial * rate ** k)
            if weights and w <= weights[-1]:
                break
            weights.append(round(w, 3))
            if w >= cap:
                break
            k += 1
        out = [Step(w, hold, min_req, max_s) for w in weights]
        if out[-1].weight < 100:
            out.append(Step(100.0, hold, min_req, max_s))
        return out
    if policy.strategy == "blue_green":
        hold = float((policy.shadow or {}).get("hold_s", 0))
        return [Step(100.0, hold, int((policy.shadow or {}).get("min_requests", 0)), 300.0)]
    raise ValueError(f"unknown strategy {policy.strategy!r}")


def shadow_phase(policy: Policy) -> dict | None:
    """Settings of the shadow phase before the first step, or None (blue-green always has one)."""
    if policy.shadow:
        return {"percent": 100.0, "hold_s": 10.0, "min_requests": 100, "min_agreement": 0.95, **policy.shadow}
    if policy.strategy == "blue_green":
        return {"percent": 100.0, "hold_s": 10.0, "min_requests": 100, "min_agreement": 0.95}
    return None
