"""The canary verdict: turns measured windows into PASS, FAIL or INCONCLUSIVE.

:class:`CanaryAnalysis` accumulates evidence over every window of a rollout, across
steps (5 % -> 25 % -> 100 %), and says after each window whether the step may advance.
Its state is plain JSON, so the controller persists it between ticks and a killed
process resumes where it stopped::

    from promotion.analysis import AnalysisSettings, CanaryAnalysis, Outcome
    analysis = CanaryAnalysis(AnalysisSettings.from_policy(policy))
    verdict = analysis.observe(window, champion=6, canary=7, canary_weight=5)
    if verdict.outcome is Outcome.FAIL:
        rollback(reasons=verdict.reasons, evidence=verdict.evidence)
    state = analysis.to_dict()                      # persist; later:
    analysis = CanaryAnalysis.from_dict(state)

Tests, each anytime-valid (see :mod:`promotion.analysis.sequential`). The policy's
``alpha`` bounds the probability that a healthy canary is ever rolled back by them; it
is split evenly (Bonferroni, :func:`promotion.analysis.budget.alpha_shares`) over four
tests, alpha/4 each, plus one share per signal the policy enables (``analysis.labels``:
one for the label metric, one more for its per-segment family):

1. errors vs champion — H0: canary error rate <= champion's. For each window, which
   version each error came from, given the canary's share of the window's requests
   (Lindon & Malek 2022). Rolls back only when H0 is rejected *and* the canary's
   observed error rate is at least ``error_rate_ratio`` times the champion's, so a
   real but small difference does not cost a rollout. (The ratio is a point estimate:
   a canary just under it can still be rolled back while data are few.)
2. latency vs champion — an exceedance e-process at the champion's quantile. H0: canary
   requests are no more often slower than ``t`` than champion requests, where ``t`` is
   the bucket bound holding the champion's ``latency_quantile``, taken from earlier
   windows (so it is fixed before the window it tests). The same conditional e-process,
   on which version each slow request came from. Rolls back only when H0 is rejected
   *and* the canary's estimated ``latency_quantile`` is at least ``latency_ratio``
   times the champion's and at least ``latency_min_added_ms`` above it (on a 2 ms
   service, a canary 1 ms slower is 1.5x but rarely worth a rollback).

Requiring the ratio (and the floor) as well only removes rollbacks, so each test's false-rollback rate
stays within its share of alpha.
3. error-rate SLO and 4. p95-latency SLO (:mod:`promotion.analysis.slo`).
5. (``analysis.labels``) the label metric vs champion, on labels fed back for requests
   served since the canary started, and per segment with e-BH or Bonferroni
   (:mod:`promotion.analysis.label_signal`: labels only roll back; with
   ``require_labels_to_promote`` the 100 % step waits for ``min_labels``).
6. (``analysis.kpis``) each business KPI vs champion, one share each
   (:mod:`promotion.analysis.kpi_signal`); a KPI that cannot be read holds the step; with
   ``rollout.strategy: experiment`` the step passes only once the KPI's lift is shown.
7. (``analysis.score_shift``) the score distributions of both versions on the same
   traffic (:mod:`promotion.analysis.shift_signal`), one share; it only rolls back.

Plus the sample-ratio check at ``srm_alpha`` (:mod:`promotion.analysis.srm`). At 100 %
there is no champion traffic: only the SLOs (and what was already learned) apply.

PASS needs, in the current step, at least ``min_requests`` canary requests, champion
traffic to compare with (below 100 %), a latency histogram, canary requests in this
very window, and no alarm. No data is never a pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum

from promotion.analysis.budget import alpha_shares
from promotion.analysis.kpi_signal import KpiSettings, KpiSignal
from promotion.analysis.label_signal import LabelSettings, LabelSignal
from promotion.analysis.sequential import OddsEProcess, e_value
from promotion.analysis.shift_signal import ScoreShiftSignal
from promotion.analysis.slo import SloCheck, bound_at_or_above
from promotion.analysis.srm import SampleRatioCheck
from promotion.metrics.base import VersionCounters, Window

STATE_VERSION = 1

# Champion observations needed before its quantile bound is trusted: about ten
# requests beyond the quantile.
_MIN_TAIL_OBSERVATIONS = 10


class Outcome(str, Enum):
    """What the analysis concludes after a window."""

    PASS = "pass"
    """Enough evidence that this step is healthy: sample minimum met, no alarm."""
    FAIL = "fail"
    """A regression, SLO breach or sample-ratio mismatch: roll back."""
    INCONCLUSIVE = "inconclusive"
    """Not enough data yet: do not advance, keep measuring."""

    @property
    def completed(self) -> bool:
        """Whether the step is decided (PASS or FAIL)."""
        return self is not Outcome.INCONCLUSIVE


@dataclass(frozen=True)
class Verdict:
    """The analysis after one window: outcome, one-line reasons, numbers for the record."""

    outcome: Outcome
    reasons: tuple[str, ...]
    evidence: dict = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.outcome.completed

    def to_dict(self) -> dict:
        return {"outcome": self.outcome.value, "reasons": list(self.reasons), "evidence": self.evidence}


@dataclass(frozen=True)
class AnalysisSettings:
    """The policy's ``analysis`` and ``slo`` sections, as the analysis needs them."""

    alpha: float = 0.05
    error_rate_ratio: float = 1.5
    latency_quantile: float = 0.9
    latency_ratio: float = 1.5
    latency_min_added_ms: float = 0.0
    srm_alpha: float = 0.001
    error_rate_max: float = 0.05
    latency_p95_ms_max: float = 100.0
    min_requests: int = 50
    labels: dict | None = None  # LabelSettings.to_dict(); None: no label signal
    kpis: list | None = None  # [KpiSettings.to_dict()]; None: no KPI signal
    experiment: dict | None = None  # {"kpi", "min_effect", "alpha"}: the experiment strategy's lift
    score_shift: bool = False
    shadow_disagreement: bool = False  # rollout.shadow.disagreement: a share for the shadow's test

    def __post_init__(self) -> None:
        if self.labels is not None:
            LabelSettings(**self.labels)  # raises ValueError on a bad rule
        names = [KpiSettings(**k).name for k in self.kpis or ()]
        if len(set(names)) != len(names):
            raise ValueError("kpis: names must be distinct")
        if self.experiment is not None and self.experiment.get("kpi") not in names:
            raise ValueError(f"experiment.kpi: {self.experiment.get('kpi')!r} is not one of analysis.kpis")
        if not 0 < self.alpha < 1 or not 0 < self.srm_alpha < 1:
            raise ValueError("alpha and srm_alpha must be in (0, 1)")
        if not 0 < self.latency_quantile < 1:
            raise ValueError("latency_quantile must be in (0, 1)")
        if self.error_rate_ratio < 1 or self.latency_ratio < 1:
            raise ValueError("error_rate_ratio and latency_ratio must be >= 1")
        if not self.latency_min_added_ms >= 0:
            raise ValueError("latency_min_added_ms must be >= 0")
        if not 0 < self.error_rate_max < 1:
            raise ValueError("error_rate_max must be in (0, 1)")

    @classmethod
    def from_policy(cls, policy) -> "AnalysisSettings":
        """From a loaded :class:`promotion.config.Policy` (defaults already filled in)."""
        a = policy.analysis
        return cls(alpha=float(a["alpha"]), error_rate_ratio=float(a["error_rate_ratio"]),
                   latency_quantile=float(a["latency_quantile"]), latency_ratio=float(a["latency_ratio"]),
                   latency_min_added_ms=float(a["latency_min_added_ms"]),
                   srm_alpha=float(a["srm_alpha"]), error_rate_max=policy.slo.error_rate_max,
                   latency_p95_ms_max=policy.slo.latency_p95_ms_max, min_requests=policy.slo.min_requests,
                   labels=LabelSettings.from_policy(a["labels"]).to_dict() if a.get("labels") else None,
                   kpis=[KpiSettings.from_policy(k).to_dict() for k in a["kpis"]] if a.get("kpis") else None,
                   experiment=experiment_of(policy),
                   score_shift=bool((a.get("score_shift") or {}).get("enabled", True)) if "score_shift" in a else False,
                   shadow_disagreement=isinstance(getattr(policy, "shadow", None), dict)
                   and policy.shadow.get("disagreement") is not None)

    @property
    def label_settings(self) -> LabelSettings | None:
        return LabelSettings(**self.labels) if self.labels else None

    @property
    def kpi_settings(self) -> list[KpiSettings]:
        return [KpiSettings(**k) for k in self.kpis or ()]

    @property
    def signals(self) -> tuple[str, ...]:
        """The budget's names of the enabled signals beyond the base tests."""
        ls = self.label_settings
        return ((ls.signals if ls else ()) + tuple(k.signal for k in self.kpi_settings)
                + (("score_shift",) if self.score_shift else ())
                + (("shadow_disagreement",) if self.shadow_disagreement else ()))

    @property
    def shares(self) -> dict[str, float]:
        """Each test's level (Bonferroni over the base tests and the enabled signals)."""
        return alpha_shares(self.alpha, self.signals)

    @property
    def alpha_each(self) -> float:
        """The false-rollback budget of each base test (alpha/4 without extra signals)."""
        return self.shares["errors"]


