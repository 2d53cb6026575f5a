"""The fairness gate: TPR and FPR gaps across segments on the holdout.

Reads the per-segment metrics each version logs (``tpr_<segment>_<s>``,
``fpr_<segment>_<s>``, where ``<segment>`` is the policy's attribute name) and blocks when
the largest gap between two segments exceeds the policy (default 0.03). Fewer than two
segments means the gap cannot be measured: block.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext


class FairnessGate:
    name = "fairness"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        metrics = ctx.challenger().metrics
        segment = settings.get("segment", "segment")
        checks = []
        for rate, key in (("tpr", "tpr_gap_max"), ("fpr", "fpr_gap_max")):
            if key not in settings:
                continue
            file, line = ctx.policy_line("gates", "fairness", key)
            limit = float(settings[key])
            name = f"fairness.{rate}_gap"
            pattern = re.compile(rf"^{rate}_{re.escape(segment)}_(.+)$")
            values = {m.group(1): float(v) for k, v in metrics.items()
                      if (m := pattern.match(k)) and isinstance(v, (int, float)) and not math.isnan(float(v))}
            if len(values) < 2:
                checks.append(Check.block(name, f"cannot decide: v{ctx.env.model.version} has {len(values)} "
                                                f"{rate}_{segment}_* metric(s); at least two segments are needed",
                                          f"<= {limit}", file, line))
                continue
            hi = max(values, key=values.get)
            lo = min(values, key=values.get)
            gap = values[hi] - values[lo]
            msg = (f"{rate.upper()} by {segment}: " + ", ".join(f"{s}={v:.4f}" for s, v in sorted(values.items()))
                   + f"; gap {gap:.4f} between {segment} {hi} and {lo}")
            checks.append(Check.judge(name, round(gap, 6), f"<= {limit}", gap <= limit, msg, file, line))
        if not checks:
            file, line = ctx.policy_line("gates", "fairness")
            checks.append(Check.block("fairness", "the policy sets no gap to check", file=file, line=line))
        return checks
