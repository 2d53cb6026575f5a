"""Does the traffic each version served match a split? The sample-ratio check, per version.

A data plane that is configured from git (Argo CD or Flux applies the HTTPRoute) has no
admin API to read back; what it applies shows in the traffic the versions serve. Given
the requests each version served since a change (from Prometheus), :func:`judge_split`
says whether they match the new split, contradict it, or cannot tell yet::

    expected = expected_shares({1: 95.0, 2: 5.0})
    verdict = judge_split({1: 570, 2: 30}, expected, previous=expected_shares({1: 100.0}))
    verdict.state     # "matches": consistent with 95/5, and 100/0 is ruled out

Each version with a share strictly between 0 and 1 gets the two-arm sample-ratio
e-process of :class:`~promotion.analysis.srm.SampleRatioCheck` (anytime-valid, so
checking after every scrape is fine), at ``alpha`` split over the versions. A version
meant to get nothing (or everything) has no e-process; it may take up to ``stray`` of
the requests (testers sending the canary header, a request in flight at the switch).

"matches" needs at least ``min_requests``, no mismatch with the new split, and, when
the split changed, a mismatch with the previous one: traffic that fits both proves
nothing about which one the data plane applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promotion.analysis.srm import SampleRatioCheck
from promotion.traffic.base import Mirror

MATCHES, CONTRADICTS, UNDECIDED = "matches", "contradicts", "undecided"


def expected_shares(weights: dict[int, float], mirror: Mirror | None = None) -> dict[int, float]:
    """The share of all requests each version serves: mirrored copies are requests too,
    served by the mirror's replicas on top of the split."""
    extra = mirror.percent if mirror is not None else 0.0
    total = 100.0 + extra
    shares = {v: w / total for v, w in weights.items()}
    if mirror is not None:
        shares[mirror.version] = shares.get(mirror.version, 0.0) + extra / total
    return shares


@dataclass(frozen=True)
class SplitVerdict:
    """``state`` is MATCHES, CONTRADICTS or UNDECIDED; ``reason`` says why, in one line."""

    state: str
    requests: float
    observed: dict[int, float] = field(default_factory=dict)
    reason: str = ""


def _mismatch(counts: dict[int, float], shares: dict[int, float], alpha: float, stray: float) -> str | None:
    n = sum(counts.values())
    versions = sorted(set(counts) | set(shares))
    tested = [v for v in versions if 0 < shares.get(v, 0.0) < 1]
    per_test = alpha / max(1, len(tested))
    for v in versions:
        share, k = shares.get(v, 0.0), counts.get(v, 0.0)
        if 0 < share < 1:
            check = SampleRatioCheck(per_test)
            if check.update(canary_requests=k, champion_requests=n - k, weight=share):
                e = check.evidence()
                return (f"v{v} served {k / n:.2%} of {n:,.0f} requests at share {share:.2%} "
                        f"(sample ratio mismatch, e={e['e_value']:.3g} >= {e['threshold']:g})")
        elif share <= 0 and k > stray * n:
            return f"v{v} served {k / n:.2%} of {n:,.0f} requests at share 0"
        elif share >= 1 and n - k > stray * n:
            return f"v{v} served {k / n:.2%} of {n:,.0f} requests at share 100%"
    return None


def judge_split(counts: dict[int, float], expected: dict[int, float], *, previous: dict[int, float] | None = None,
                alpha: float = 0.001, min_requests: int = 100, stray: float = 0.02) -> SplitVerdict:
    """Whether ``counts`` (requests per version) fit ``expected`` (shares summing to 1)."""
    counts = {v: max(float(c), 0.0) for v, c in counts.items() if c > 0}
    n = sum(counts.values())
    observed = {v: c / n for v, c in counts.items()} if n else {}
    if n < min_requests:
        return SplitVerdict(UNDECIDED, n, observed, f"{n:,.0f} requests observed, {min_requests} needed")
    against_new = _mismatch(counts, expected, alpha, stray)
    if against_new:
        return SplitVerdict(CONTRADICTS, n, observed, against_new)
    if previous is not None and not _same(previous, expected):
        against_old = _mismatch(counts, previous, alpha, stray)
        if not against_old:
            return SplitVerdict(UNDECIDED, n, observed, f"{n:,.0f} requests fit the new split and the previous one alike")
    return SplitVerdict(MATCHES, n, observed, f"{n:,.0f} requests fit the split")


def _same(a: dict[int, float], b: dict[int, float]) -> bool:
    keys = set(a) | set(b)
    return all(abs(a.get(k, 0.0) - b.get(k, 0.0)) < 1e-9 for k in keys)


def describe(observed: dict[int, float]) -> str:
    """``v1 94.8%, v2 5.2%``."""
    return ", ".join(f"v{v} {s:.1%}" for v, s in sorted(observed.items())) or "nothing"
