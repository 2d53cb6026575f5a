"""Business KPIs and the ``experiment`` strategy against the real router and a real Prometheus.

``bentoml serve`` (the router), real MLflow, real git, and a Prometheus of our
own scraping the router and a tiny loopback "shop" exporter. A client sends predictions,
reads which version answered, and counts a visit and (with a probability per version) a
conversion in the shop's counters; the policy's KPI ``conversion`` is their ratio per
version (PromQL templates with ``{version}``). All versions are the same ``tiny`` model,
so errors, latency and scores never differ: only the KPI does.
"""

from __future__ import annotations

import random
import re
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.cli import main
from promotion.records import RecordStore
from promotion.topology.prometheus import start_prometheus
from tests.conftest import make_repo

pytestmark = pytest.mark.integration
PROMETHEUS = "/usr/bin/prometheus"
TOKEN = "kpi-canary-admin"
CHAMPION_RATE = 0.3
POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {}
rollout:
  strategy: experiment
  experiment: {weights: {canary: 50}, kpi: conversion, min_effect: 0.05, max_duration_s: 6}
  interval_s: 0.5
slo: {error_rate_max: 0.05, latency_p95_ms_max: 250, min_requests: 20}
analysis:
  alpha: 0.05
  score_shift: {enabled: true}
  kpis:
    - name: conversion
      numerator: 'sum(shop_conversions_total{version="{version}"})'
      denominator: 'sum(shop_visits_total{version="{version}"})'
      direction: higher
      tolerance: 0.05
"""


class Shop:
    """The application's own counters on loopback: visits and conversions per version."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, generate_latest

        self.registry = CollectorRegistry()
        self.visits = Counter("shop_visits", "visits", ["version"], registry=self.registry)
        self.conversions = Counter("shop_conversions", "conversions", ["version"], registry=self.registry)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = generate_latest(registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Client:
    """Predictions on three threads; each answer is a visit of the version that served it,
    converting with ``rate(version)``."""

    def __init__(self, url: str, rows: list[dict], shop: Shop) -> None:
        self.url, self.rows, self.shop = url, rows, shop
        self.rate = lambda version: CHAMPION_RATE
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(3)]

    def start(self) -> "Client":
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    def _run(self, i: int) -> None:
        rng = random.Random(i)
        while not self._stop.is_set():
            try:
                r = requests.post(self.url + "/predict", json={"features": rng.choice(self.rows)}, timeout=10)
                version = int(r.json()["version"])
            except (requests.RequestException, ValueError, KeyError, TypeError):
                continue
            self.shop.visits.labels(str(version)).inc()
            if rng.random() < self.rate(version):
                self.shop.conversions.labels(str(version)).inc()
            time.sleep(0.01)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.support.fraud_versions import register_tiny
    from tests.support.world import isolated_env

    assert shutil.which(PROMETHEUS), f"{PROMETHEUS} is not installed (make system-deps)"
    root = tmp_path_factory.mktemp("kpi-canary")
    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = [register_tiny(registry).version for _ in range(4)]
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=1, ready=False)
    shop = Shop()
    prom = client = None
    try:
        prom = start_prometheus([f"127.0.0.1:{port}", shop.address], root / "prometheus")
        url = prom.url
        env_file = repo / "environments" / "prod.yaml"
        text = env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}")
        text = text[:text.index("metrics:")] + f"metrics:\n  source: prometheus\n  url: {url}\n  selector: 'job=\"fraud\"'\n"
        env_file.write_text(text)
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
        Git(repo)("commit", "-q", "--amend", "--no-edit")
        propose(repo, registry, versions[0])
        assert main(["--root", str(repo), "rollout", "prod"]) == 0  # first deployment: v1 alone
        rows = data.generate(500, seed=7)[list(data.FEATURES)].to_dict("records")
        client = Client(service.url, rows, shop).start()
        yield {"repo": repo, "registry": registry, "versions": versions, "client": client, "service": service}
    finally:
        if client:
            client.stop()
        if prom is not None:
            prom.stop()
        shop.stop()
        service.stop()
        mp.undo()


