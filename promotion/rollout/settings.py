"""The rollout's settings: the whole policy, validated into typed values before any traffic moves.

A policy file can load and still hold values a rollout cannot act on: a NaN ``alpha``
(every comparison with NaN is false, so range checks pass it), an error-rate SLO of 0, an
infinite ratio that switches a test off, a step whose hold outlasts its deadline. Found
only once the canary takes traffic, such a value crashes the analysis and leaves the
canary unmonitored. So the rollout reads every setting it will use here, once, and
refuses the policy with one line per problem (file, line, field) when one is unusable::

    from promotion.rollout.settings import RolloutSettings
    settings = RolloutSettings.from_policy(policy)   # ConfigError (exit 2) otherwise
    settings.steps[0].weight, settings.analysis.alpha, settings.shadow
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from promotion.config import Policy, Step
from promotion.errors import ConfigError

MAX_STEPS = 50  # as many as a policy may list; an exponential ramp may not produce more


@dataclass(frozen=True)
class Shadow:
    """The shadow phase before the first step: mirrored traffic only."""

    percent: float
    hold_s: float
    min_requests: int
    min_agreement: float
    max_s: float  # the phase's deadline: still undecided then is inconclusive
    # rollout.shadow.disagreement.tolerance: disagreement judged against the rate the gates
    # measured between the two versions (promotion.analysis.score_shift); None: min_agreement only
    disagreement_tolerance: float | None = None
    min_agreement_set: bool = False  # the policy names min_agreement: a floor even with a measured rate


@dataclass(frozen=True)
class Experiment:
    """``rollout.experiment``: the split held, the KPI whose lift must be shown, the deadline."""

    canary_weight: float
    kpi: str
    min_effect: float
    max_duration_s: float
    alpha: float


@dataclass(frozen=True)
class RolloutSettings:
    """Everything a rollout acts on, each value checked."""

    strategy: str
    steps: tuple[Step, ...]
    shadow: Shadow | None
    interval_s: float
    inconclusive: str
    analysis: Any  # promotion.analysis.judge.AnalysisSettings
    probation: Any = None  # promotion.rollout.probation.ProbationSettings; None: none after 100%
    experiment: Experiment | None = None  # strategy experiment only

    @classmethod
    def from_policy(cls, policy: Policy) -> "RolloutSettings":
        """Validate ``policy``'s rollout, SLO and analysis sections; ConfigError names each problem."""
        check = _Checker(policy)
        rollout = ("rollout",)
        interval = check.number(rollout + ("interval_s",), policy.interval_s, low=0, low_open=True, high=3600)
        if policy.inconclusive not in ("rollback", "wait"):
            check.problem(rollout + ("inconclusive",), "must be 'rollback' or 'wait'")
        shadow = _shadow(check, policy)
        experiment = _experiment(check, policy) if policy.strategy == "experiment" else None
        steps = _steps(check, policy, shadow) if experiment is None else _experiment_steps(policy, experiment)
        analysis = _analysis(check, policy)
        from promotion.rollout.probation import settings_from

        probation = settings_from(check, policy)
        check.raise_if_any()
        return cls(strategy=policy.strategy, steps=tuple(steps), shadow=shadow, interval_s=interval,
                   inconclusive=policy.inconclusive, analysis=analysis, probation=probation,
                   experiment=experiment)


