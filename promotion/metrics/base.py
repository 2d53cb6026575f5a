"""The metrics-provider contract and the numbers every provider returns.

A provider measures; it does not judge. It returns a :class:`Snapshot`: the cumulative
per-version counters of the serving endpoint at one instant. Two snapshots make a
:class:`Window` (:func:`window`), the per-version increase between them, which is what
the analysis consumes::

    from promotion.metrics import provider_for
    from promotion.metrics.base import window

    provider = provider_for(env)        # env: promotion.config.Environment
    before = provider.snapshot()
    ...                                 # let traffic flow
    w = window(before, provider.snapshot())
    print(w.versions[7].requests, w.versions[7].error_rate)

Counters come from the service's metric contract (``promotion_requests_total``,
``promotion_request_errors_total``, ``promotion_request_latency_seconds``, and the shadow
series); every other label is summed over.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

# The service's latency buckets (seconds); providers read whatever bounds are exported.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
    0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf,
)


@dataclass(frozen=True)
class VersionCounters:
    """Cumulative counters of one model version (or their increase, inside a Window).

    ``latency_bounds`` are the histogram's upper bounds in seconds, ending with
    ``inf``; ``latency_counts`` the cumulative count of requests at or below each
    bound, as in Prometheus (``latency_counts[-1]`` is the histogram's count).
    """

    requests: float = 0.0
    errors: float = 0.0
    errors_by_kind: dict[str, float] = field(default_factory=dict)
    latency_bounds: tuple[float, ...] = ()
    latency_counts: tuple[float, ...] = ()
    latency_sum: float = 0.0
    shadow_requests: float = 0.0
    shadow_agree: float = 0.0
    shadow_disagree: float = 0.0

    @property
    def latency_count(self) -> float:
        return self.latency_counts[-1] if self.latency_counts else 0.0

    @property
    def error_rate(self) -> float | None:
        """Errors per served request; ``None`` without requests (no data is no rate)."""
        return self.errors / self.requests if self.requests > 0 else None

    def slower_than(self, bound: float) -> float:
        """Requests slower than ``bound`` seconds; ``bound`` must be a bucket bound."""
        for b, c in zip(self.latency_bounds, self.latency_counts):
            if math.isclose(b, bound, rel_tol=1e-9):
                return self.latency_count - c
        raise ValueError(f"{bound} s is not a bucket bound of this histogram")

    def latency_quantile(self, q: float) -> float | None:
        """The ``q`` quantile in seconds, interpolated inside its bucket like PromQL's
        ``histogram_quantile``; ``None`` without observations."""
        total = self.latency_count
        if total <= 0:
            return None
        rank = q * total
        lower_bound, lower_count = 0.0, 0.0
        for b, c in zip(self.latency_bounds, self.latency_counts):
            if c >= rank:
                if math.isinf(b):
                    return lower_bound  # the highest finite bound, as PromQL does
                if c == lower_count:
                    return b
                return lower_bound + (b - lower_bound) * (rank - lower_count) / (c - lower_count)
            lower_bound, lower_count = b, c
        return lower_bound

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "latency_bounds": [_enc(b) for b in self.latency_bounds],
            "latency_counts": list(self.latency_counts), "latency_sum": self.latency_sum,
            "shadow_requests": self.shadow_requests, "shadow_agree": self.shadow_agree,
            "shadow_disagree": self.shadow_disagree,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "VersionCounters":
        d = dict(d)
        d["latency_bounds"] = tuple(_dec(b) for b in d.get("latency_bounds", ()))
        d["latency_counts"] = tuple(float(c) for c in d.get("latency_counts", ()))
        d["errors_by_kind"] = dict(d.get("errors_by_kind", {}))
        return cls(**d)


def _enc(bound: float) -> float | str:
    return "+Inf" if math.isinf(bound) else bound


def _dec(bound: float | str) -> float:
    return math.inf if bound == "+Inf" else float(bound)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters per model version at ``taken_at`` (Unix seconds)."""

    taken_at: float
    versions: dict[int, VersionCounters]

    def to_dict(self) -> dict:
        """JSON-ready form, so a controller can persist its last snapshot between ticks."""
        return {"taken_at": self.taken_at, "versions": {str(v): c.to_dict() for v, c in self.versions.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Snapshot":
        return cls(float(d["taken_at"]), {int(v): VersionCounters.from_dict(c) for v, c in d["versions"].items()})


@dataclass(frozen=True)
class Window:
    """What each version served between two snapshots.

    ``versions`` maps a model version to the *increase* of its counters over the
    window (a :class:`VersionCounters`); ``resets`` lists the versions whose counters
    went down (a worker restarted), for which the window counts only what was served
    since the restart.
    """

    start: float
    end: float
    versions: dict[int, VersionCounters]
    resets: tuple[int, ...] = ()

    @property
    def seconds(self) -> float:
        return self.end - self.start

    def get(self, version: int) -> VersionCounters:
        """The version's counters, all zero when it served nothing in the window."""
        return self.versions.get(version) or VersionCounters()


@runtime_checkable
class MetricsProvider(Protocol):
    """Measures a serving endpoint. Implementations raise
    :class:`~promotion.errors.MetricsError` when they cannot (fail closed)."""

    def snapshot(self) -> Snapshot:
        """The latest cumulative per-version counters; ``taken_at`` is the instant they
        describe (for a provider that reads stored scrapes, the scrape time)."""
        ...

    def now(self) -> float:
        """The provider's current time, on the clock of ``taken_at``: a snapshot with
        ``taken_at >= now()`` counts nothing served before this call. The controller
        waits for such a snapshot after every weight change."""
        ...

    def is_online(self) -> bool:
        """Whether the source answers at all (never raises)."""
        ...


def _decreased(a: VersionCounters, b: VersionCounters) -> bool:
    if b.requests < a.requests or b.errors < a.errors or b.latency_sum < a.latency_sum:
        return True
    if b.shadow_requests < a.shadow_requests or b.shadow_agree < a.shadow_agree or b.shadow_disagree < a.shadow_disagree:
        return True
    if any(b.errors_by_kind.get(k, 0.0) < v for k, v in a.errors_by_kind.items()):
        return True
    if a.latency_bounds and a.latency_bounds != b.latency_bounds:
        return True
    return any(cb < ca for ca, cb in zip(a.latency_counts, b.latency_counts))


def _delta(a: VersionCounters, b: VersionCounters) -> VersionCounters:
    return replace(
        b,
        requests=b.requests - a.requests,
        errors=b.errors - a.errors,
        errors_by_kind={k: v - a.errors_by_kind.get(k, 0.0) for k, v in b.errors_by_kind.items()},
        latency_counts=tuple(cb - ca for ca, cb in zip(a.latency_counts, b.latency_counts)) if a.latency_counts else b.latency_counts,
        latency_sum=b.latency_sum - a.latency_sum,
        shadow_requests=b.shadow_requests - a.shadow_requests,
        shadow_agree=b.shadow_agree - a.shadow_agree,
        shadow_disagree=b.shadow_disagree - a.shadow_disagree,
    )


def window(a: Snapshot, b: Snapshot) -> Window:
    """Per-version increase from snapshot ``a`` to the later snapshot ``b``.

    A counter that went down means a worker restarted and its counters began again;
    then the whole version is treated as reset, and the window holds ``b``'s counters
    for it (what was served since the restart: the only part known for sure). Keeping
    a version's counters together keeps them consistent (errors never exceed requests,
    histogram counts never decrease). A version missing from ``b`` served nothing.
    """
    if b.taken_at < a.taken_at:
        raise ValueError("window(a, b): b was taken before a")
    versions: dict[int, VersionCounters] = {}
    resets: list[int] = []
    for version, after in b.versions.items():
        before = a.versions.get(version)
        if before is None:
            versions[version] = after
        elif _decreased(before, after):
            versions[version] = after
            resets.append(version)
        else:
            versions[version] = _delta(before, after)
    return Window(a.taken_at, b.taken_at, versions, tuple(sorted(resets)))


# Sample names of the service's metric contract, as they appear in the text format.
REQUESTS = "promotion_requests_total"
ERRORS = "promotion_request_errors_total"
LATENCY = "promotion_request_latency_seconds"
SHADOW_REQUESTS = "promotion_shadow_requests_total"
SHADOW_AGREEMENT = "promotion_shadow_agreement_total"


def counters_from_samples(samples, source: str) -> dict[int, VersionCounters]:
    """Fold ``(name, labels, value)`` samples of the metric contract into counters per
    version, summing over every label other than ``version`` (and ``le``, ``kind``,
    ``agree``). Samples outside the contract are ignored; a sample of the contract
    without an integer ``version`` label is an error (``source`` names where it came
    from), because silently dropping it would under-count."""
    from promotion.errors import MetricsError

    acc: dict[int, dict] = {}
    for name, labels, value in samples:
        if not (name.startswith("promotion_request") or name.startswith("promotion_shadow_")):
            continue
        if name.endswith("_created"):
            continue
        raw = labels.get("version")
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise MetricsError(f"{source}: {name} has version label {raw!r}, expected an integer model version") from None
        value = float(value)
        if math.isnan(value):
            raise MetricsError(f"{source}: {name}{{version=\"{version}\"}} is NaN")
        a = acc.setdefault(version, {"requests": 0.0, "errors": 0.0, "kinds": {}, "buckets": {}, "sum": 0.0,
                                     "shadow": 0.0, "agree": 0.0, "disagree": 0.0})
        if name == REQUESTS:
            a["requests"] += value
        elif name == ERRORS:
            a["errors"] += value
            kind = labels.get("kind", "")
            a["kinds"][kind] = a["kinds"].get(kind, 0.0) + value
        elif name == LATENCY + "_bucket":
            try:
                le = float(labels["le"])
            except (KeyError, ValueError):
                raise MetricsError(f"{source}: {name} has no numeric le label") from None
            a["buckets"][le] = a["buckets"].get(le, 0.0) + value
        elif name == LATENCY + "_sum":
            a["sum"] += value
        elif name == SHADOW_REQUESTS:
            a["shadow"] += value
        elif name == SHADOW_AGREEMENT:
            a["agree" if labels.get("agree") == "true" else "disagree"] += value
    out = {}
    for version, a in acc.items():
        bounds = tuple(sorted(a["buckets"]))
        if bounds and not math.isinf(bounds[-1]):
            raise MetricsError(f"{source}: {LATENCY}{{version=\"{version}\"}} has no +Inf bucket")
        out[version] = VersionCounters(
            requests=a["requests"], errors=a["errors"], errors_by_kind=a["kinds"],
            latency_bounds=bounds, latency_counts=tuple(a["buckets"][b] for b in bounds),
            latency_sum=a["sum"], shadow_requests=a["shadow"], shadow_agree=a["agree"],
            shadow_disagree=a["disagree"],
        )
    return out
