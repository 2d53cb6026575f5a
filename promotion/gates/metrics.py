"""The metrics gate: holdout metrics against absolute bounds and against the champion.

Values come from the registry (the metrics logged with each version's training run, all
on the same fixed holdout). Any metric the version logged can be named, classification
and regression alike (``recall``, ``auc``, ``rmse``, ``mae``, ``log_loss``...). A missing or
non-numeric metric blocks.

Policy section (``gates.metrics``)::

    absolute:  {recall: {min: 0.95}, fpr: {max: 0.02}, latency_p95_ms: {max: 100}}
    relative:  {f1: {min_ratio: 1.01}, auc: {max_drop: 0.005}}

    # a regression model
    absolute:  {rmse: {max: 3.0}}
    relative:  {rmse: {max_ratio: 1.0}, mae: {max_ratio: 1.02}}

Relative rules: ``min_ratio`` (challenger >= r x champion), ``max_ratio`` (challenger <=
r x champion), ``max_drop`` (challenger >= champion - d), ``max_increase`` (challenger <=
champion + d). With no champion (a first promotion) relative checks pass and say so; when
the challenger already is the champion they pass too (nothing changes).

Defaults: the reference criteria of a binary classifier (``recall >= 0.95``, ``fpr <=
0.02``, ``latency_p95_ms <= 100``, ``f1 >= 1.01 x champion``, ``auc`` at most 0.005 below
it) apply only to a section that names no metric at all (``metrics: {}``). A section that
names any metric gets exactly the metrics it names: ``absolute: {rmse: {max: 3}}`` checks
rmse alone, without recall or fpr merged in.

Naming scheme: the metric names are the run's MLflow metric keys, as logged
(``mlflow.log_metric("rmse", ...)``); the check is called ``metrics.<name>`` (absolute)
or ``metrics.<name> vs champion`` (relative).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateSpec

# MLflow's own rule for metric keys: alphanumerics, _ - . / and spaces
_METRIC_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-/ ]{1,250}$"}
_BOUND = {"type": "object", "additionalProperties": False, "minProperties": 1,
          "properties": {"min": {"type": "number"}, "max": {"type": "number"}}}
_RELATIVE = {"type": "object", "additionalProperties": False, "minProperties": 1,
             "properties": {"min_ratio": {"type": "number", "exclusiveMinimum": 0},
                            "max_ratio": {"type": "number", "exclusiveMinimum": 0},
                            "max_drop": {"type": "number", "minimum": 0},
                            "max_increase": {"type": "number", "minimum": 0}}}


@dataclass(frozen=True)
class Bound:
    """An absolute rule: ``min <= value <= max`` (either side optional)."""

    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Relative:
    """A rule against the champion's value of the same metric."""

    min_ratio: float | None = None
    max_ratio: float | None = None
    max_drop: float | None = None
    max_increase: float | None = None


@dataclass(frozen=True)
class MetricsSettings:
    """``gates.metrics``: absolute bounds and relative rules, by metric name."""

    absolute: dict[str, Bound]
    relative: dict[str, Relative]

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "MetricsSettings":
        def num(x):
            return None if x is None else float(x)

        return cls({k: Bound(num(v.get("min")), num(v.get("max"))) for k, v in (m.get("absolute") or {}).items()},
                   {k: Relative(*(num(v.get(f)) for f in ("min_ratio", "max_ratio", "max_drop", "max_increase")))
                    for k, v in (m.get("relative") or {}).items()})


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def fmt(x: float) -> str:
    return f"{x:.4g}"


