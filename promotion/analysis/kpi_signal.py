"""Business KPIs in the live canary: the policy's ``analysis.kpis``, judged every window.

Each KPI is a ratio per version, ``numerator / denominator``, whose two PromQL templates
the Prometheus metrics source evaluates as *cumulative* counts of one version
(:meth:`promotion.metrics.prometheus.PrometheusProvider.kpi_counts`). In a template,
``{version}`` stands for the model version (an integer) and ``{selector}`` for the
environment's ``metrics.selector``::

    analysis:
      kpis:
        - name: conversion
          numerator: 'sum(shop_conversions_total{version="{version}"})'
          denominator: 'sum(promotion_requests_total{version="{version}", {selector}})'
          direction: higher          # higher | lower is better
          tolerance: 0.01            # relative: must not drop by more than 1 %
          value_max: 1               # the most one denominator unit adds to the numerator

The signal keeps, per KPI and version, the counts *since the canary started*: each
reading's increase over the last one is added (a counter that went down began again, and
its new value is what was counted since), as :func:`promotion.metrics.base.window` does
for the service's own counters. On them:

* :func:`promotion.analysis.kpi.kpi_regression` (anytime-valid, Ville): a canary worse
  than ``(1 - tolerance) x`` the champion (``(1 + tolerance) x`` for lower-is-better) rolls
  back, at the KPI's own share of the policy's ``alpha``
  (:func:`promotion.analysis.budget.alpha_shares`: one share per KPI).
* with ``rollout.strategy: experiment``, :func:`promotion.analysis.kpi.kpi_lift` for the
  experiment's KPI: the step may pass only once the lift's lower bound exceeds
  ``min_effect`` (:func:`promotion.analysis.kpi.experiment_decision`). The experiment's
  ``alpha`` bounds false *promotions*, a different error from a false rollback, so it
  is not taken from the rollback budget.

A KPI that cannot be read (the query failed, returned no series, or counts that cannot be
judged: a numerator above ``denominator x value_max``) decides nothing: the step does
not pass while it lasts, and past the step's ``max_s`` the policy's ``inconclusive`` rule
applies. A template that should read 0 before its first event can say so in PromQL
(``sum(...) or vector(0)``).

Usage::

    sig = KpiSignal([KpiSettings.from_policy(k) for k in cfg], {"conversion": 0.01})
    alarms = sig.update({"conversion": {"canary": (12, 1000), "champion": (240, 19000)}})
    sig.waiting(); sig.evidence()
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from promotion.analysis.bounded import ComparisonState
from promotion.analysis.kpi import KpiCounts, KpiTest, experiment_decision, kpi_lift, kpi_regression

ROLES = ("canary", "champion")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
VERSION_PLACEHOLDER = "{version}"
SELECTOR_PLACEHOLDER = "{selector}"


@dataclass(frozen=True)
class KpiSettings:
    """One entry of the policy's ``analysis.kpis``, checked."""

    name: str
    numerator: str
    denominator: str
    higher_is_better: bool = True
    tolerance: float = 0.01
    value_max: float = 1.0

    def __post_init__(self) -> None:
        if not NAME.match(self.name or ""):
            raise ValueError("name: must be a letter followed by letters, digits, '_', '.' or '-' (at most 64)")
        for field in ("numerator", "denominator"):
            if VERSION_PLACEHOLDER not in getattr(self, field):
                raise ValueError(f"{field}: must contain the {VERSION_PLACEHOLDER} placeholder, or both versions "
                                 "would read the same counts")
        if not (0 <= self.tolerance < 1 and math.isfinite(self.tolerance)):
            raise ValueError("tolerance: must be >= 0 and < 1")
        if not (self.value_max > 0 and math.isfinite(self.value_max)):
            raise ValueError("value_max: must be a finite number > 0")

    @property
    def test(self) -> KpiTest:
        return KpiTest(self.name, self.higher_is_better, self.tolerance, self.value_max)

    @property
    def signal(self) -> str:
        """The budget's name of this KPI's rollback test."""
        return f"kpi:{self.name}"

    def query(self, which: str, version: int, selector: str = "") -> str:
        """The PromQL of ``which`` (numerator | denominator) for ``version``."""
        return (getattr(self, which).replace(VERSION_PLACEHOLDER, str(int(version)))
                .replace(SELECTOR_PLACEHOLDER, selector))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_policy(cls, raw: dict) -> "KpiSettings":
        """From one (schema-checked) ``analysis.kpis`` item; ValueError names the field."""
        direction = raw.get("direction", "higher")
        if direction not in ("higher", "lower"):
            raise ValueError("direction: must be 'higher' or 'lower'")
        return cls(name=str(raw.get("name", "")), numerator=str(raw.get("numerator", "")),
                   denominator=str(raw.get("denominator", "")), higher_is_better=direction == "higher",
                   tolerance=float(raw.get("tolerance", 0.01)), value_max=float(raw.get("value_max", 1.0)))


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.2%}"


