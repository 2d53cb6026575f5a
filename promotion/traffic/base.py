"""The traffic-backend contract: how the rollout controller moves traffic between versions.

One small protocol, one file per implementation (``bentoml_router.py`` first; a Gateway
API or Istio backend would be another file). :func:`promotion.traffic.backend_for` picks
one for an environment and fails closed on an unknown kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class WorkerStatus:
    """What one serving worker applies right now."""

    pid: int
    generation: int
    loaded: tuple[int, ...]
    seen_at: float
    ready: bool = True


@dataclass(frozen=True)
class Routing:
    """The serving endpoint's routing: weights per version and what its workers apply."""

    generation: int
    model: str
    routes: dict[int, float]
    digests: dict[int, str]
    shadow: dict[str, Any] | None = None
    workers: tuple[WorkerStatus, ...] = ()
    refused: dict[int, str] = field(default_factory=dict)

    @property
    def applied(self) -> bool:
        """Every live worker serves this generation."""
        return bool(self.workers) and all(w.generation >= self.generation for w in self.workers)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Routing":
        return cls(
            generation=int(data.get("generation") or 0),
            model=str(data.get("model") or ""),
            routes={int(k): float(v) for k, v in (data.get("routes") or {}).items()},
            digests={int(k): str(v) for k, v in (data.get("digests") or {}).items()},
            shadow=data.get("shadow"),
            workers=tuple(WorkerStatus(pid=int(w["pid"]), generation=int(w.get("generation", 0)),
                                       loaded=tuple(int(v) for v in w.get("loaded", ())),
                                       seen_at=float(w.get("seen_at", 0.0)), ready=bool(w.get("ready", True)))
                          for w in data.get("workers") or ()),
            refused={int(k): str(v) for k, v in (data.get("refused") or {}).items()},
        )


class TrafficBackend(Protocol):
    """Sets and reads the traffic split of one serving endpoint."""

    def routing(self) -> Routing:
        """The current routing and what each worker applies; ServiceError if unreachable."""

    def set_routing(self, routes: dict[int, float], digests: dict[int, str],
                    shadow: dict[str, Any] | None = None) -> Routing:
        """Change the split (weights sum to 100); the endpoint verifies each digest first.

        Returns the new state (its generation); ServiceError if refused, routing unchanged.
        """

    def wait_applied(self, generation: int, timeout_s: float) -> float:
        """Seconds until every live worker applies ``generation``; ServiceError on timeout."""

    def is_online(self) -> bool:
        """The endpoint answers (without raising)."""