class MetricsGate(GateSpec):
    name = "metrics"
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"absolute": {"type": "object", "propertyNames": _METRIC_NAME, "additionalProperties": _BOUND},
                             "relative": {"type": "object", "propertyNames": _METRIC_NAME,
                                          "additionalProperties": _RELATIVE}}}
    defaults = {
        "absolute": {"recall": {"min": 0.95}, "fpr": {"max": 0.02}, "latency_p95_ms": {"max": 100.0}},
        "relative": {"f1": {"min_ratio": 1.01}, "auc": {"max_drop": 0.005}},
    }
    Settings = MetricsSettings

    @classmethod
    def with_defaults(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """The section as given when it names any metric; else the classification defaults."""
        given = dict(given or {})
        if given.get("absolute") or given.get("relative"):
            return copy.deepcopy(given)
        return copy.deepcopy(cls.defaults)

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        s = self.Settings.from_mapping(settings)
        challenger = ctx.challenger()
        checks = absolute_checks(challenger.metrics, s.absolute, ctx)
        if s.relative:
            champion_version, source = ctx.champion_version()
            champion = ctx.champion()
            if champion is None:
                file, line = ctx.policy_line("gates", "metrics", "relative")
                for metric in s.relative:
                    checks.append(Check.judge(f"metrics.{metric} vs champion", _number(challenger.metrics, metric),
                                              "no champion", True,
                                              f"no champion in {ctx.env.name} ({source}): nothing to compare with",
                                              file, line))
            elif ctx.challenger_is_champion():
                for metric in s.relative:
                    checks.append(Check.judge(f"metrics.{metric} vs champion", _number(challenger.metrics, metric),
                                              f"v{champion.version}", True,
                                              f"v{challenger.version} already is the champion in {ctx.env.name}"))
            else:
                checks += relative_checks(challenger.metrics, champion.metrics, champion.version, s.relative, ctx)
        if not checks:
            file, line = ctx.policy_line("gates", "metrics")
            checks.append(Check.block("metrics", "the policy names no metric to check", file=file, line=line))
        return checks


def absolute_checks(metrics: Mapping[str, Any], rules: Mapping[str, Bound], ctx: GateContext) -> list[Check]:
    """One check per absolute rule: the challenger's value within ``min``/``max``."""
    checks = []
    for metric, bound in rules.items():
        file, line = ctx.policy_line("gates", "metrics", "absolute", metric)
        value = _number(metrics, metric)
        name = f"metrics.{metric}"
        parts = ([f">= {fmt(bound.min)}"] if bound.min is not None else []) + \
                ([f"<= {fmt(bound.max)}"] if bound.max is not None else [])
        wanted = " and ".join(parts)
        if value is None:
            checks.append(Check.block(name, f"cannot decide: metric {metric!r} is missing from v{ctx.env.model.version} in the registry",
                                      wanted, file, line))
            continue
        ok = (bound.min is None or value >= bound.min) and (bound.max is None or value <= bound.max)
        msg = f"{metric} = {fmt(value)} on the holdout" + ("" if ok else f", must be {wanted}")
        checks.append(Check.judge(name, value, wanted, ok, msg, file, line))
    return checks


def relative_checks(challenger: Mapping[str, Any], champion: Mapping[str, Any], champion_version: int,
                    rules: Mapping[str, Relative], ctx: GateContext) -> list[Check]:
    """One check per relative rule: the challenger's value against the champion's."""
    checks = []
    for metric, rule in rules.items():
        file, line = ctx.policy_line("gates", "metrics", "relative", metric)
        name = f"metrics.{metric} vs champion"
        ours, theirs = _number(challenger, metric), _number(champion, metric)
        if ours is None or theirs is None:
            who = f"v{ctx.env.model.version} (challenger)" if ours is None else f"v{champion_version} (champion)"
            checks.append(Check.block(name, f"cannot decide: metric {metric!r} is missing from {who}", None, file, line))
            continue
        bounds: list[tuple[str, bool]] = []
        if rule.min_ratio is not None:
            need = rule.min_ratio * theirs
            bounds.append((f">= {fmt(need)} ({fmt(rule.min_ratio)} x v{champion_version})", ours >= need))
        if rule.max_ratio is not None:
            need = rule.max_ratio * theirs
            bounds.append((f"<= {fmt(need)} ({fmt(rule.max_ratio)} x v{champion_version})", ours <= need))
        if rule.max_drop is not None:
            need = theirs - rule.max_drop
            bounds.append((f">= {fmt(need)} (v{champion_version} - {fmt(rule.max_drop)})", ours >= need))
        if rule.max_increase is not None:
            need = theirs + rule.max_increase
            bounds.append((f"<= {fmt(need)} (v{champion_version} + {fmt(rule.max_increase)})", ours <= need))
        if not bounds:
            checks.append(Check.block(name, f"cannot decide: no rule given for {metric}", None, file, line))
            continue
        ok = all(b for _, b in bounds)
        threshold = " and ".join(t for t, _ in bounds)
        msg = f"{metric}: v{ctx.env.model.version} {fmt(ours)} vs v{champion_version} {fmt(theirs)}"
        checks.append(Check.judge(name, ours, threshold, ok, msg if ok else msg + f", must be {threshold}", file, line))
    return checks