def _val(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


class KpiSignal:
    """Per-version KPI counts since the canary started, and the KPI e-processes."""

    def __init__(self, kpis: list[KpiSettings], alphas: dict[str, float], experiment: dict | None = None,
                 state: dict | None = None) -> None:
        self.kpis, self.alphas, self.experiment = list(kpis), dict(alphas), experiment
        s = state or {}
        self.raw = {k: {r: (list(v) if v is not None else None) for r, v in d.items()}
                    for k, d in (s.get("raw") or {}).items()}
        self.acc = {k: {r: list(v) for r, v in d.items()} for k, d in (s.get("acc") or {}).items()}
        self.states = {k: ComparisonState.from_dict(v) for k, v in (s.get("states") or {}).items()}
        self.last = {k: dict(v) for k, v in (s.get("last") or {}).items()}
        self.unreadable = {k: str(v) for k, v in (s.get("unreadable") or {}).items()}
        self.frozen = bool(s.get("frozen", False))

    def to_dict(self) -> dict:
        return {"raw": self.raw, "acc": self.acc, "states": {k: v.to_dict() for k, v in self.states.items()},
                "last": self.last, "unreadable": dict(self.unreadable), "frozen": self.frozen}

    def freeze_champion(self) -> None:
        """Probation: judge the promoted version's new units against the champion's KPI
        counted during the canary (its pre-promotion baseline): the champion serves nothing."""
        self.frozen = True

    def counts(self, name: str, role: str) -> KpiCounts:
        num, den = (self.acc.get(name) or {}).get(role, [0.0, 0.0])
        return KpiCounts(max(num, 0.0), max(den, 0.0))

    def _add(self, name: str, role: str, reading) -> None:
        num, den = float(reading[0]), float(reading[1])
        if not (math.isfinite(num) and math.isfinite(den)) or num < 0 or den < 0:
            raise ValueError(f"{role} counts ({num:g} / {den:g}) are not counts")
        prev = (self.raw.setdefault(name, {})).get(role)
        acc = self.acc.setdefault(name, {}).setdefault(role, [0.0, 0.0])
        if prev is not None:
            if num < prev[0] or den < prev[1]:  # began again: the new values are what it counted since
                acc[0], acc[1] = acc[0] + num, acc[1] + den
            else:
                acc[0], acc[1] = acc[0] + num - prev[0], acc[1] + den - prev[1]
        # the first reading is the baseline: only what is counted after the canary started is judged
        self.raw[name][role] = [num, den]

    def update(self, readings: dict | None) -> list[str]:
        """Take one reading per KPI: ``{name: {"canary": (num, den), "champion": (num, den)}}``
        or ``{name: "why it could not be read"}``; the alarms it raises."""
        readings = readings or {}
        alarms = []
        for k in self.kpis:
            got = readings.get(k.name)
            if got is None:
                self.unreadable[k.name] = "not measured (the metrics source returned nothing for it)"
                continue
            if isinstance(got, str):
                self.unreadable[k.name] = got
                continue
            try:
                for role in ROLES:
                    self._add(k.name, role, got[role])
                cc, cb = self.counts(k.name, "canary"), self.counts(k.name, "champion")
                result = kpi_regression(self.states.get(k.name, ComparisonState.new()), cc, cb, k.test,
                                        self.alphas[k.signal], paired=not self.frozen)
            except (KeyError, TypeError, ValueError) as exc:
                self.unreadable[k.name] = str(exc)
                continue
            self.unreadable.pop(k.name, None)
            self.states[k.name] = result.state
            self.last[k.name] = result.evidence()
            if result.rejected:
                word = "dropped" if k.higher_is_better else "rose"
                alarms.append(f"kpi {k.name} regressed: canary {_val(cc.value)} vs champion {_val(cb.value)} "
                              f"({word} beyond the {k.tolerance:g} tolerance) on {cc.denominator:,.0f} / "
                              f"{cb.denominator:,.0f} (e={result.e_value:.3g} >= {result.threshold:.3g})")
        return alarms

    # -- the experiment --------------------------------------------------------------------
    def lift(self):
        """The experiment KPI's lift (positive = canary better), or None without an experiment."""
        if not self.experiment:
            return None
        k = next(x for x in self.kpis if x.name == self.experiment["kpi"])
        return kpi_lift(self.counts(k.name, "canary"), self.counts(k.name, "champion"), k.higher_is_better,
                        float(self.experiment["alpha"]), k.value_max)

    def experiment_evidence(self) -> dict | None:
        if not self.experiment:
            return None
        lift = self.lift()
        name = self.experiment["kpi"]
        shown = experiment_decision(lift, float(self.experiment["min_effect"]), 0.0, math.inf).completed
        # records are JSON: an unbounded side (no champion data yet) is written as null
        bounds = {k: (v if v is None or math.isfinite(v) else None) for k, v in lift.to_dict().items()}
        return {"kpi": name, "min_effect": float(self.experiment["min_effect"]), "lift": bounds,
                "shown": bool(shown and name not in self.unreadable),
                "canary": asdict(self.counts(name, "canary")), "champion": asdict(self.counts(name, "champion"))}

    # -- reading ---------------------------------------------------------------------------
    def waiting(self, weight: float = 0.0) -> list[str]:
        """Why the step may not pass: unreadable KPIs, and (below 100 %) an experiment's lift
        not shown; once promoted (a probation at 100 %) the experiment is decided."""
        out = [f"kpi {name} cannot be judged: {why}" for name, why in sorted(self.unreadable.items())]
        ex = self.experiment_evidence()
        if ex is not None and weight < 100 and not ex["shown"] and ex["kpi"] not in self.unreadable:
            lift = ex["lift"]
            out.append(f"experiment: {ex['kpi']} lift not shown: lower bound {_pct(lift['lower'])} <= min_effect "
                       f"{ex['min_effect']:.2%} (estimate {_pct(lift['estimate'])})")
        return out

    def evidence(self) -> dict:
        rows = {}
        for k in self.kpis:
            cc, cb = self.counts(k.name, "canary"), self.counts(k.name, "champion")
            rows[k.name] = {"signal": "kpi", "direction": "higher" if k.higher_is_better else "lower",
                            "tolerance": k.tolerance, "alpha": self.alphas.get(k.signal),
                            "e_value": None, "threshold": None, "rejected": False,
                            **self.last.get(k.name, {}), "canary": cc.value, "champion": cb.value,
                            "counts": {"canary": asdict(cc), "champion": asdict(cb)}}
            if k.name in self.unreadable:
                rows[k.name]["unreadable"] = self.unreadable[k.name]
        out = {"kpis": rows}
        ex = self.experiment_evidence()
        if ex is not None:
            out["experiment"] = ex
        return out