def propose(repo, registry, version: int) -> None:
    mv = registry.version("fraud-detector", version)
    set_model(repo / "environments" / "prod.yaml", version, mv.digest)
    Git(repo).commit(f"Merge pull request: promote prod to v{version}", ["environments/prod.yaml"])


def rollout(world, version: int, rate) -> tuple[int, object]:
    world["client"].rate = rate
    propose(world["repo"], world["registry"], version)
    code = main(["--root", str(world["repo"]), "rollout", "prod", "--max-seconds", "60"])
    return code, RecordStore(world["repo"], "prod").latest()


def served_routes(world) -> dict[int, float]:
    """What the router serves now, read from the router itself."""
    from promotion.config import Project
    from promotion.traffic import backend_for

    routes = backend_for(Project(world["repo"]).environment("prod")).routing().routes
    return {int(v): float(w) for v, w in routes.items() if w > 0}


def env_file_version(world) -> int:
    from promotion.config import Project

    return Project(world["repo"]).environment("prod").model.version


def test_experiment_without_improvement_ends_without_promoting(world):
    v1, same = world["versions"][0], world["versions"][1]
    t0 = time.monotonic()
    code, record = rollout(world, same, lambda v: CHAMPION_RATE)
    assert code == 1
    assert time.monotonic() - t0 >= 6  # held the split for max_duration_s
    assert record.action == "rollback" and record.version == v1 and record.predicate["replaced_version"] == same
    reason = record.predicate["reason"]
    assert reason.startswith("experiment ended without showing the improvement: conversion lift"), reason
    ex = record.predicate["evidence"]["experiment"]
    assert ex["outcome"] == "end" and not ex["shown"] and ex["lift"]["lower"] <= ex["min_effect"] == 0.05
    assert ex["canary"]["denominator"] >= 50 and ex["champion"]["denominator"] >= 50
    assert record.predicate["steps"][-1]["verdict"] == "ended" and record.predicate["steps"][-1]["weight"] == 50.0
    # champion serves again, alias and environment file name it, and git says why
    assert served_routes(world) == {v1: 100.0}
    assert world["registry"].alias("fraud-detector", "prod") == v1 and env_file_version(world) == v1
    assert Git(world["repo"])("log", "-1", "--format=%s").startswith(f"rollback prod: fraud-detector v{same} -> v{v1}")


def test_kpi_regression_during_the_experiment_rolls_back_with_its_evidence(world):
    v1, worse = world["versions"][0], world["versions"][2]
    code, record = rollout(world, worse, lambda v: 0.02 if v == worse else CHAMPION_RATE)
    assert code == 1
    assert record.action == "rollback" and record.version == v1
    reason = record.predicate["reason"]
    said = re.match(r"kpi conversion regressed: canary (\S+) vs champion (\S+) ", reason)
    assert said and float(said[1]) < 0.1 < float(said[2]), reason
    kpi = record.predicate["evidence"]["kpis"]["conversion"]
    assert kpi["rejected"] and kpi["e_value"] >= kpi["threshold"] and kpi["alpha"] == pytest.approx(0.05 / 6)
    assert kpi["canary"] < 0.1 < kpi["champion"] and kpi["counts"]["canary"]["denominator"] > 0
    assert "score shift" not in reason and "error rate" not in reason
    assert served_routes(world) == {v1: 100.0} and env_file_version(world) == v1


def test_experiment_showing_the_improvement_promotes(world):
    better = world["versions"][3]
    code, record = rollout(world, better, lambda v: 0.7 if v == better else CHAMPION_RATE)
    assert code == 0
    assert record.action == "promote" and record.version == better
    step = record.predicate["steps"][-1]
    assert step["weight"] == 50.0 and step["experiment"]["shown"]
    assert step["evidence"]["experiment"]["lift"]["lower"] > 0.05
    assert served_routes(world) == {better: 100.0}