def experiment_of(policy) -> dict | None:
    """What the analysis needs of ``rollout.experiment`` (None without the experiment strategy)."""
    ex = getattr(policy, "experiment", None)
    if policy.strategy != "experiment" or not ex:
        return None
    return {"kpi": ex.get("kpi"), "min_effect": float(ex.get("min_effect", 0.0)),
            "alpha": float(ex.get("alpha", policy.analysis.get("alpha", 0.05)))}


def latency_bound_for(champion_hist: VersionCounters, quantile: float) -> float | None:
    """The bucket bound that holds the champion's ``quantile``; ``None`` while its
    history is too thin or the quantile sits in the last (unbounded) bucket."""
    total = champion_hist.latency_count
    if total * (1 - quantile) < _MIN_TAIL_OBSERVATIONS:
        return None
    for b, c in zip(champion_hist.latency_bounds, champion_hist.latency_counts):
        if math.isinf(b):
            return None
        if c >= quantile * total:
            return b
    return None


def _add_hist(acc: dict | None, d: VersionCounters) -> dict | None:
    """Sum of histograms as a JSON-ready dict; restarts if the buckets changed."""
    if not d.latency_counts:
        return acc
    if acc and VersionCounters.from_dict(acc).latency_bounds == d.latency_bounds:
        counts = [x + y for x, y in zip(acc["latency_counts"], d.latency_counts)]
        return {**acc, "latency_counts": counts}
    return VersionCounters(latency_bounds=d.latency_bounds, latency_counts=d.latency_counts).to_dict()


