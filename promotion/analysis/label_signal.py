"""The label signal of a canary: delayed ground truth, judged across the whole rollout.

:class:`LabelSignal` is the part of :class:`~promotion.analysis.judge.CanaryAnalysis`
that turns the labels fed back through ``POST /feedback`` (or a polled labels dataset)
into a rollback. Each window's :class:`~promotion.metrics.quality.Quality` increase is
added to per-version totals *since the canary started*: a label that arrives after its
step ended (or after the canary left a weight) is part of the next window's increase of
the version that served its request, so it counts for that version. The totals and the
e-processes live in the analysis state, which the rollout state persists: a resumed
rollout continues the same test, never a fresh one.

The test (:func:`promotion.analysis.labels.compare_labels`, built on
:mod:`promotion.analysis.bounded`): H0 "the canary's metric is not worse than the
champion's by more than the tolerance", an anytime-valid e-process over cumulative
counts, so by Ville's inequality a canary within tolerance is rolled back with
probability at most its share of ``alpha`` however often, and however late, labels are
looked at (labels' delays must not depend on their values). The share comes from
:func:`promotion.analysis.budget.alpha_shares`: the policy's ``alpha`` split evenly over
the four base tests, the aggregate label test, and (with ``segments``) one more share
for the per-segment family.

Segments: each segment value has its own e-process at ``share / K`` for its champion
bound (K: segments with labels so far; the service bounds their number), and the family
is decided with e-BH or Bonferroni (:mod:`promotion.analysis.segments`, Wang & Ramdas
2022) at the rest of the share, so a regression confined to one segment rolls back even
when the aggregate is fine, and the reason names the segment.

Decisions, and why:

* Labels can only roll back. They are delayed (minutes to days): a step's pass never
  waits for them, so errors, latency and sample ratio pace the rollout as before.
* The first rejection rolls back (it latches as an alarm): an e-value may fall later,
  but the guarantee is about ever crossing the threshold, so acting at the first
  crossing is valid and waiting would only delay a rollback.
* A rejection counts only once both versions have ``min_labels`` labelled requests that
  the metric uses (positives for recall, predicted positives for precision, negatives
  for FPR, all labelled rows for a loss): this removes rollbacks, never adds any.
* ``require_labels_to_promote: true`` holds the final (100 %) step INCONCLUSIVE until both
  versions have ``min_labels``; past the step's ``max_s`` the policy's ``inconclusive``
  rule applies (rollback by default), so a version is never promoted unjudged on labels.

Usage::

    sig = LabelSignal(LabelSettings.from_dict(cfg), alpha=0.05 / 6, segments_alpha=0.05 / 6)
    alarms = sig.update(window.get(canary), window.get(champion))
    sig.waiting(weight=100)          # reasons the final step must wait for labels
    sig.evidence()                    # for the record
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from promotion.analysis.bounded import CHAMPION_SHARE, ComparisonState
from promotion.analysis.labels import (CLASSIFIER_METRICS, REGRESSOR_METRICS, ClassifierCounts, LabelTest,
                                       RegressorCounts, compare_labels, good_sum)
from promotion.analysis.segments import METHODS, segment_decision
from promotion.analysis.sequential import e_value
from promotion.metrics.base import VersionCounters

METRICS = CLASSIFIER_METRICS + REGRESSOR_METRICS
_FIELDS = ("tp", "fp", "fn", "tn", "count", "abs_error", "squared_error")
_ROLES = ("canary", "champion")


@dataclass(frozen=True)
class LabelSettings:
    """The policy's ``analysis.labels``, checked."""

    metric: str
    absolute: float = 0.0
    relative: float = 0.0
    min_labels: int = 50
    loss_max: float = 1.0
    segments: str | None = None          # "e-bh" | "bonferroni" | None
    require_labels_to_promote: bool = False

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {self.metric!r}")
        if self.segments is not None and self.segments not in METHODS:
            raise ValueError(f"segments.method must be one of {', '.join(METHODS)}")
        if self.min_labels < 1:
            raise ValueError("min_labels must be >= 1")
        LabelTest(self.metric, self.absolute, self.relative, self.loss_max).margin  # raises on a bad tolerance

    @property
    def test(self) -> LabelTest:
        return LabelTest(self.metric, self.absolute, self.relative, self.loss_max)

    @property
    def signals(self) -> tuple[str, ...]:
        """The budget's names of the tests this enables."""
        name = f"labels:{self.metric}"
        return (name,) + ((name + ":segments",) if self.segments else ())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_policy(cls, raw: dict) -> "LabelSettings":
        """From the (schema-checked) ``analysis.labels`` mapping; ValueError names the field."""
        tol = raw.get("tolerance") or {}
        seg = raw.get("segments")
        absolute, relative = float(tol.get("absolute", 0.0)), float(tol.get("relative", 0.0))
        loss_max = float(raw.get("loss_max", 1.0))
        metric = raw.get("metric")
        if metric in REGRESSOR_METRICS and not absolute < loss_max:
            raise ValueError(f"tolerance.absolute: must be < loss_max ({loss_max:g}) for {metric}")
        if metric in CLASSIFIER_METRICS and not absolute < 1:
            raise ValueError("tolerance.absolute: must be < 1 for a rate")
        return cls(metric=metric, absolute=absolute, relative=relative, min_labels=int(raw.get("min_labels", 50)),
                   loss_max=loss_max, segments=(seg or {}).get("method", "e-bh") if seg is not None else None,
                   require_labels_to_promote=bool(raw.get("require_labels_to_promote", False)))


