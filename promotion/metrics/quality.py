"""Model-quality counters of one version: labelled outcomes, regression errors, label
delay and the score histogram, as the service exports them (names:
:mod:`promotion.contract.metrics`).

A :class:`Quality` is part of every :class:`~promotion.metrics.base.VersionCounters`
(``counters.quality``); inside a :class:`~promotion.metrics.base.Window` it holds the
increase over the window, so labels that arrived during the window count for the version
that served their requests, whenever those were served::

    q = window(before, after).get(7).quality
    q.labelled, q.tpr(), q.fpr(), q.precision()          # binary classifiers, all segments
    q.confusion("online")                                 # {"tp": …, "fp": …, "fn": …, "tn": …}
    q.mae(), q.rmse()                                     # regressors
    q.score_bounds, q.score_counts                        # cumulative, per fixed bin

Segments are the values of the service's segment column (``""``: rows without one;
``__other__``: values past the service's cardinality bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from promotion.contract import metrics as _contract

OUTCOMES = _contract.OUTCOMES
REGRESSION_FIELDS = ("count", "abs_error", "squared_error")


def _add(a: dict, b: dict, sign: float = 1.0) -> dict:
    out = {k: dict(v) for k, v in a.items()}
    for seg, counts in b.items():
        into = out.setdefault(seg, {})
        for k, x in counts.items():
            into[k] = into.get(k, 0.0) + sign * x
    return out


def _cumulative_add(ba: tuple, ca: tuple, bb: tuple, cb: tuple, sign: float = 1.0) -> tuple[tuple, tuple]:
    if not ba:
        return bb, tuple(sign * c for c in cb)
    if not bb:
        return ba, ca
    if ba != bb:
        raise ValueError("histograms with different bucket bounds cannot be added")
    return ba, tuple(x + sign * y for x, y in zip(ca, cb))


@dataclass(frozen=True)
class Quality:
    """Labelled counts and score histogram of one version (cumulative, or a window's increase)."""

    # segment -> {"tp", "fp", "fn", "tn"} (binary classifiers)
    outcomes: dict[str, dict[str, float]] = field(default_factory=dict)
    # segment -> {"count", "abs_error", "squared_error"} (regressors)
    regression: dict[str, dict[str, float]] = field(default_factory=dict)
    delay_bounds: tuple[float, ...] = ()
    delay_counts: tuple[float, ...] = ()   # cumulative, like latency_counts
    delay_sum: float = 0.0
    score_bounds: tuple[float, ...] = ()
    score_counts: tuple[float, ...] = ()   # cumulative count of served rows with score <= bound
    score_sum: float = 0.0

    # -- reading -------------------------------------------------------------------------

    def confusion(self, segment: str | None = None) -> dict[str, float]:
        """``{"tp", "fp", "fn", "tn"}`` over all segments, or of one segment."""
        out = dict.fromkeys(OUTCOMES, 0.0)
        for seg, counts in self.outcomes.items():
            if segment is None or seg == segment:
                for k in OUTCOMES:
                    out[k] += counts.get(k, 0.0)
        return out

    def segments(self) -> tuple[str, ...]:
        """The segment values that have labels (``""`` included when rows had none)."""
        return tuple(sorted(set(self.outcomes) | set(self.regression)))

    @property
    def labelled(self) -> float:
        """Labelled rows (classifier and regressor labels)."""
        return sum(self.confusion().values()) + sum(r.get("count", 0.0) for r in self.regression.values())

    def tpr(self, segment: str | None = None) -> float | None:
        """Recall at the served decision threshold; None without labelled positives."""
        c = self.confusion(segment)
        return c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] > 0 else None

    def fpr(self, segment: str | None = None) -> float | None:
        c = self.confusion(segment)
        return c["fp"] / (c["fp"] + c["tn"]) if c["fp"] + c["tn"] > 0 else None

    def precision(self, segment: str | None = None) -> float | None:
        c = self.confusion(segment)
        return c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] > 0 else None

    def regression_totals(self, segment: str | None = None) -> dict[str, float]:
        out = dict.fromkeys(REGRESSION_FIELDS, 0.0)
        for seg, r in self.regression.items():
            if segment is None or seg == segment:
                for k in REGRESSION_FIELDS:
                    out[k] += r.get(k, 0.0)
        return out

    def mae(self, segment: str | None = None) -> float | None:
        r = self.regression_totals(segment)
        return r["abs_error"] / r["count"] if r["count"] > 0 else None

    def rmse(self, segment: str | None = None) -> float | None:
        r = self.regression_totals(segment)
        return math.sqrt(r["squared_error"] / r["count"]) if r["count"] > 0 else None

    @property
    def scored(self) -> float:
        """Served rows with a score."""
        return self.score_counts[-1] if self.score_counts else 0.0

    def score_bins(self) -> tuple[float, ...]:
        """Rows per score bin (not cumulative), in the order of ``score_bounds``."""
        prev, out = 0.0, []
        for c in self.score_counts:
            out.append(c - prev)
            prev = c
        return tuple(out)

    # -- arithmetic (windows, replicas) ----------------------------------------------------

    def plus(self, other: "Quality", sign: float = 1.0) -> "Quality":
        """The sum (``sign=-1``: the difference) of two versions' counters; ValueError when
        their histograms' bounds differ."""
        db, dc = _cumulative_add(self.delay_bounds, self.delay_counts, other.delay_bounds, other.delay_counts, sign)
        sb, sc = _cumulative_add(self.score_bounds, self.score_counts, other.score_bounds, other.score_counts, sign)
        return Quality(_add(self.outcomes, other.outcomes, sign), _add(self.regression, other.regression, sign),
                       db, dc, self.delay_sum + sign * other.delay_sum, sb, sc,
                       self.score_sum + sign * other.score_sum)

    def decreased_from(self, before: "Quality") -> bool:
        """Whether any counter went down since ``before`` (a restarted process)."""
        for mine, theirs in ((self.outcomes, before.outcomes), (self.regression, before.regression)):
            for seg, counts in theirs.items():
                now = mine.get(seg, {})
                if any(now.get(k, 0.0) < x for k, x in counts.items()):
                    return True
        for bounds, counts, b_bounds, b_counts in ((self.delay_bounds, self.delay_counts, before.delay_bounds,
                                                   before.delay_counts),
                                                  (self.score_bounds, self.score_counts, before.score_bounds,
                                                   before.score_counts)):
            if b_bounds and bounds != b_bounds:
                return True
            if any(n < b for b, n in zip(b_counts, counts)):
                return True
        return self.delay_sum < before.delay_sum or self.score_sum < before.score_sum

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict:
        enc = lambda b: "+Inf" if math.isinf(b) else b  # noqa: E731
        return {"outcomes": {s: dict(c) for s, c in self.outcomes.items()},
                "regression": {s: dict(c) for s, c in self.regression.items()},
                "delay_bounds": [enc(b) for b in self.delay_bounds], "delay_counts": list(self.delay_counts),
                "delay_sum": self.delay_sum,
                "score_bounds": [enc(b) for b in self.score_bounds], "score_counts": list(self.score_counts),
                "score_sum": self.score_sum}

    @classmethod
    def from_dict(cls, d: dict | None) -> "Quality":
        if not d:
            return cls()
        dec = lambda b: math.inf if b == "+Inf" else float(b)  # noqa: E731
        return cls({str(s): {k: float(x) for k, x in c.items()} for s, c in d.get("outcomes", {}).items()},
                   {str(s): {k: float(x) for k, x in c.items()} for s, c in d.get("regression", {}).items()},
                   tuple(dec(b) for b in d.get("delay_bounds", ())), tuple(float(c) for c in d.get("delay_counts", ())),
                   float(d.get("delay_sum", 0.0)),
                   tuple(dec(b) for b in d.get("score_bounds", ())), tuple(float(c) for c in d.get("score_counts", ())),
                   float(d.get("score_sum", 0.0)))

    def __bool__(self) -> bool:
        return bool(self.outcomes or self.regression or self.delay_counts or self.score_counts)


