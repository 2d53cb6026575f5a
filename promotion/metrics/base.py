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
series); every other label is summed over. The model-quality series (labelled outcomes,
regression errors, label delay, score histogram) are in ``counters.quality``
(:class:`~promotion.metrics.quality.Quality`), kept per segment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from promotion.contract import metrics as _contract
from promotion.metrics.quality import Quality, QualityAccumulator, is_quality_sample

# The service's latency buckets (seconds, ending with +Inf), from the contract; providers
# read whatever bounds are exported.
LATENCY_BUCKETS = _contract.LATENCY_BOUNDS


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
    quality: Quality = field(default_factory=Quality)

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
        d = {
            "requests": self.requests, "errors": self.errors,
            "errors_by_kind": dict(self.errors_by_kind),
            "latency_bounds": [_enc(b) for b in self.latency_bounds],
            "latency_counts": list(self.latency_counts), "latency_sum": self.latency_sum,
            "shadow_requests": self.shadow_requests, "shadow_agree": self.shadow_agree,
            "shadow_disagree": self.shadow_disagree,
        }
        if self.quality:  # absent when empty: states written before it existed look the same
            d["quality"] = self.quality.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VersionCounters":
        d = dict(d)
        d["latency_bounds"] = tuple(_dec(b) for b in d.get("latency_bounds", ()))
        d["latency_counts"] = tuple(float(c) for c in d.get("latency_counts", ()))
        d["errors_by_kind"] = dict(d.get("errors_by_kind", {}))
        d["quality"] = Quality.from_dict(d.get("quality"))
        return cls(**d)


def _enc(bound: float) -> float | str:
    return "+Inf" if math.isinf(bound) else bound


def _dec(bound: float | str) -> float:
    return math.inf if bound == "+Inf" else float(bound)


@dataclass(frozen=True)
class Snapshot:
    """Cumulative counters per model version at ``taken_at`` (Unix seconds).

    ``replicas``, when the source tells replicas apart (Prometheus scraping several
    targets), holds the same counters per replica (``'job=fraud,instance=10.0.0.5:3000'``
    -> ``{version: VersionCounters}``), every replica the source scrapes included, even
    one that has counted nothing yet; ``versions`` is their sum. With it, :func:`window`
    handles a restart per replica and notices a replica that stopped being scraped.
    """

    taken_at: float
    versions: dict[int, VersionCounters]
    replicas: dict[str, dict[int, VersionCounters]] | None = None

    def to_dict(self) -> dict:
        """JSON-ready form, so a controller can persist its last snapshot between ticks."""
        d = {"taken_at": self.taken_at, "versions": {str(v): c.to_dict() for v, c in self.versions.items()}}
        if self.replicas is not None:
            d["replicas"] = {r: {str(v): c.to_dict() for v, c in per.items()} for r, per in self.replicas.items()}
        return d

    @classmethod
    def of_replicas(cls, taken_at: float, replicas: dict[str, dict[int, VersionCounters]],
                    where: str = "metrics") -> "Snapshot":
        """A snapshot of several replicas' counters; ``versions`` is their sum."""
        parts: dict[int, list[VersionCounters]] = {}
        for per in replicas.values():
            for version, counters in per.items():
                parts.setdefault(version, []).append(counters)
        return cls(taken_at, {v: sum_counters(cs, f"{where} version {v}") for v, cs in parts.items()}, replicas)

    @classmethod
    def from_dict(cls, d: dict) -> "Snapshot":
        replicas = d.get("replicas")
        if replicas is not None:
            replicas = {str(r): {int(v): VersionCounters.from_dict(c) for v, c in per.items()}
                        for r, per in replicas.items()}
        return cls(float(d["taken_at"]), {int(v): VersionCounters.from_dict(c) for v, c in d["versions"].items()},
                   replicas)


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
    if b.quality.decreased_from(a.quality):
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
        quality=b.quality.plus(a.quality, -1.0),
    )


def window(a: Snapshot, b: Snapshot) -> Window:
    """Per-version increase from snapshot ``a`` to the later snapshot ``b``.

    A counter that went down means a worker restarted and its counters began again;
    then the whole version is treated as reset, and the window holds ``b``'s counters
    for it (what was served since the restart: the only part known for sure). Keeping
    a version's counters together keeps them consistent (errors never exceed requests,
    histogram counts never decrease). A version missing from ``b`` served nothing.

    When both snapshots hold ``replicas``, all this applies per replica and the window
    is the sum of the replicas' increases: one replica's restart costs only what it
    served since its last scrape, never the other replicas' history (which a reset of
    the summed counters would count as served in the window, errors included). A
    replica counted in ``a`` that ``b`` no longer holds leaves the window incomplete:
    :class:`~promotion.errors.MetricsError`, which the controller treats as undecided.
    """
    if b.taken_at < a.taken_at:
        raise ValueError("window(a, b): b was taken before a")
    if a.replicas is not None and b.replicas is not None:
        return _replica_window(a, b)
    versions, resets = _increase(a.versions, b.versions)
    return Window(a.taken_at, b.taken_at, versions, tuple(sorted(resets)))


