"""The routing document: what share of traffic each model version gets, on the wire and on disk.

One type, :class:`Routing`, is what the router persists (``routing.json``), what its admin
endpoint answers and what the package's traffic backend reads back::

    from promotion.contract.routing import Routing, parse_request, bucket
    state = parse_request({"routes": {"1": 95, "2": 5},
                           "digests": {"1": "sha256:…", "2": "sha256:…"}}, model="fraud-detector")
    state.versions()                       # {1: "sha256:…", 2: "sha256:…"}: what must be loaded
    view = Routing.from_json(answer, view=True)   # GET /admin/routing, with its workers
    view.applied                           # every live worker serves view.generation

Admin request body (``POST /admin/routing``)::

    {"routes": {"1": 95, "2": 5}, "digests": {"1": "sha256:…", "2": "sha256:…"},
     "shadow": null | {"version": 3, "percent": 100, "digest": "sha256:…"},
     "generation": 6}          # optional: the generation this change was computed from

Weights are in [0, 100] and sum to 100; every routed version has a digest. A routing key
(header ``X-Routing-Key`` by default) hashes to a fixed bucket in [0, 100) with
:func:`bucket`, so the same key lands on the same version for a given split.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from promotion.contract.digest import DIGEST_RE

ROUTING_PATH = "/admin/routing"
ROUTING_KEY_HEADER = "X-Routing-Key"
GENERATION_HEADER = "X-Promotion-Generation"  # on every /predict answer: the generation that served it
WORKER_HEADER = "X-Promotion-Worker"          # on every /predict answer: the worker's pid
# on a /predict request, with the admin token: served by this loaded version only, whatever the
# weights, and never counted as user traffic (a smoke test of a canary before it takes any)
PIN_HEADER = "X-Promotion-Version"
WEIGHT_TOLERANCE = 1e-6
BUCKETS = 10_000  # bucket resolution: 0.01 percentage points
MAX_GENERATION = 2**53 - 1  # exact in every JSON reader
_FIELDS = {"routes", "digests", "shadow", "generation", "model", "updated_at"}
_VIEW_FIELDS = {"workers", "refused"}

__all__ = ["Routing", "Shadow", "WorkerStatus", "RoutingInputError", "parse_request", "parse_generation",
           "based_on", "request_body", "bucket", "DIGEST_RE", "ROUTING_PATH", "ROUTING_KEY_HEADER",
           "GENERATION_HEADER", "WORKER_HEADER", "PIN_HEADER", "MAX_GENERATION", "BUCKETS", "WEIGHT_TOLERANCE"]


class RoutingInputError(ValueError):
    """A document that is not a routing (an admin body: HTTP 400; a file: unreadable)."""


@dataclass(frozen=True)
class Shadow:
    """A version that receives a copy of ``percent`` % of the requests; its answers are not served."""

    version: int
    percent: float
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "percent": self.percent, "digest": self.digest}

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read (``shadow.get("version")``) for callers written against the
        JSON form."""
        return self.to_json().get(key, default)


@dataclass(frozen=True)
class WorkerStatus:
    """What one serving worker applies right now (from its heartbeat)."""

    pid: int
    generation: int
    loaded: tuple[int, ...]
    seen_at: float
    ready: bool = True


@dataclass(frozen=True)
class Routing:
    """One generation of routing; in a view (GET), also what every live worker applies."""

    generation: int
    model: str
    routes: dict[int, float]
    digests: dict[int, str]
    shadow: Shadow | None = None
    updated_at: float = 0.0
    workers: tuple[WorkerStatus, ...] = ()
    refused: dict[int, str] = field(default_factory=dict)

    def versions(self) -> dict[int, str]:
        """Every version this routing needs loaded, with its expected digest."""
        needed = {v: self.digests[v] for v in self.routes}
        if self.shadow is not None:
            needed[self.shadow.version] = self.shadow.digest
        return needed

    @property
    def applied(self) -> bool:
        """Every live worker serves this generation (a view with workers only)."""
        return bool(self.workers) and all(w.generation >= self.generation for w in self.workers)

    def to_json(self) -> dict[str, Any]:
        """The persisted form (``routing.json``, the admin answer); a view's workers are not in it."""
        return {
            "generation": self.generation,
            "model": self.model,
            "routes": {str(v): w for v, w in sorted(self.routes.items())},
            "digests": {str(v): d for v, d in sorted(self.digests.items())},
            "shadow": None if self.shadow is None else self.shadow.to_json(),
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: Any, view: bool = False) -> "Routing":
        """A persisted routing; RoutingInputError for anything that is not one.

        ``view``: a ``GET /admin/routing`` answer, which may hold no routing yet (generation
        0, no routes) and carries ``workers`` and ``refused``.
        """
        if not isinstance(data, dict):
            raise RoutingInputError("must be a JSON object")
        model = data.get("model", "")
        if not isinstance(model, str):
            raise RoutingInputError("model: must be a string")
        body = {k: v for k, v in data.items() if k not in _VIEW_FIELDS} if view else data
        generation = parse_generation(data.get("generation", 0))
        updated_at = data.get("updated_at", 0.0)
        if view and updated_at is None:
            updated_at = 0.0
        if isinstance(updated_at, bool) or not isinstance(updated_at, (int, float)) or not math.isfinite(updated_at):
            raise RoutingInputError("updated_at: must be a number")
        workers = _workers(data.get("workers")) if view else ()
        refused = {int(k): str(v) for k, v in (data.get("refused") or {}).items()} if view else {}
        if view and not body.get("routes"):
            return cls(generation=generation, model=model, routes={}, digests={}, updated_at=float(updated_at),
                       workers=workers, refused=refused)
        parsed = parse_request(body, model=model)
        return cls(generation=generation, model=parsed.model, routes=parsed.routes, digests=parsed.digests,
                   shadow=parsed.shadow, updated_at=float(updated_at), workers=workers, refused=refused)