class QualityAccumulator:
    """Folds the contract's quality samples of one version into a :class:`Quality`."""

    def __init__(self) -> None:
        self.outcomes: dict[str, dict[str, float]] = {}
        self.regression: dict[str, dict[str, float]] = {}
        self.delay: dict[float, float] = {}
        self.delay_sum = 0.0
        self.score: dict[float, float] = {}
        self.score_sum = 0.0

    def add(self, name: str, labels: dict, value: float, where: str) -> bool:
        """Take one sample; False when ``name`` is not a quality sample."""
        seg = str(labels.get("segment", ""))
        if name == _contract.LABELS:
            outcome = labels.get("outcome")
            if outcome not in OUTCOMES:
                return True  # an outcome this version of the contract does not know: not counted
            into = self.outcomes.setdefault(seg, {})
            into[outcome] = into.get(outcome, 0.0) + value
        elif name in _REGRESSION:
            into = self.regression.setdefault(seg, {})
            into[_REGRESSION[name]] = into.get(_REGRESSION[name], 0.0) + value
        elif name in (_contract.LABEL_DELAY + "_bucket", _contract.SCORE + "_bucket"):
            try:
                le = float(labels["le"])
            except (KeyError, ValueError):
                from promotion.errors import MetricsError

                raise MetricsError(f"{where}: {name} has no numeric le label") from None
            into = self.delay if name.startswith(_contract.LABEL_DELAY) else self.score
            into[le] = into.get(le, 0.0) + value
        elif name == _contract.LABEL_DELAY + "_sum":
            self.delay_sum += value
        elif name == _contract.SCORE + "_sum":
            self.score_sum += value
        else:
            return False
        return True

    def result(self) -> Quality:
        db, sb = tuple(sorted(self.delay)), tuple(sorted(self.score))
        return Quality(self.outcomes, self.regression, db, tuple(self.delay[b] for b in db), self.delay_sum,
                       sb, tuple(self.score[b] for b in sb), self.score_sum)


_REGRESSION = {_contract.LABEL_VALUES: "count", _contract.LABEL_ABS_ERROR: "abs_error",
               _contract.LABEL_SQUARED_ERROR: "squared_error"}


def is_quality_sample(name: str) -> bool:
    """Whether a sample name belongs to the quality series (``promotion_label*``, ``promotion_score*``)."""
    return name.startswith("promotion_label") or name.startswith(_contract.SCORE + "_")


__all__ = ["Quality", "QualityAccumulator", "is_quality_sample", "OUTCOMES"]