def _counts(acc: dict, metric: str, segment: str | None = None) -> ClassifierCounts | RegressorCounts:
    tot = dict.fromkeys(_FIELDS, 0.0)
    for seg, c in acc.items():
        if segment is None or seg == segment:
            for k in _FIELDS:
                tot[k] += c.get(k, 0.0)
    tot = {k: max(v, 0.0) for k, v in tot.items()}
    if metric in CLASSIFIER_METRICS:
        return ClassifierCounts(tot["tp"], tot["fp"], tot["fn"], tot["tn"])
    return RegressorCounts(tot["count"], tot["abs_error"], tot["squared_error"])


def _segment_name(seg: str) -> str:
    return seg if seg else "(no segment)"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


class LabelSignal:
    """Cumulative labelled counts of both versions and the label e-processes."""

    def __init__(self, settings: LabelSettings, alpha: float, segments_alpha: float | None = None,
                 state: dict | None = None) -> None:
        self.settings, self.alpha, self.segments_alpha = settings, alpha, segments_alpha
        s = state or {}
        self.acc = {r: {str(k): dict(v) for k, v in (s.get("acc", {}).get(r) or {}).items()} for r in _ROLES}
        self.served = {r: float((s.get("served") or {}).get(r, 0.0)) for r in _ROLES}
        self.delay = {r: list((s.get("delay") or {}).get(r, [0.0, 0.0])) for r in _ROLES}  # [sum_s, n]
        self.state = ComparisonState.from_dict(s["state"]) if s.get("state") else ComparisonState.new()
        self.seg_states = {str(k): ComparisonState.from_dict(v) for k, v in (s.get("segments") or {}).items()}
        self.last: dict = dict(s.get("last") or {})
        self.unjudged: str | None = s.get("unjudged")
        # probation after the promotion: the champion's counts are a frozen baseline
        self.frozen = bool(s.get("frozen", False))

    def to_dict(self) -> dict:
        return {"acc": self.acc, "served": dict(self.served), "delay": dict(self.delay), "state": self.state.to_dict(),
                "segments": {k: v.to_dict() for k, v in self.seg_states.items()}, "last": dict(self.last),
                "unjudged": self.unjudged, "frozen": self.frozen}

    def freeze_champion(self) -> None:
        """From now on judge the canary's new labels against the champion's labels so far
        (its pre-promotion baseline, late labels of its requests included) without waiting
        for new champion labels: the champion serves nothing after a promotion."""
        self.frozen = True

    # -- updating ------------------------------------------------------------------------
    def _add(self, role: str, c: VersionCounters) -> None:
        self.served[role] += max(c.requests, 0.0)
        q = c.quality
        for source in (q.outcomes, q.regression):
            for seg, counts in source.items():
                into = self.acc[role].setdefault(str(seg), {})
                for k, x in counts.items():
                    into[k] = into.get(k, 0.0) + float(x)
        n = q.delay_counts[-1] if q.delay_counts else 0.0
        self.delay[role][0] += q.delay_sum
        self.delay[role][1] += n

    def update(self, canary: VersionCounters, champion: VersionCounters) -> list[str]:
        """Add one window's increase of both versions; the alarms this raises (at most one
        for the aggregate and one for the segments)."""
        self._add("canary", canary)
        self._add("champion", champion)
        st, test = self.settings, self.settings.test
        try:
            cc, cb = _counts(self.acc["canary"], st.metric), _counts(self.acc["champion"], st.metric)
            result = compare_labels(self.state, cc, cb, test, self.alpha, paired=not self.frozen)
        except ValueError as exc:  # counts that cannot be judged (unclipped losses, wrong kind)
            self.unjudged = str(exc)
            return []
        self.unjudged = None
        self.state = result.state
        n_c, n_b = good_sum(cc, test)[1], good_sum(cb, test)[1]
        enough = min(n_c, n_b) >= st.min_labels
        self.last = {**result.evidence(), "rejected": bool(result.rejected and enough)}
        alarms = []
        if result.rejected and enough:
            alarms.append(f"label {st.metric} regressed: {self._compare_text(cc, cb)} "
                          f"(e={result.e_value:.3g} >= {result.threshold:.3g})")
        if st.segments and self.segments_alpha:
            alarms += self._segments(test)
        return alarms

    def _segments(self, test: LabelTest) -> list[str]:
        st = self.settings
        segs = sorted(set(self.acc["canary"]) | set(self.acc["champion"]))
        if not segs:
            return []
        k = len(segs)
        logs, rows = {}, {}
        for seg in segs:
            cc, cb = _counts(self.acc["canary"], st.metric, seg), _counts(self.acc["champion"], st.metric, seg)
            # each segment's champion bound at share/K (union bound over K), the family at the rest
            r = compare_labels(self.seg_states.get(seg, ComparisonState.new()), cc, cb, test, self.segments_alpha / k,
                               paired=not self.frozen)
            self.seg_states[seg] = r.state
            logs[seg] = r.state.log_value
            rows[seg] = {"canary": r.canary_value, "champion": r.champion_value, "e_value": r.e_value,
                         "canary_labelled": r.canary_labelled, "champion_labelled": r.champion_labelled}
        decision = segment_decision(logs, (1 - CHAMPION_SHARE) * self.segments_alpha, st.segments)
        triggered = [s for s in decision.triggered
                     if min(rows[s]["canary_labelled"], rows[s]["champion_labelled"]) >= st.min_labels]
        self.last["segments"] = {**decision.evidence(), "triggered": triggered, "by_segment": rows}
        if not triggered:
            return []
        seg = triggered[0]
        cc, cb = _counts(self.acc["canary"], st.metric, seg), _counts(self.acc["champion"], st.metric, seg)
        others = f" (also {', '.join(map(_segment_name, triggered[1:]))})" if len(triggered) > 1 else ""
        return [f"label {st.metric} regressed in segment {_segment_name(seg)}{others}: "
                f"{self._compare_text(cc, cb, seg)} ({st.segments} over {k} segments, "
                f"e={rows[seg]['e_value']:.3g})"]

    def _compare_text(self, cc, cb, segment: str | None = None) -> str:
        m = self.settings.metric
        n_c, n_b = good_sum(cc, self.settings.test)[1], good_sum(cb, self.settings.test)[1]
        cov = self.coverage()
        where = "" if segment is None else " in the segment"
        return (f"canary {_fmt(getattr(cc, m))} vs champion {_fmt(getattr(cb, m))} on {n_c:,.0f} / {n_b:,.0f} "
                f"labelled{where}; coverage {_pct(cov['canary'])} / {_pct(cov['champion'])} of served")

    # -- reading -------------------------------------------------------------------------
    def labelled(self, role: str) -> float:
        """All labelled requests of ``role`` since the canary started."""
        return sum(c.get(k, 0.0) for c in self.acc[role].values() for k in ("tp", "fp", "fn", "tn", "count"))

    def metric_labelled(self, role: str) -> float:
        """Labelled requests of ``role`` that the metric uses."""
        return good_sum(_counts(self.acc[role], self.settings.metric), self.settings.test)[1]

    def coverage(self) -> dict[str, float | None]:
        """Labelled share of served requests. The request and label counters are read in
        separate scrapes, so a label can be counted a window before its request; the share is
        capped at 1 (a label always follows a request it belongs to)."""
        return {r: (min(1.0, self.labelled(r) / self.served[r]) if self.served[r] > 0 else None) for r in _ROLES}

    def waiting(self, weight: float) -> list[str]:
        """Why the final step may not pass yet (``require_labels_to_promote``)."""
        st = self.settings
        if not st.require_labels_to_promote or weight < 100:
            return []
        if self.unjudged:
            return [f"labels cannot be judged: {self.unjudged}"]
        have = {r: self.metric_labelled(r) for r in _ROLES}
        if min(have.values()) >= st.min_labels:
            return []
        return [f"waiting for labels: {st.metric} needs {st.min_labels} labelled per version, canary has "
                f"{have['canary']:,.0f}, champion {have['champion']:,.0f}"]

    def evidence(self) -> dict:
        st = self.settings
        cov = self.coverage()
        out = {"signal": "labels", "metric": st.metric, "alpha": self.alpha,
               "threshold": 1 / ((1 - CHAMPION_SHARE) * self.alpha),
               "e_value": e_value(self.state.log_value), "rejected": bool(self.last.get("rejected")),
               "tolerance": {"absolute": st.absolute, "relative": st.relative}, "min_labels": st.min_labels,
               "require_labels_to_promote": st.require_labels_to_promote,
               "canary": getattr(_counts(self.acc["canary"], st.metric), st.metric),
               "champion": getattr(_counts(self.acc["champion"], st.metric), st.metric),
               "canary_labelled": self.metric_labelled("canary"), "champion_labelled": self.metric_labelled("champion"),
               "labelled": {r: self.labelled(r) for r in _ROLES}, "served": dict(self.served), "coverage": cov,
               "mean_delay_s": {r: (self.delay[r][0] / self.delay[r][1] if self.delay[r][1] else None) for r in _ROLES}}
        if self.unjudged:
            out["unjudged"] = self.unjudged
        if st.segments:
            out["segments"] = {"method": st.segments, "alpha": self.segments_alpha, "triggered": [],
                               **(self.last.get("segments") or {})}
        return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"