def _workers(raw: Any) -> tuple[WorkerStatus, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RoutingInputError("workers: must be a list")
    return tuple(WorkerStatus(pid=int(w["pid"]), generation=int(w.get("generation", 0)),
                              loaded=tuple(int(v) for v in w.get("loaded", ())),
                              seen_at=float(w.get("seen_at", 0.0)), ready=bool(w.get("ready", True)))
                 for w in raw)


def parse_generation(value: Any, where: str = "generation") -> int:
    """A generation number: an integer in [0, 2**53); RoutingInputError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GENERATION:
        raise RoutingInputError(f"{where}: must be an integer in [0, {MAX_GENERATION}]")
    return value


def based_on(body: Any) -> int | None:
    """The generation an admin body says it was computed from (its ``generation``), if any."""
    if isinstance(body, dict) and body.get("generation") is not None:
        return parse_generation(body["generation"])
    return None


def _version(key: Any, where: str) -> int:
    try:
        v = int(key)
    except (TypeError, ValueError):
        raise RoutingInputError(f"{where}: {key!r} is not a model version") from None
    if isinstance(key, bool) or str(v) != str(key).strip() or v < 1:
        raise RoutingInputError(f"{where}: {key!r} is not a model version")
    return v


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RoutingInputError(f"{where}: must be a number")
    if not 0.0 <= value <= 100.0:
        raise RoutingInputError(f"{where}: must be in [0, 100]")
    return float(value)


def _digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise RoutingInputError(f"{where}: must be sha256:<64 hex digits>")
    return value


def parse_request(body: Any, model: str) -> Routing:
    """Validate an admin request body into a (generation 0) routing; RoutingInputError if bad."""
    if not isinstance(body, dict):
        raise RoutingInputError("body: must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise RoutingInputError(f"body: unknown field(s): {', '.join(map(str, unknown))}")
    routes_in, digests_in = body.get("routes"), body.get("digests")
    if not isinstance(routes_in, dict) or not routes_in:
        raise RoutingInputError("routes: must be a non-empty object of version -> weight")
    if not isinstance(digests_in, dict):
        raise RoutingInputError("digests: must be an object of version -> sha256 digest")
    routes = {_version(k, "routes"): _number(w, f"routes.{k}") for k, w in routes_in.items()}
    if len(routes) != len(routes_in):
        raise RoutingInputError("routes: a version is listed twice")
    total = sum(routes.values())
    if abs(total - 100.0) > WEIGHT_TOLERANCE:
        raise RoutingInputError(f"routes: weights must sum to 100, not {total:g}")
    digests = {_version(k, "digests"): _digest(d, f"digests.{k}") for k, d in digests_in.items()}
    missing = sorted(set(routes) - set(digests))
    if missing:
        raise RoutingInputError(f"digests: missing for version(s) {', '.join(map(str, missing))}")
    digests = {v: digests[v] for v in routes}  # digests of unrouted versions are not kept
    shadow = None
    raw = body.get("shadow")
    if isinstance(raw, Shadow):
        raw = raw.to_json()
    if raw is not None:
        if not isinstance(raw, dict) or set(raw) - {"version", "percent", "digest"}:
            raise RoutingInputError("shadow: must be null or {version, percent, digest}")
        sv = _version(raw.get("version"), "shadow.version")
        digest = raw.get("digest", digests.get(sv))
        shadow = Shadow(version=sv, percent=_number(raw.get("percent", 100.0), "shadow.percent"),
                        digest=_digest(digest, "shadow.digest"))
        if sv in digests and digests[sv] != shadow.digest:
            raise RoutingInputError(f"shadow.digest: differs from digests.{sv}")
        if shadow.percent == 0.0:
            shadow = None
    return Routing(generation=0, model=model, routes=routes, digests=digests, shadow=shadow)


def request_body(routes: dict[int, float], digests: dict[int, str], shadow: Shadow | dict | None = None,
                 based_on: int | None = None) -> dict[str, Any]:
    """The admin request body for a routing change (what :func:`parse_request` reads)."""
    if isinstance(shadow, Shadow):
        shadow = shadow.to_json()
    body: dict[str, Any] = {"routes": {str(int(v)): float(w) for v, w in routes.items()},
                            "digests": {str(int(v)): d for v, d in digests.items()},
                            "shadow": shadow}
    if based_on is not None:
        body["generation"] = int(based_on)
    return body


def bucket(key: str) -> float:
    """The routing key's fixed place in [0, 100)."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(h, "big") % BUCKETS) * (100.0 / BUCKETS)
