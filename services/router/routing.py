"""Routing state: what share of traffic each model version gets, and how a request picks one.

Pure Python (no BentoML, no MLflow), shared by every worker through one file::

    from services.router import routing
    state = routing.parse_request({"routes": {"1": 95, "2": 5},
                                   "digests": {"1": "sha256:…", "2": "sha256:…"}}, model="fraud-detector")
    saved = routing.commit(state_dir, state)            # generation + 1, written atomically
    table = routing.RouteTable(saved.routes)
    version = table.pick(routing.bucket("customer-42"))  # sticky for a given weight

Stickiness: a routing key hashes to a bucket in [0, 100). Versions own consecutive bucket
ranges, newest version first, so raising the newest version's weight from 5 to 25 only
moves keys from [5, 25) onto it; keys already on it stay. For two versions any fixed
order has that property, which also covers rollbacks (an older version as the canary).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROUTING_FILE = "routing.json"
LOCK_FILE = "routing.lock"
REFUSED_FILE = "refused.json"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
WEIGHT_TOLERANCE = 1e-6
BUCKETS = 10_000  # bucket resolution: 0.01 percentage points


class RoutingInputError(ValueError):
    """An admin request body that cannot become routing state (HTTP 400)."""


@dataclass(frozen=True)
class Shadow:
    version: int
    percent: float
    digest: str


@dataclass(frozen=True)
class RoutingState:
    """One generation of routing, as persisted in ``routing.json``."""

    generation: int
    model: str
    routes: dict[int, float]
    digests: dict[int, str]
    shadow: Shadow | None = None
    updated_at: float = 0.0

    def versions(self) -> dict[int, str]:
        """Every version this state needs loaded, with its expected digest."""
        needed = {v: self.digests[v] for v in self.routes}
        if self.shadow is not None:
            needed[self.shadow.version] = self.shadow.digest
        return needed

    def to_json(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "model": self.model,
            "routes": {str(v): w for v, w in sorted(self.routes.items())},
            "digests": {str(v): d for v, d in sorted(self.digests.items())},
            "shadow": None if self.shadow is None else {
                "version": self.shadow.version, "percent": self.shadow.percent, "digest": self.shadow.digest},
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RoutingState":
        parsed = parse_request(data, model=data.get("model", ""))
        return cls(generation=int(data.get("generation", 0)), model=parsed.model, routes=parsed.routes,
                   digests=parsed.digests, shadow=parsed.shadow, updated_at=float(data.get("updated_at", 0.0)))


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


def parse_request(body: Any, model: str) -> RoutingState:
    """Validate an admin request body into a (generation 0) state; RoutingInputError if bad.

    Body: ``{"routes": {"1": 95, "2": 5}, "digests": {"1": "sha256:…", …},
    "shadow": null | {"version": 3, "percent": 100, "digest": "sha256:…"}}``.
    Weights are in [0, 100] and sum to 100; every routed version has a digest.
    """
    if not isinstance(body, dict):
        raise RoutingInputError("body: must be a JSON object")
    unknown = sorted(set(body) - {"routes", "digests", "shadow", "generation", "model", "updated_at"})
    if unknown:
        raise RoutingInputError(f"body: unknown field(s): {', '.join(unknown)}")
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
    return RoutingState(generation=0, model=model, routes=routes, digests=digests, shadow=shadow)


def bucket(key: str) -> float:
    """The routing key's fixed place in [0, 100)."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(h, "big") % BUCKETS) * (100.0 / BUCKETS)


def random_bucket() -> float:
    return random.random() * 100.0


class RouteTable:
    """Weights turned into consecutive bucket ranges, newest version first."""

    __slots__ = ("bounds", "versions")

    def __init__(self, routes: dict[int, float]) -> None:
        self.bounds: list[float] = []
        self.versions: list[int] = []
        upper = 0.0
        for version in sorted(routes, reverse=True):
            if routes[version] <= 0.0:
                continue
            upper += routes[version]
            self.bounds.append(upper)
            self.versions.append(version)
        if not self.versions:
            raise RoutingInputError("routes: no version has a positive weight")
        self.bounds[-1] = math.inf  # rounding never leaves a bucket unowned

    def pick(self, b: float) -> int:
        for upper, version in zip(self.bounds, self.versions):
            if b < upper:
                return version
        return self.versions[-1]  # unreachable: the last bound is +inf


# -- persistence ---------------------------------------------------------------------

def routing_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / ROUTING_FILE


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write ``data`` so readers see the old file or the new one, never half of either.

    ``durable`` also fsyncs, so the write survives a power cut (routing state); heartbeats skip it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextmanager
def locked(state_dir: str | Path) -> Iterator[None]:
    """Serialise read-modify-write of the routing state across worker processes."""
    path = Path(state_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def signature(path: Path) -> tuple[int, int, int] | None:
    """A cheap change marker of the routing file (one stat): mtime, inode, size."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_ino, st.st_size)


def load(state_dir: str | Path) -> RoutingState | None:
    """The persisted state, or None when there is none yet."""
    try:
        data = json.loads(routing_path(state_dir).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    return RoutingState.from_json(data)


def commit(state_dir: str | Path, state: RoutingState, if_absent: bool = False) -> RoutingState | None:
    """Persist ``state`` as the next generation and return what was written.

    With ``if_absent``, writes only when no state exists yet (returns None otherwise).
    """
    with locked(state_dir):
        current = load(state_dir)
        if if_absent and current is not None:
            return None
        generation = (current.generation if current else 0) + 1
        new = RoutingState(generation=generation, model=state.model, routes=dict(state.routes),
                           digests=dict(state.digests), shadow=state.shadow, updated_at=time.time())
        write_json_atomic(routing_path(state_dir), new.to_json())
        return new


# -- refusals (shared so that GET on any worker reports them) --------------------------

def load_refused(state_dir: str | Path) -> dict[str, str]:
    try:
        return dict(json.loads((Path(state_dir) / REFUSED_FILE).read_text(encoding="utf-8")))
    except (FileNotFoundError, ValueError):
        return {}


def record_refused(state_dir: str | Path, refused: dict[int, str], accepted: dict[int, str] | None = None) -> None:
    """Add refusals and clear versions that have since been verified."""
    with locked(state_dir):
        current = load_refused(state_dir)
        for v in accepted or {}:
            current.pop(str(v), None)
        current.update({str(v): reason for v, reason in refused.items()})
        write_json_atomic(Path(state_dir) / REFUSED_FILE, current, durable=False)