class _Checker:
    """Collects ``file:line path: message`` problems for one policy."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.problems: list[str] = []

    def problem(self, path: tuple, message: str) -> None:
        dotted = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))
        line = self.policy.line_of(*path)
        self.problems.append(f"{self.policy.display}:{line} {dotted}: {message}")

    def number(self, path: tuple, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, default: float = 0.0) -> float:
        """``value`` as a finite float within the bounds, else a problem (and ``default``)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, "must be a number")
            return default
        value = float(value)
        if not math.isfinite(value):
            self.problem(path, "must be a finite number")
            return default
        if low is not None and (value <= low if low_open else value < low):
            self.problem(path, f"must be {'>' if low_open else '>='} {low:g}")
            return default
        if high is not None and (value >= high if high_open else value > high):
            self.problem(path, f"must be {'<' if high_open else '<='} {high:g}")
            return default
        return value

    def integer(self, path: tuple, value: Any, *, low: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                value = int(value)
            else:
                self.problem(path, "must be an integer")
                return low
        if value < low:
            self.problem(path, f"must be >= {low}")
            return low
        return value

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def _shadow(check: _Checker, policy: Policy) -> Shadow | None:
    from promotion.rollout.schedule import SHADOW_DEADLINE_S, shadow_phase_defaults

    if not policy.shadow and policy.strategy != "blue_green":
        return None
    given = {**shadow_phase_defaults(), **(policy.shadow or {})}
    at = ("rollout", "shadow")
    hold = check.number(at + ("hold_s",), given["hold_s"], low=0, high=86400)
    return Shadow(
        percent=check.number(at + ("percent",), given["percent"], low=0, low_open=True, high=100, default=100.0),
        hold_s=hold,
        min_requests=check.integer(at + ("min_requests",), given["min_requests"]),
        min_agreement=check.number(at + ("min_agreement",), given["min_agreement"], low=0, high=1),
        max_s=hold + SHADOW_DEADLINE_S,
        disagreement_tolerance=_disagreement_tolerance(check, given.get("disagreement"), at + ("disagreement",)),
        min_agreement_set="min_agreement" in (policy.shadow or {}),
    )


def _disagreement_tolerance(check: _Checker, given, at: tuple) -> float | None:
    if given is None:
        return None
    if not isinstance(given, dict):
        check.problem(at, "must be a mapping such as {tolerance: 0.02}")
        return None
    return check.number(at + ("tolerance",), given.get("tolerance", 0.0), low=0, high=1, high_open=True,
                        default=0.0)


def _experiment(check: _Checker, policy: Policy) -> Experiment | None:
    """``rollout.experiment``, checked; its KPI must be one of ``analysis.kpis``."""
    ex, at = policy.experiment or {}, ("rollout", "experiment")
    if not ex:
        check.problem(at, "the experiment strategy needs rollout.experiment")
        return None
    weights = ex.get("weights") or {}
    canary = check.number(at + ("weights", "canary"), weights.get("canary"), low=0, low_open=True, high=100,
                          high_open=True, default=10.0)
    if "champion" in weights:
        champion = check.number(at + ("weights", "champion"), weights.get("champion"), low=0, low_open=True,
                                high=100, high_open=True, default=100.0 - canary)
        if not math.isclose(canary + champion, 100.0):
            check.problem(at + ("weights", "champion"), f"canary + champion must be 100, not {canary + champion:g}")
    names = [k.get("name") for k in (policy.analysis or {}).get("kpis") or () if isinstance(k, dict)]
    if ex.get("kpi") not in names:
        known = ", ".join(map(str, names)) or "none is defined"
        check.problem(at + ("kpi",), f"must name one of analysis.kpis ({known})")
    alpha = check.number(at + ("alpha",), ex.get("alpha", (policy.analysis or {}).get("alpha", 0.05)), low=0,
                         low_open=True, high=0.5, high_open=True, default=0.05)
    return Experiment(canary_weight=canary, kpi=str(ex.get("kpi")),
                      min_effect=check.number(at + ("min_effect",), ex.get("min_effect"), low=0),
                      max_duration_s=check.number(at + ("max_duration_s",), ex.get("max_duration_s"), low=0,
                                                  low_open=True, high=604800, default=86400.0),
                      alpha=alpha)


def _experiment_steps(policy: Policy, experiment: Experiment | None) -> list[Step]:
    """One step that holds the split until the lift is shown or ``max_duration_s``;
    promoting follows it (no 100 % step: the decision is the experiment's)."""
    if experiment is None:
        return []
    need = int((policy.experiment or {}).get("min_requests", 0) or 0)
    return [Step(experiment.canary_weight, 0.0, need, experiment.max_duration_s)]


def _steps(check: _Checker, policy: Policy, shadow: Shadow | None) -> list[Step]:
    from promotion.rollout.schedule import steps_for

    if policy.strategy not in ("steps", "exponential", "blue_green"):
        check.problem(("rollout", "strategy"), "must be one of 'steps', 'exponential', 'blue_green', 'experiment'")
        return []
    if policy.strategy == "exponential":
        at = ("rollout", "exponential")
        e = policy.exponential or {}
        check.number(at + ("initial",), e.get("initial"), low=0, low_open=True, high=100)
        check.number(at + ("rate",), e.get("rate"), low=1, low_open=True, high=100)
        check.number(at + ("max",), e.get("max", 100), low=0, low_open=True, high=100)
        if check.problems:
            return []  # a ramp from unusable numbers is not worth computing
    if policy.strategy == "blue_green" and shadow is None:
        return []
    try:
        steps = steps_for(policy)
    except ValueError as exc:
        check.problem(("rollout", "exponential") if policy.strategy == "exponential" else ("rollout",), str(exc))
        return []
    where = {"steps": lambda i: ("rollout", "steps", i), "exponential": lambda i: ("rollout", "exponential"),
             "blue_green": lambda i: ("rollout", "shadow")}[policy.strategy]
    out: list[Step] = []
    previous = 0.0
    for i, step in enumerate(steps):
        at = where(i)
        # a pause holds the weight before it: 0 when it comes first (nothing moved yet)
        weight = check.number(at + ("weight",), step.weight, low=0, low_open=not step.pause, high=100)
        hold = check.number(at + ("hold_s",), step.hold_s, low=0, high=86400)
        max_s = check.number(at + ("max_s",), step.max_s, low=0, low_open=True, high=86400, default=300.0)
        need = check.integer(at + ("min_requests",), step.min_requests)
        if max_s < hold:
            check.problem(at + ("max_s",), f"must be >= hold_s ({hold:g}): the step could never pass")
        if weight < previous:
            check.problem(at + ("weight",), "step weights must not decrease")
        previous = weight
        out.append(Step(weight, hold, need, max_s, step.pause))
    if out and out[-1].weight != 100:
        check.problem(where(len(out) - 1) + ("weight",), "the last step must be 100")
    if not out:
        check.problem(("rollout",), "no steps to walk through")
    return out


def _analysis(check: _Checker, policy: Policy):
    from promotion.analysis.judge import AnalysisSettings

    a, at = policy.analysis or {}, ("analysis",)
    values = {
        "alpha": check.number(at + ("alpha",), a.get("alpha"), low=0, low_open=True, high=1, high_open=True,
                              default=0.05),
        "error_rate_ratio": check.number(at + ("error_rate_ratio",), a.get("error_rate_ratio"), low=1, default=1.5),
        "latency_quantile": check.number(at + ("latency_quantile",), a.get("latency_quantile"), low=0, low_open=True,
                                         high=1, high_open=True, default=0.9),
        "latency_ratio": check.number(at + ("latency_ratio",), a.get("latency_ratio"), low=1, default=1.5),
        "latency_min_added_ms": check.number(at + ("latency_min_added_ms",), a.get("latency_min_added_ms"), low=0),
        "srm_alpha": check.number(at + ("srm_alpha",), a.get("srm_alpha"), low=0, low_open=True, high=1,
                                  high_open=True, default=0.001),
        "error_rate_max": check.number(("slo", "error_rate_max"), policy.slo.error_rate_max, low=0, low_open=True,
                                       high=1, high_open=True, default=0.05),
        "latency_p95_ms_max": check.number(("slo", "latency_p95_ms_max"), policy.slo.latency_p95_ms_max, low=0,
                                           low_open=True, default=100.0),
        "min_requests": check.integer(("slo", "min_requests"), policy.slo.min_requests, low=1),
    }
    if a.get("labels"):
        from promotion.analysis.label_signal import LabelSettings

        try:
            values["labels"] = LabelSettings.from_policy(a["labels"]).to_dict()
        except (TypeError, ValueError) as exc:  # "field.sub: message" names the field
            field, _, message = str(exc).partition(": ")
            check.problem(at + ("labels",) + (tuple(field.split(".")) if message else ()), message or str(exc))
    _kpis(check, a, values)
    if "score_shift" in a:
        values["score_shift"] = bool((a.get("score_shift") or {}).get("enabled", True))
    if isinstance(policy.shadow, dict) and policy.shadow.get("disagreement") is not None:
        values["shadow_disagreement"] = True  # its test takes a share of alpha, like any signal
    if policy.strategy == "experiment":
        from promotion.analysis.judge import experiment_of

        ex = experiment_of(policy)  # an unknown kpi is _experiment's problem, reported once
        if ex and ex["kpi"] in {k["name"] for k in values.get("kpis") or ()}:
            values["experiment"] = ex
    try:
        return AnalysisSettings(**values)
    except (TypeError, ValueError) as exc:  # a rule of the analysis this module does not know yet
        check.problem(at, str(exc))
        return None


def _kpis(check: _Checker, a: dict, values: dict) -> None:
    """``analysis.kpis`` into ``values["kpis"]``; one problem per unusable field."""
    from promotion.analysis.kpi_signal import KpiSettings

    if not a.get("kpis"):
        return
    out, seen = [], set()
    for i, raw in enumerate(a["kpis"]):
        at = ("analysis", "kpis", i)
        try:
            k = KpiSettings.from_policy(raw)
        except (TypeError, ValueError) as exc:  # "field: message" names the field
            field, _, message = str(exc).partition(": ")
            check.problem(at + ((field,) if message else ()), message or str(exc))
            continue
        if k.name in seen:
            check.problem(at + ("name",), f"{k.name!r} is defined twice")
            continue
        seen.add(k.name)
        out.append(k.to_dict())
    values["kpis"] = out or None