def _quantile_ms(hist: dict | None, q: float = 0.95) -> float | None:
    if not hist:
        return None
    q = VersionCounters.from_dict(hist).latency_quantile(q)
    return None if q is None else q * 1000


def _counts(d: VersionCounters) -> tuple[float, float]:
    n = max(d.requests, 0.0)
    return n, min(max(d.errors, 0.0), n)


class CanaryAnalysis:
    """Evidence about one canary against one champion, over a whole rollout."""

    def __init__(self, settings: AnalysisSettings, state: dict | None = None) -> None:
        self.settings = settings
        s = state or {}
        self.champion: int | None = s.get("champion")
        self.canary: int | None = s.get("canary")
        self.weight: float | None = s.get("weight")
        self.windows = int(s.get("windows", 0))
        self.step = dict(s.get("step") or {"canary_requests": 0.0, "canary_errors": 0.0,
                                           "champion_requests": 0.0, "champion_errors": 0.0, "latency_seen": False})
        self.totals = dict(s.get("totals") or {"canary_requests": 0.0, "canary_errors": 0.0,
                                               "champion_requests": 0.0, "champion_errors": 0.0})
        hist = s.get("champion_latency")
        self.champion_latency = VersionCounters.from_dict(hist) if hist else VersionCounters()
        self.latency_slow = dict(s.get("latency_slow") or {"canary": 0.0, "canary_n": 0.0, "champion": 0.0,
                                                           "champion_n": 0.0, "t": None})
        e = s.get("e") or {}
        self.errors_vs_champion = OddsEProcess.from_dict(e["errors"]) if "errors" in e else OddsEProcess()
        self.latency_vs_champion = OddsEProcess.from_dict(e["latency"]) if "latency" in e else OddsEProcess()
        self.slo = SloCheck(settings.error_rate_max, settings.latency_p95_ms_max, settings.alpha_each, s.get("slo"))
        self.srm = SampleRatioCheck(settings.srm_alpha, s.get("srm"))
        self.alarms: list[str] = list(s.get("alarms", []))
        ls = settings.label_settings
        self.labels = None
        if ls is not None:
            shares = settings.shares
            self.labels = LabelSignal(ls, shares[ls.signals[0]], shares.get(ls.signals[-1]) if ls.segments else None,
                                      s.get("labels"))
        self.kpis = None
        if settings.kpis:
            self.kpis = KpiSignal(settings.kpi_settings, settings.shares, settings.experiment, s.get("kpis"))
        self.shift = None
        if settings.score_shift:
            self.shift = ScoreShiftSignal(settings.shares["score_shift"], s.get("score_shift"))

    # -- persistence -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready state, settings included."""
        return {
            "state_version": STATE_VERSION, "settings": asdict(self.settings),
            "champion": self.champion, "canary": self.canary, "weight": self.weight, "windows": self.windows,
            "step": dict(self.step), "totals": dict(self.totals),
            "champion_latency": self.champion_latency.to_dict() if self.champion_latency.latency_bounds else None,
            "latency_slow": dict(self.latency_slow),
            "e": {"errors": self.errors_vs_champion.to_dict(), "latency": self.latency_vs_champion.to_dict()},
            "slo": self.slo.to_dict(), "srm": self.srm.to_dict(), "alarms": list(self.alarms),
            **({"labels": self.labels.to_dict()} if self.labels else {}),
            **({"kpis": self.kpis.to_dict()} if self.kpis else {}),
            **({"score_shift": self.shift.to_dict()} if self.shift else {}),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CanaryAnalysis":
        if data.get("state_version") != STATE_VERSION:
            raise ValueError(f"analysis state version {data.get('state_version')!r} is not {STATE_VERSION}")
        return cls(AnalysisSettings(**data["settings"]), data)

    # -- the verdict -------------------------------------------------------------------
    def observe(self, window: Window, champion: int, canary: int, canary_weight: float,
                min_requests: int | None = None, kpis: dict | None = None) -> Verdict:
        """Add one window and judge.

        ``canary_weight`` is the configured canary share in percent (as in the policy's
        steps: 5, 25, 100). A change of weight starts a new step (its own sample count);
        evidence carries over. ``min_requests`` (e.g. the step's own) raises the
        policy's ``slo.min_requests`` for PASS. ``kpis``: this window's KPI readings
        (:meth:`promotion.analysis.kpi_signal.KpiSignal.update`). Once FAIL, always FAIL.
        """
        if not 0 <= canary_weight <= 100:
            raise ValueError(f"canary_weight is a percentage, got {canary_weight}")
        if champion == canary:
            raise ValueError("champion and canary must be different versions")
        if self.canary is None:
            self.champion, self.canary = champion, canary
        elif (self.champion, self.canary) != (champion, canary):
            raise ValueError(f"this analysis is of canary {self.canary} vs champion {self.champion}, "
                             f"not {canary} vs {champion}; start a new CanaryAnalysis")
        if self.weight is None or not math.isclose(canary_weight, self.weight):
            self.weight = float(canary_weight)
            self.step = {"canary_requests": 0.0, "canary_errors": 0.0, "champion_requests": 0.0,
                         "champion_errors": 0.0, "latency_seen": False}
        self.windows += 1
        c, b = window.get(canary), window.get(champion)
        nc, ec = _counts(c)
        nb, eb = _counts(b)
        self.step["canary_requests"] += nc
        self.step["canary_errors"] += ec
        self.step["champion_requests"] += nb
        self.step["champion_errors"] += eb
        self.step["latency_seen"] = bool(self.step["latency_seen"] or c.latency_count > 0)
        self.step["canary_latency"] = _add_hist(self.step.get("canary_latency"), c)
        self.step["champion_latency"] = _add_hist(self.step.get("champion_latency"), b)

        new_alarms: list[str] = []
        w = canary_weight / 100.0
        if 0 < w < 1:
            alarm = self.srm.update(nc, nb, w)
            if alarm:
                new_alarms.append(alarm)
        if nc > 0 and nb > 0:
            new_alarms += self._errors(nc, ec, nb, eb)
        if c.latency_count > 0 and b.latency_count > 0:
            new_alarms += self._latency(c, b)
        if b.latency_count > 0:
            self._remember_champion_latency(b)
        new_alarms += self.slo.update(c)
        if self.labels is not None:
            # every window, at every weight (100 % too): late labels of either version count
            new_alarms += self.labels.update(c, b)
        if self.kpis is not None:
            new_alarms += self.kpis.update(kpis)
        if self.shift is not None and 0 < w < 1:
            new_alarms += self.shift.update(c, b, w)
        for alarm in new_alarms:
            kind = alarm.split(":")[0]
            if not any(a.split(":")[0] == kind for a in self.alarms):
                self.alarms.append(alarm)
        return self._verdict(nc, min_requests)

    def _errors(self, nc: float, ec: float, nb: float, eb: float) -> list[str]:
        share = nc / (nc + nb)
        self.errors_vs_champion.update(ec, ec + eb, share)
        t = self.totals
        t["canary_requests"] += nc
        t["canary_errors"] += ec
        t["champion_requests"] += nb
        t["champion_errors"] += eb
        threshold = 1 / self.settings.alpha_each
        if self.errors_vs_champion.log_value < math.log(threshold):
            return []
        rc, rb = t["canary_errors"] / t["canary_requests"], t["champion_errors"] / t["champion_requests"]
        ratio = math.inf if rb == 0 else rc / rb
        if ratio < self.settings.error_rate_ratio:
            return []
        times = "the champion had none" if math.isinf(ratio) else f"{ratio:.2f}x >= {self.settings.error_rate_ratio:g}x"
        return [f"error rate regressed: canary {rc:.2%} vs champion {rb:.2%} over {t['canary_requests']:,.0f} / "
                f"{t['champion_requests']:,.0f} requests, {times} "
                f"(e={e_value(self.errors_vs_champion.log_value):.3g} >= {threshold:g})"]

    def _latency(self, c: VersionCounters, b: VersionCounters) -> list[str]:
        # The bound comes from earlier windows only, so it is fixed before this window's
        # counts are seen (the e-process needs a predictable null).
        t = latency_bound_for(self.champion_latency, self.settings.latency_quantile)
        if t is None or c.latency_bounds != b.latency_bounds:
            return []
        try:
            slow_c, slow_b = c.slower_than(t), b.slower_than(t)
        except ValueError:
            return []
        share = c.latency_count / (c.latency_count + b.latency_count)
        self.latency_vs_champion.update(slow_c, slow_c + slow_b, share)
        s = self.latency_slow
        s["canary"] += slow_c
        s["canary_n"] += c.latency_count
        s["champion"] += slow_b
        s["champion_n"] += b.latency_count
        s["t"] = t
        s["canary_hist"] = _add_hist(s.get("canary_hist"), c)
        s["champion_hist"] = _add_hist(s.get("champion_hist"), b)
        threshold = 1 / self.settings.alpha_each
        if self.latency_vs_champion.log_value < math.log(threshold):
            return []
        q = self.settings.latency_quantile
        qc = VersionCounters.from_dict(s["canary_hist"]).latency_quantile(q)
        qb = VersionCounters.from_dict(s["champion_hist"]).latency_quantile(q)
        ratio = math.inf if not qb else qc / qb
        added_ms = (qc - qb) * 1000
        floor_ms = self.settings.latency_min_added_ms
        if ratio < self.settings.latency_ratio or added_ms < floor_ms:
            return []
        added = f", +{added_ms:.1f} ms >= {floor_ms:g} ms" if floor_ms else ""
        return [f"latency regressed: canary p{q * 100:g} {qc * 1000:.1f} ms vs champion {qb * 1000:.1f} ms, "
                f"{ratio:.2f}x >= {self.settings.latency_ratio:g}x{added}; {s['canary'] / s['canary_n']:.1%} of canary vs "
                f"{s['champion'] / s['champion_n']:.1%} of champion requests over {t * 1000:g} ms "
                f"(e={e_value(self.latency_vs_champion.log_value):.3g} >= {threshold:g})"]

    def _remember_champion_latency(self, b: VersionCounters) -> None:
        old = self.champion_latency
        if old.latency_bounds and old.latency_bounds == b.latency_bounds:
            counts = tuple(x + y for x, y in zip(old.latency_counts, b.latency_counts))
        else:  # first window, or the service changed its buckets: start over
            counts = b.latency_counts
        self.champion_latency = VersionCounters(latency_bounds=b.latency_bounds, latency_counts=counts)

    def _verdict(self, window_canary_requests: float, min_requests: int | None) -> Verdict:
        evidence = self.evidence()
        if self.alarms:
            return Verdict(Outcome.FAIL, tuple(self.alarms), evidence)
        need = max(self.settings.min_requests, int(min_requests or 0))
        st = self.step
        waiting = []
        if window_canary_requests <= 0:
            waiting.append(f"no data: canary {self.canary} served no requests in this window")
        if st["canary_requests"] < need:
            waiting.append(f"canary served {st['canary_requests']:,.0f} of the {need:,} requests needed in this step")
        if self.weight < 100 and st["champion_requests"] <= 0:
            waiting.append(f"no data: champion {self.champion} served no requests in this step to compare with")
        if st["canary_requests"] > 0 and not st["latency_seen"]:
            waiting.append("no data: canary latency histogram is empty")
        if self.labels is not None:
            waiting += self.labels.waiting(self.weight)
        if self.kpis is not None:
            waiting += self.kpis.waiting(self.weight)
        if waiting:
            return Verdict(Outcome.INCONCLUSIVE, tuple(waiting), evidence)
        return Verdict(Outcome.PASS, (f"healthy: {st['canary_requests']:,.0f} canary requests at weight {self.weight:g}%, "
                                      "no regression, SLO breach or sample-ratio mismatch",), evidence)

    def begin_probation(self) -> None:
        """After the promotion the champion serves nothing: the signals that compare with
        its outcomes (labels; KPIs that support it) judge the promoted version from now on
        against the champion's pre-promotion baseline (:mod:`promotion.rollout.probation`)."""
        for signal in (self.labels, getattr(self, "kpis", None)):
            freeze = getattr(signal, "freeze_champion", None)
            if freeze is not None:
                freeze()

    def evidence(self) -> dict:
        """Numbers for the rollback record and the live view."""
        st, t, s = self.step, self.totals, self.latency_slow
        alpha_each = self.settings.alpha_each

        def rate(errors, requests):
            return errors / requests if requests else None

        return {
            "champion": self.champion, "canary": self.canary, "weight": self.weight, "windows": self.windows,
            "alpha": self.settings.alpha, "alpha_each": alpha_each,
            "step": {"canary_requests": st["canary_requests"], "champion_requests": st["champion_requests"],
                     "canary_error_rate": rate(st["canary_errors"], st["canary_requests"]),
                     "champion_error_rate": rate(st["champion_errors"], st["champion_requests"]),
                     "canary_p95_ms": _quantile_ms(st.get("canary_latency")),
                     "champion_p95_ms": _quantile_ms(st.get("champion_latency"))},
            "errors_vs_champion": {
                "e_value": e_value(self.errors_vs_champion.log_value), "threshold": 1 / alpha_each,
                "canary_error_rate": rate(t["canary_errors"], t["canary_requests"]),
                "champion_error_rate": rate(t["champion_errors"], t["champion_requests"]),
                "min_ratio": self.settings.error_rate_ratio, **t},
            "latency_vs_champion": {
                "e_value": e_value(self.latency_vs_champion.log_value), "threshold": 1 / alpha_each,
                "bound_ms": None if s["t"] is None else s["t"] * 1000,
                "canary_quantile_ms": _quantile_ms(s.get("canary_hist"), self.settings.latency_quantile),
                "champion_quantile_ms": _quantile_ms(s.get("champion_hist"), self.settings.latency_quantile),
                "canary_slow_fraction": rate(s["canary"], s["canary_n"]),
                "champion_slow_fraction": rate(s["champion"], s["champion_n"]),
                "quantile": self.settings.latency_quantile, "ratio": self.settings.latency_ratio,
                "min_added_ms": self.settings.latency_min_added_ms},
            "slo": self.slo.evidence(),
            "srm": self.srm.evidence(),
            **({"labels": self.labels.evidence()} if self.labels else {}),
            **(self.kpis.evidence() if self.kpis else {}),
            **({"score_shift": self.shift.evidence()} if self.shift else {}),
        }