def _increase(a: dict[int, VersionCounters], b: dict[int, VersionCounters]) -> tuple[dict[int, VersionCounters], set[int]]:
    versions: dict[int, VersionCounters] = {}
    resets: set[int] = set()
    for version, after in b.items():
        before = a.get(version)
        if before is None:
            versions[version] = after
        elif _decreased(before, after):
            versions[version] = after
            resets.add(version)
        else:
            versions[version] = _delta(before, after)
    return versions, resets


def _replica_window(a: Snapshot, b: Snapshot) -> Window:
    from promotion.errors import MetricsError

    gone = sorted(set(a.replicas) - set(b.replicas))
    if gone:
        raise MetricsError(f"{len(gone)} replica(s) counted at {a.taken_at:.3f} are no longer scraped "
                           f"({'; '.join(gone)}): what they served since is unknown, so this window is "
                           "incomplete and decides nothing")
    parts: dict[int, list[VersionCounters]] = {}
    resets: set[int] = set()
    for replica, after in b.replicas.items():
        before = a.replicas.get(replica, {})
        increase, reset = _increase(before, after)
        # a version the replica counted before and not now: its process began again and
        # has not served that version since (a labelled counter appears on first use)
        resets |= reset | {v for v in before if v not in after}
        for version, counters in increase.items():
            parts.setdefault(version, []).append(counters)
    versions = {v: sum_counters(cs, f"version {v}") for v, cs in parts.items()}
    return Window(a.taken_at, b.taken_at, versions, tuple(sorted(resets)))


def sum_counters(parts: list[VersionCounters], what: str = "counters") -> VersionCounters:
    """The sum of several replicas' counters of one version. Histograms add bucket by
    bucket; replicas exporting different bucket bounds cannot be added (MetricsError)."""
    from promotion.errors import MetricsError

    parts = list(parts)
    if len(parts) == 1:
        return parts[0]
    bounds = next((p.latency_bounds for p in parts if p.latency_bounds), ())
    if any(p.latency_bounds and p.latency_bounds != bounds for p in parts):
        raise MetricsError(f"{what}: replicas export different latency buckets; their histograms cannot be added")
    quality = Quality()
    try:
        for p in parts:
            quality = quality.plus(p.quality)
    except ValueError:
        raise MetricsError(f"{what}: replicas export different score or label-delay buckets; their histograms "
                           "cannot be added") from None
    kinds: dict[str, float] = {}
    for p in parts:
        for k, v in p.errors_by_kind.items():
            kinds[k] = kinds.get(k, 0.0) + v
    return VersionCounters(
        requests=sum(p.requests for p in parts), errors=sum(p.errors for p in parts), errors_by_kind=kinds,
        latency_bounds=bounds,
        latency_counts=tuple(sum(p.latency_counts[i] for p in parts if p.latency_counts) for i in range(len(bounds))),
        latency_sum=sum(p.latency_sum for p in parts),
        shadow_requests=sum(p.shadow_requests for p in parts), shadow_agree=sum(p.shadow_agree for p in parts),
        shadow_disagree=sum(p.shadow_disagree for p in parts), quality=quality,
    )


# Sample names of the service's metric contract, as they appear in the text format.
REQUESTS = _contract.REQUESTS
ERRORS = _contract.ERRORS
LATENCY = _contract.LATENCY
SHADOW_REQUESTS = _contract.SHADOW_REQUESTS
SHADOW_AGREEMENT = _contract.SHADOW_AGREEMENT


def counters_from_samples(samples, source: str) -> dict[int, VersionCounters]:
    """Fold ``(name, labels, value)`` samples of the metric contract into counters per
    version, summing over every label other than ``version`` (and ``le``, ``kind``,
    ``agree``). Samples outside the contract are ignored; a sample of the contract
    without an integer ``version`` label is an error (``source`` names where it came
    from), because silently dropping it would under-count."""
    from promotion.errors import MetricsError

    acc: dict[int, dict] = {}
    quality: dict[int, QualityAccumulator] = {}
    for name, labels, value in samples:
        if not (name.startswith("promotion_request") or name.startswith("promotion_shadow_")
                or is_quality_sample(name)):
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
        if is_quality_sample(name):
            quality.setdefault(version, QualityAccumulator()).add(name, labels, value, source)
        elif name == REQUESTS:
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
            quality=quality[version].result() if version in quality else Quality(),
        )
    return out
