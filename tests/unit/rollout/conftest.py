"""A real sqlite registry with two tiny versions, copied fresh for each test."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from promotion.metrics.base import LATENCY_BUCKETS, Snapshot, VersionCounters


@pytest.fixture(scope="session")
def registry_template(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import train

    root = tmp_path_factory.mktemp("registry")
    state = root / ".promotion"
    import os

    old = os.environ.get("PROMOTION_STATE")
    os.environ["PROMOTION_STATE"] = str(state)
    tracking = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        reg = Registry(root=root)
        v1 = train.register(reg, train.SPECS["tiny"])
        v2 = train.register(reg, train.SPECS["tiny"])
    finally:
        if tracking is not None:
            os.environ["MLFLOW_TRACKING_URI"] = tracking
        if old is None:
            os.environ.pop("PROMOTION_STATE", None)
        else:
            os.environ["PROMOTION_STATE"] = old
    return state, {1: v1.digest, 2: v2.digest}


@pytest.fixture
def registry(registry_template, repo, tmp_path, monkeypatch):
    """(Registry, digests): the template's sqlite store, copied into this test's state dir."""
    from promotion.registry import Registry

    state, digests = registry_template
    mine = tmp_path / "state"
    mine.mkdir(exist_ok=True)
    shutil.copy(state / "mlflow.db", mine / "mlflow.db")
    monkeypatch.setenv("PROMOTION_STATE", str(mine))
    reg = Registry(root=repo)
    assert reg.uri.endswith(str(mine / "mlflow.db"))
    return reg, digests


@dataclass
class Routing:
    generation: int
    routes: dict
    digests: dict
    shadow: dict | None = None


class RouterDouble:
    """The traffic backend's contract, in memory: records every routing it is given."""

    def __init__(self) -> None:
        self.current = Routing(0, {}, {})
        self.history: list[dict] = []

    def routing(self) -> Routing:
        return self.current

    def set_routing(self, routes, digests, shadow=None) -> Routing:
        assert abs(sum(routes.values()) - 100) < 1e-9, routes
        assert set(digests) == set(routes) and all(str(d).startswith("sha256:") for d in digests.values())
        self.current = Routing(self.current.generation + 1, {str(k): float(v) for k, v in routes.items()},
                               {str(k): v for k, v in digests.items()}, shadow)
        self.history.append({int(k): v for k, v in self.current.routes.items()})
        return self.current

    def wait_applied(self, generation: int, timeout_s: float) -> float:
        assert generation == self.current.generation
        return 0.002

    def is_online(self) -> bool:
        return True

    def weights(self) -> dict[int, float]:
        return {int(k): v for k, v in self.current.routes.items() if v > 0}


class SimulatedService:
    """A metrics source whose counters grow as a service would under the router's weights.

    Each snapshot serves ``per_tick`` more requests split by the current weights; each
    version fails with its error rate and answers with latencies around its median.
    """

    def __init__(self, router: RouterDouble, behaviour: dict[int, tuple[float, float]], per_tick: int = 400,
                 seed: int = 7, clock=None) -> None:
        self.router, self.behaviour, self.per_tick = router, behaviour, per_tick
        self.rng = np.random.default_rng(seed)
        self.totals: dict[int, dict] = {}
        self.clock = clock
        self.online = True

    def is_online(self) -> bool:
        return self.online

    def snapshot(self) -> Snapshot:
        from promotion.errors import MetricsError

        if not self.online:
            raise MetricsError("scrape http://127.0.0.1:1/metrics failed: connection refused")
        weights = self.router.weights()
        if weights:
            versions = list(weights)
            p = np.array([weights[v] for v in versions]) / sum(weights.values())
            counts = self.rng.multinomial(self.per_tick, p)
            for v, n in zip(versions, counts):
                err, median_ms = self.behaviour[v]
                t = self.totals.setdefault(v, {"requests": 0, "errors": 0, "lat": np.zeros(len(LATENCY_BUCKETS)), "sum": 0.0})
                errors = self.rng.binomial(n, err)
                lat = self.rng.lognormal(np.log(median_ms / 1000), 0.3, n)
                t["requests"] += n
                t["errors"] += errors
                t["lat"] += np.array([(lat <= b).sum() for b in LATENCY_BUCKETS])
                t["sum"] += float(lat.sum())
        if self.clock:
            self.clock.advance(1.0)
        return Snapshot(self.clock() if self.clock else 0.0, {
            v: VersionCounters(requests=float(t["requests"]), errors=float(t["errors"]), errors_by_kind={"predict": float(t["errors"])},
                               latency_bounds=LATENCY_BUCKETS, latency_counts=tuple(float(x) for x in t["lat"]),
                               latency_sum=t["sum"])
            for v, t in self.totals.items()})


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        self.t += s


def git_log(root: Path) -> list[str]:
    return subprocess.run(["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True, check=True).stdout.splitlines()


def files_in_head(root: Path) -> list[str]:
    return subprocess.run(["git", "show", "--name-only", "--format=", "HEAD"], cwd=root, capture_output=True,
                          text=True, check=True).stdout.split()
