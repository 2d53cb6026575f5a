"""Traffic schedules from the policy: explicit steps, exponential ramp, blue-green.

Each schedule is a list of :class:`promotion.config.Step` whose last weight is 100.
Blue-green validates the canary with shadow traffic first (see ``shadow_phase``) and then
flips 0 -> 100 in a single step, which is analysed like any other and reverted instantly
on failure.
"""

from __future__ import annotations

from promotion.config import Policy, Step

MAX_RAMP_STEPS = 50


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
            if len(weights) >= MAX_RAMP_STEPS:
                # a rate just above 1 would otherwise ramp for ever
                raise ValueError(f"the exponential ramp needs more than {MAX_RAMP_STEPS} steps to reach {cap:g}%; "
                                 "raise initial or rate")
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
        # after the flip the new version serves alone: hold it as long as the shadow was held
        shadow = shadow_phase(policy) or shadow_phase_defaults()
        return [Step(100.0, shadow["hold_s"], int(shadow["min_requests"]), shadow["max_s"])]
    raise ValueError(f"unknown strategy {policy.strategy!r}")


SHADOW_DEADLINE_S = 300.0  # past its hold, how long a shadow phase may wait for enough mirrored requests


def shadow_phase_defaults() -> dict:
    """The shadow phase's settings where the policy gives none."""
    return {"percent": 100.0, "hold_s": 10.0, "min_requests": 100, "min_agreement": 0.95,
            "max_s": 10.0 + SHADOW_DEADLINE_S}


def shadow_phase(policy: Policy) -> dict | None:
    """Settings of the shadow phase before the first step, or None (blue-green always has one).

    ``max_s`` is the phase's deadline: a shadow still undecided then is inconclusive.
    """
    if policy.shadow:
        out = {**shadow_phase_defaults(), **policy.shadow}
    elif policy.strategy == "blue_green":
        out = shadow_phase_defaults()
    else:
        return None
    out["hold_s"] = float(out["hold_s"])
    out["max_s"] = out["hold_s"] + SHADOW_DEADLINE_S
    return out
