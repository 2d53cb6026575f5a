"""The traffic-backend contract: how the rollout controller moves traffic between versions.

One small protocol, one file per implementation: ``bentoml_router.py`` (the project's own
router), ``envoy.py`` (a real Envoy proxy in front of one replica set per version),
``gateway_api.py`` (Gateway API routes in git). :func:`promotion.traffic.backend_for` picks
one for an environment from ``serving.kind`` and fails closed on an unknown kind.

The contract names nothing about how a data plane works inside::

    backend.prepare(2, "sha256:…")          # v2 is available and serves that artifact
    applied = backend.set_weights({1: 95.0, 2: 5.0}, canary=2)
    backend.verify(applied, timeout_s=5)    # seconds until the data plane shows it
    backend.current().serving()             # {1: 95.0, 2: 5.0}: read back, never trusted

Rules every backend keeps:

- ``set_weights`` only routes versions that were prepared (with their digest) by this
  backend object; weights are in [0, 100] and sum to 100 (:func:`check_weights`). A
  refused change raises :class:`~promotion.errors.ServiceError` and changes nothing.
- ``verify`` reads what the data plane applies (its admin API, its config dump, or the
  traffic it serves), never the backend's own write; it raises ServiceError on timeout.
- A mirror (shadow) the data plane cannot apply is a ServiceError naming the backend,
  never a silent no-op.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from promotion.errors import ServiceError

__all__ = ["Mirror", "Applied", "Current", "TrafficBackend", "check_weights", "check_mirror", "WEIGHT_TOLERANCE"]

WEIGHT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Mirror:
    """A copy of ``percent`` % of the requests goes to ``version``; its answers are not served."""

    version: int
    percent: float

    def to_json(self) -> dict:
        return {"version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class Applied:
    """What one :meth:`TrafficBackend.set_weights` call asked the data plane to apply.

    ``generation`` increases with every change of one environment's traffic; ``canary``
    is the version testers reach with the canary header (where the backend has one).
    """

    generation: int
    weights: dict[int, float]
    mirror: Mirror | None = None
    canary: int | None = None


@dataclass(frozen=True)
class Current:
    """What the data plane applies now, as read from it.

    ``applied``: every part of the data plane (each worker, each proxy) applies
    ``generation``; ``digests``: the artifact each routed version serves, where the data
    plane reports it.
    """

    generation: int
    weights: dict[int, float]
    mirror: Mirror | None = None
    digests: dict[int, str] = field(default_factory=dict)
    applied: bool = True

    def serving(self) -> dict[int, float]:
        """The versions that receive traffic (weight > 0), with their weights."""
        return {v: w for v, w in self.weights.items() if w > 0}


@runtime_checkable
class TrafficBackend(Protocol):
    """Makes versions available and moves the traffic split of one environment."""

    kind: str
    #: seconds the data plane may take to apply a change (a proxy reloads in milliseconds,
    #: a GitOps agent syncs in minutes); a rollback waits this long for its switch
    apply_timeout_s: float

    def prepare(self, version: int, digest: str) -> None:
        """Make ``version`` available and verified to serve the artifact ``digest``.

        ServiceError when it cannot be (unreachable, another digest, not configured);
        traffic is unchanged either way.
        """

    def set_weights(self, weights: dict[int, float], mirror: Mirror | None = None, *,
                    canary: int | None = None, based_on: int | None = None) -> Applied:
        """Change the split (weights sum to 100) and the mirror; every version prepared.

        ``canary``: the version the canary header reaches; ``based_on``: the generation
        this change was computed from (refused if traffic changed since). ServiceError if
        refused, traffic unchanged.
        """

    def verify(self, applied: Applied, timeout_s: float) -> float:
        """Seconds until the data plane is observed to apply ``applied``; ServiceError on timeout."""

    def current(self) -> Current:
        """What the data plane applies now; ServiceError if it cannot be read."""

    def is_online(self) -> bool:
        """The data plane answers (without raising)."""


def check_weights(weights: dict[int, float], where: str = "traffic") -> dict[int, float]:
    """``weights`` as {int version: float weight} if each is in [0, 100] and they sum to 100.

    ServiceError otherwise (a caller's bug or a bad file: nothing is changed).
    """
    out: dict[int, float] = {}
    for v, w in weights.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ServiceError(f"{where}: {v!r} is not a model version; traffic not changed")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0 <= w <= 100:
            raise ServiceError(f"{where}: v{v} weight {w!r} must be a number in [0, 100]; traffic not changed")
        out[v] = float(w)
    if not out or abs(sum(out.values()) - 100.0) > WEIGHT_TOLERANCE:
        raise ServiceError(f"{where}: weights must sum to 100, got {sum(out.values()):g}; traffic not changed")
    return out


def check_mirror(mirror: Mirror | None, where: str = "traffic") -> Mirror | None:
    """``mirror`` if its version is a model version and its percent is in (0, 100]."""
    if mirror is None:
        return None
    if not isinstance(mirror, Mirror):
        raise ServiceError(f"{where}: mirror must be a Mirror, got {type(mirror).__name__}; traffic not changed")
    if isinstance(mirror.version, bool) or not isinstance(mirror.version, int) or mirror.version < 1:
        raise ServiceError(f"{where}: mirror version {mirror.version!r} is not a model version; traffic not changed")
    p = mirror.percent
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0 < p <= 100:
        raise ServiceError(f"{where}: mirror percent {p!r} must be in (0, 100]; traffic not changed")
    return mirror
