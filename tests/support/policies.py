"""Policies with rollout timings short enough for tests and benches (seconds, not minutes)."""

from __future__ import annotations


def steps_policy(weights=(5, 25, 100), *, hold_s: float = 1, min_requests: int = 20, max_s: float = 60,
                 interval_s: float = 0.5, latency_p95_ms_max: float = 250, error_rate_max: float = 0.05,
                 gates: str = "lineage: {}", environment: str = "prod", latency_min_added_ms: float = 3,
                 analysis: str = "") -> str:
    """``policies/<env>.yaml`` text: the ``gates`` given, a canary through ``weights``, an SLO.

    ``hold_s``, ``min_requests`` and ``max_s`` apply to every step; a tuple for ``hold_s``
    gives each step its own hold. ``latency_min_added_ms`` is the shipped policies' floor:
    a canary replica at a few requests a second answers a millisecond or so slower than a
    busy champion (it wakes from idle for each request), which is not a regression.
    ``analysis``: further ``analysis`` keys, as YAML lines indented by two spaces.
    """
    holds = hold_s if isinstance(hold_s, tuple) else (hold_s,) * len(weights)
    steps = "".join(f"    - {{weight: {w}, hold_s: {h:g}, min_requests: {min_requests}, max_s: {max_s:g}}}\n"
                    for w, h in zip(weights, holds))
    return (f"apiVersion: promotion/v1\nenvironment: {environment}\ngates:\n  {gates}\n"
            f"rollout:\n  strategy: steps\n  steps:\n{steps}  interval_s: {interval_s:g}\n"
            f"slo:\n  error_rate_max: {error_rate_max:g}\n  latency_p95_ms_max: {latency_p95_ms_max:g}\n"
            f"  min_requests: {min_requests}\n"
            f"analysis:\n  latency_min_added_ms: {latency_min_added_ms:g}\n{analysis}")
