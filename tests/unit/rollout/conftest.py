"""A real sqlite registry with two tiny versions, copied fresh for each test."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from promotion.metrics.base import LATENCY_BUCKETS, Snapshot, VersionCounters
from promotion.traffic.base import Applied, Current, Mirror


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
    """The traffic backend's contract (:class:`promotion.traffic.base.TrafficBackend`), in
    memory: records every routing it is given. ``set_routing`` is the router-style call
    the contract's ``set_weights`` goes through (tests override it to refuse a change)."""

    kind = "double"
    apply_timeout_s = 5.0

    def __init__(self) -> None:
        self.live = Routing(0, {}, {})
        self.history: list[dict] = []
        self.shadows: list[dict | None] = []  # the shadow of each routing in history
        self.prepared: dict[int, str] = {}

    def routing(self) -> Routing:
        return self.live

    def set_routing(self, routes, digests, shadow=None) -> Routing:
        assert abs(sum(routes.values()) - 100) < 1e-9, routes
        assert set(digests) == set(routes) and all(str(d).startswith("sha256:") for d in digests.values())
        self.live = Routing(self.live.generation + 1, {str(k): float(v) for k, v in routes.items()},
                            {str(k): v for k, v in digests.items()}, shadow)
        self.history.append({int(k): v for k, v in self.live.routes.items()})
        self.shadows.append(dict(shadow) if shadow else None)
        return self.live

    # -- the contract ----------------------------------------------------------------------

    def prepare(self, version: int, digest: str) -> None:
        assert str(digest).startswith("sha256:"), digest
        self.prepared[int(version)] = digest

    def set_weights(self, weights, mirror=None, *, canary=None, based_on=None) -> Applied:
        digests = {v: self.prepared[v] for v in weights}  # KeyError: a version never prepared
        shadow = None if mirror is None else {"version": mirror.version, "percent": mirror.percent,
                                              "digest": self.prepared[mirror.version]}
        r = self.set_routing(weights, digests, shadow)
        return Applied(r.generation, {int(k): v for k, v in r.routes.items()}, mirror, canary)

    def verify(self, applied: Applied, timeout_s: float) -> float:
        assert applied.generation == self.live.generation
        return 0.002

    def current(self) -> Current:
        s = self.live.shadow
        return Current(self.live.generation, {int(k): v for k, v in self.live.routes.items()},
                       None if not s else Mirror(int(s["version"]), float(s["percent"])),
                       {int(k): v for k, v in self.live.digests.items()})

    def is_online(self) -> bool:
        return True

    def weights(self) -> dict[int, float]:
        return {int(k): v for k, v in self.live.routes.items() if v > 0}


class SimulatedService:
    """A metrics source whose counters grow as a service would under the router's weights.

    Each snapshot serves ``per_tick`` more requests split by the current weights; each
    version fails with its error rate and answers with latencies around its median.
    When the routing has a shadow, the router's share of the successfully served
    requests is mirrored to it, as the real router does: the shadow fails a mirrored
    request with ``shadow_behaviour[v][1]`` (an error of kind ``shadow``, not a served
    request) and otherwise agrees with the served label with ``shadow_behaviour[v][0]``.
    """

    def __init__(self, router: RouterDouble, behaviour: dict[int, tuple[float, float]], per_tick: int = 400,
                 seed: int = 7, clock=None, shadow_behaviour: dict[int, tuple[float, float]] | None = None) -> None:
        self.router, self.behaviour, self.per_tick = router, behaviour, per_tick
        self.shadow_behaviour = shadow_behaviour or {}
        self.rng = np.random.default_rng(seed)
        self.totals: dict[int, dict] = {}
        self.clock = clock
        self.online = True

    def is_online(self) -> bool:
        return self.online

    def now(self) -> float:
        return self.clock() if self.clock else 0.0  # each snapshot is taken after it: never stale

    def _totals(self, v: int) -> dict:
        return self.totals.setdefault(v, {"requests": 0, "kinds": {}, "lat": np.zeros(len(LATENCY_BUCKETS)), "sum": 0.0,
                                          "shadow": 0, "agree": 0, "disagree": 0})

    def snapshot(self) -> Snapshot:
        from promotion.errors import MetricsError

        if not self.online:
            raise MetricsError("scrape http://127.0.0.1:1/metrics failed: connection refused")
        weights = self.router.weights()
        shadow = self.router.live.shadow
        if weights:
            versions = list(weights)
            p = np.array([weights[v] for v in versions]) / sum(weights.values())
            counts = self.rng.multinomial(self.per_tick, p)
            served_ok = 0
            for v, n in zip(versions, counts):
                err, median_ms = self.behaviour[v]
                t = self._totals(v)
                errors = int(self.rng.binomial(n, err))
                lat = self.rng.lognormal(np.log(median_ms / 1000), 0.3, n)
                t["requests"] += n
                t["kinds"]["predict"] = t["kinds"].get("predict", 0) + errors
                t["lat"] += np.array([(lat <= b).sum() for b in LATENCY_BUCKETS])
                t["sum"] += float(lat.sum())
                served_ok += n - errors
            if shadow:
                sv = int(shadow["version"])
                agree_p, fail_p = self.shadow_behaviour.get(sv, (1.0, 0.0))
                mirrored = int(self.rng.binomial(served_ok, float(shadow.get("percent", 100.0)) / 100.0))
                failed = int(self.rng.binomial(mirrored, fail_p))
                agreed = int(self.rng.binomial(mirrored - failed, agree_p))
                t = self._totals(sv)
                t["shadow"] += mirrored - failed
                t["agree"] += agreed
                t["disagree"] += mirrored - failed - agreed
                t["kinds"]["shadow"] = t["kinds"].get("shadow", 0) + failed
        if self.clock:
            self.clock.advance(1.0)
        return Snapshot(self.clock() if self.clock else 0.0, {
            v: VersionCounters(requests=float(t["requests"]), errors=float(sum(t["kinds"].values())),
                               errors_by_kind={k: float(n) for k, n in t["kinds"].items()},
                               latency_bounds=LATENCY_BUCKETS, latency_counts=tuple(float(x) for x in t["lat"]),
                               latency_sum=t["sum"], shadow_requests=float(t["shadow"]),
                               shadow_agree=float(t["agree"]), shadow_disagree=float(t["disagree"]))
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
