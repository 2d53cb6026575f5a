"""The metrics gate: holdout metrics against absolute bounds and against the champion.

Values come from the registry (the metrics logged with each version's training run, all
on the same fixed holdout). A missing or non-numeric metric blocks.

Policy section (``gates.metrics``)::

    absolute:  {recall: {min: 0.95}, fpr: {max: 0.02}, latency_p95_ms: {max: 100}}
    relative:  {f1: {min_ratio: 1.01}, auc: {max_drop: 0.005}}

Relative rules: ``min_ratio`` (challenger >= r x champion), ``max_ratio`` (challenger <=
r x champion), ``max_drop`` (challenger >= champion - d), ``max_increase`` (challenger <=
champion + d). With no champion (a first promotion) relative checks pass and say so; when
the challenger already is the champion they pass too (nothing changes).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def fmt(x: float) -> str:
    return f"{x:.4g}"


class MetricsGate:
    name = "metrics"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        challenger = ctx.challenger()
        checks = absolute_checks(challenger.metrics, settings.get("absolute") or {}, ctx)
        relative = settings.get("relative") or {}
        if relative:
            champion_version, source = ctx.champion_version()
            champion = ctx.champion()
            if champion is None:
                file, line = ctx.policy_line("gates", "metrics", "relative")
                for metric in relative:
                    checks.append(Check.judge(f"metrics.{metric} vs champion", _number(challenger.metrics, metric),
                                              "no champion", True,
                                              f"no champion in {ctx.env.name} ({source}): nothing to compare with",
                                              file, line))
            elif champion.version == challenger.version:
                for metric in relative:
                    checks.append(Check.judge(f"metrics.{metric} vs champion", _number(challenger.metrics, metric),
                                              f"v{champion.version}", True,
                                              f"v{challenger.version} already is the champion in {ctx.env.name}"))
            else:
                checks += relative_checks(challenger.metrics, champion.metrics, champion.version, relative, ctx)
        if not checks:
            file, line = ctx.policy_line("gates", "metrics")
            checks.append(Check.block("metrics", "the policy names no metric to check", file=file, line=line))
        return checks


def absolute_checks(metrics: Mapping[str, Any], rules: Mapping[str, Mapping[str, Any]], ctx: GateContext) -> list[Check]:
    checks = []
    for metric, bound in rules.items():
        file, line = ctx.policy_line("gates", "metrics", "absolute", metric)
        value = _number(metrics, metric)
        name = f"metrics.{metric}"
        wanted = " and ".join(f"{'>=' if k == 'min' else '<='} {fmt(v)}" for k, v in bound.items())
        if value is None:
            checks.append(Check.block(name, f"cannot decide: metric {metric!r} is missing from v{ctx.env.model.version} in the registry",
                                      wanted, file, line))
            continue
        ok = True
        if "min" in bound:
            ok = ok and value >= float(bound["min"])
        if "max" in bound:
            ok = ok and value <= float(bound["max"])
        msg = f"{metric} = {fmt(value)} on the holdout" + ("" if ok else f", must be {wanted}")
        checks.append(Check.judge(name, value, wanted, ok, msg, file, line))
    return checks


def relative_checks(challenger: Mapping[str, Any], champion: Mapping[str, Any], champion_version: int,
                    rules: Mapping[str, Mapping[str, Any]], ctx: GateContext) -> list[Check]:
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
        if "min_ratio" in rule:
            need = float(rule["min_ratio"]) * theirs
            bounds.append((f">= {fmt(need)} ({rule['min_ratio']} x v{champion_version})", ours >= need))
        if "max_ratio" in rule:
            need = float(rule["max_ratio"]) * theirs
            bounds.append((f"<= {fmt(need)} ({rule['max_ratio']} x v{champion_version})", ours <= need))
        if "max_drop" in rule:
            need = theirs - float(rule["max_drop"])
            bounds.append((f">= {fmt(need)} (v{champion_version} - {rule['max_drop']})", ours >= need))
        if "max_increase" in rule:
            need = theirs + float(rule["max_increase"])
            bounds.append((f"<= {fmt(need)} (v{champion_version} + {rule['max_increase']})", ours <= need))
        if not bounds:
            checks.append(Check.block(name, f"cannot decide: no rule given for {metric}", None, file, line))
            continue
        ok = all(b for _, b in bounds)
        threshold = " and ".join(t for t, _ in bounds)
        msg = f"{metric}: v{ctx.env.model.version} {fmt(ours)} vs v{champion_version} {fmt(theirs)}"
        checks.append(Check.judge(name, ours, threshold, ok, msg if ok else msg + f", must be {threshold}", file, line))
    return checks
