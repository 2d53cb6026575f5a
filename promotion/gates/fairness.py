"""The fairness gate: how far apart a metric is across the segments of one attribute.

Naming scheme: each version logs, with its training run, one MLflow metric per rate and
segment value, ``<rate>_<segment>_<value>``, where ``<segment>`` is the policy's
attribute name (default ``segment``) and ``<rate>`` any metric name in lower case
(letters, digits, ``_``)::

    tpr_segment_online = 0.97     tpr_segment_pos = 0.96     # a classifier: TPR per segment
    fpr_segment_online = 0.011    fpr_segment_pos = 0.014
    mae_region_eu = 3.1           mae_region_us = 3.4        # a regressor: MAE per region

The policy chooses the rates and how they are judged, one setting per rate:

- ``<rate>_gap_max: g`` blocks when the largest minus the smallest segment value is > g
  (``tpr_gap_max: 0.03``: TPR within 3 points across segments);
- ``<rate>_ratio_max: r`` blocks when the largest value is > r x the smallest (for error
  metrics: ``mae_ratio_max: 1.25``, the worst segment's MAE at most 1.25 x the best's; a
  smallest value of 0 with a larger one is an infinite ratio, and blocks).

Defaults: ``segment: segment``, ``tpr_gap_max: 0.03``, ``fpr_gap_max: 0.03`` (the reference
criteria); the two gaps apply only to a section that names no rate at all. A section
that names any rate (``mae_gap_max: 2.0``) gets exactly the rates it names. Fewer than two
segments logged for a rate means its spread cannot be measured: block.

Example::

    gates:
      fairness:
        segment: region
        mae_gap_max: 2.0
        mae_ratio_max: 1.25
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateSpec

_RATE = r"[a-z][a-z0-9_]*"
_RULE = re.compile(rf"^({_RATE})_(gap|ratio)_max$")


@dataclass(frozen=True)
class Rule:
    """One judged spread: ``rate`` across segments, as a ``gap`` or a ``ratio``, at most ``limit``."""

    rate: str
    kind: str       # "gap" or "ratio"
    limit: float
    key: str        # the policy setting, for annotations


@dataclass(frozen=True)
class FairnessSettings:
    """``gates.fairness``: the segment attribute and the rules, in the policy's order."""

    segment: str
    rules: tuple[Rule, ...]

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "FairnessSettings":
        rules = []
        for key, value in m.items():
            match = _RULE.match(str(key))
            if match:
                rules.append(Rule(match.group(1), match.group(2), float(value), key))
        return cls(str(m.get("segment", "segment")), tuple(rules))


class FairnessGate(GateSpec):
    name = "fairness"
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "segment": {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]{1,100}$"},
            "tpr_gap_max": {"type": "number", "minimum": 0, "maximum": 1},
            "fpr_gap_max": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "patternProperties": {
            rf"^{_RATE}_gap_max$": {"type": "number", "minimum": 0},
            rf"^{_RATE}_ratio_max$": {"type": "number", "minimum": 1},
        },
    }
    defaults = {"segment": "segment", "tpr_gap_max": 0.03, "fpr_gap_max": 0.03}
    Settings = FairnessSettings

    @classmethod
    def with_defaults(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The default gaps only for a section that names no rate; ``segment`` always has one."""
        given = dict(given or {})
        if any(_RULE.match(str(k)) for k in given):
            return {"segment": cls.defaults["segment"], **copy.deepcopy(given)}
        return {**cls.defaults, **copy.deepcopy(given)}

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        s = self.Settings.from_mapping(settings)
        metrics = ctx.challenger().metrics
        checks = [self._judge(ctx, s.segment, rule, metrics) for rule in s.rules]
        if not checks:
            file, line = ctx.policy_line("gates", "fairness")
            checks.append(Check.block("fairness", "the policy sets no gap or ratio to check", file=file, line=line))
        return checks

    def _judge(self, ctx: GateContext, segment: str, rule: Rule, metrics: Mapping[str, Any]) -> Check:
        file, line = ctx.policy_line("gates", "fairness", rule.key)
        name = f"fairness.{rule.rate}_{rule.kind}"
        threshold = f"<= {rule.limit:g}"
        values = per_segment(metrics, rule.rate, segment)
        if len(values) < 2:
            return Check.block(name, f"cannot decide: v{ctx.env.model.version} has {len(values)} "
                                     f"{rule.rate}_{segment}_* metric(s); at least two segments are needed",
                               threshold, file, line)
        hi = max(values, key=values.get)
        lo = min(values, key=values.get)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
        if rule.kind == "gap":
            spread = values[hi] - values[lo]
            what = f"gap {spread:.4g}"
        else:
            spread = values[hi] / values[lo] if values[lo] > 0 else (1.0 if values[hi] == values[lo] else math.inf)
            what = f"ratio {spread:.4g}"
        msg = f"{rule.rate.upper()} by {segment}: {shown}; {what} between {segment} {hi} and {lo}"
        value = round(spread, 6) if math.isfinite(spread) else "inf"
        return Check.judge(name, value, threshold, spread <= rule.limit, msg, file, line)


def per_segment(metrics: Mapping[str, Any], rate: str, segment: str) -> dict[str, float]:
    """``{segment value: metric}`` from the ``<rate>_<segment>_<value>`` metrics (finite numbers only)."""
    pattern = re.compile(rf"^{re.escape(rate)}_{re.escape(segment)}_(.+)$")
    out = {}
    for key, value in metrics.items():
        match = pattern.match(key)
        if match and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[match.group(1)] = float(value)
    return out
