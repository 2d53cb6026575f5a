"""A real Prometheus server scrapes the service's metric contract; PrometheusProvider
must read back exactly what was served.

Two endpoints: a tiny http.server with a prometheus_client registry (exact counts, no
model), and the real router under ``bentoml serve`` (2 workers) serving real clients at a
weight split, one version failing for real; then a whole rollout measured through
Prometheus (``metrics.source: prometheus``).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promotion.metrics.base import LATENCY_BUCKETS, window
from promotion.metrics.prometheus import PrometheusProvider
from promotion.topology.prometheus import start_prometheus

from tests.support.policies import steps_policy

PROMETHEUS = "/usr/bin/prometheus"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(PROMETHEUS) is None, reason=f"{PROMETHEUS} is not installed (apt-get install prometheus)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceMetrics:
    """Serves /metrics in the contract; ``serve(version, n, errors, latency_s)`` adds traffic."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

        self.registry = CollectorRegistry()
        self.requests = Counter("promotion_requests", "served", ["version"], registry=self.registry)
        self.errors = Counter("promotion_request_errors", "errors", ["version", "kind"], registry=self.registry)
        self.latency = Histogram("promotion_request_latency_seconds", "latency", ["version"],
                                 buckets=LATENCY_BUCKETS[:-1], registry=self.registry)
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = generate_latest(registry)
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, version: int, n: int, errors: int, latency_s: float) -> None:
        self.requests.labels(str(version)).inc(n)
        if errors:
            self.errors.labels(str(version), "predict").inc(errors)
        for _ in range(n):
            self.latency.labels(str(version)).observe(latency_s)


@pytest.fixture
def service_metrics():
    svc = ServiceMetrics()
    yield svc
    svc.server.shutdown()
    svc.server.server_close()


@pytest.fixture
def prometheus(service_metrics, tmp_path):
    prom = start_prometheus([service_metrics.address], tmp_path / "prometheus")
    try:
        yield prom.url
    finally:
        prom.stop()


def wait_for(provider, version: int, requests: float, timeout: float = 20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = provider.snapshot()
        if snap.versions.get(version) and snap.versions[version].requests == requests:
            return snap
        time.sleep(0.3)
    pytest.fail(f"prometheus never showed {requests} requests for version {version}")


def test_provider_reads_what_prometheus_scraped(service_metrics, prometheus):
    provider = PrometheusProvider(prometheus, selector='job="fraud"')
    service_metrics.serve(6, 200, 2, 0.004)
    service_metrics.serve(7, 20, 3, 0.2)
    first = wait_for(provider, 7, 20)
    assert first.versions[6].requests == 200 and first.versions[6].errors == 2
    assert first.versions[7].errors_by_kind == {"predict": 3}
    assert first.versions[7].slower_than(0.15) == 20 and first.versions[6].slower_than(0.005) == 0

    service_metrics.serve(7, 30, 1, 0.004)
    second = wait_for(provider, 7, 50)
    w = window(first, second)
    assert (w.get(7).requests, w.get(7).errors, w.get(7).slower_than(0.005)) == (30, 1, 0)


def test_a_selector_matching_nothing_is_no_data_not_success(service_metrics, prometheus):
    service_metrics.serve(7, 5, 0, 0.004)
    wait_for(PrometheusProvider(prometheus, selector='job="fraud"'), 7, 5)
    assert PrometheusProvider(prometheus, selector='job="other"').snapshot().versions == {}


# -- the real router under `bentoml serve` -----------------------------------------------

TOKEN = "prometheus-test-token"
POLICY = steps_policy((10, 50, 100), hold_s=2, min_requests=30, max_s=90, interval_s=1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A promotion repo, a real MLflow registry (v1, v2 tiny; v3 needs ``session_risk``),
    `bentoml serve` with 2 workers, and a Prometheus scraping it; prod reads Prometheus."""
    from promotion._internal.git import Git
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import start_service
    from tests.conftest import make_repo
    from tests.support.fraud_versions import register_extra_feature, register_tiny

    root = tmp_path_factory.mktemp("prometheus-bentoml")
    from tests.support.world import isolated_env

    mp = isolated_env(root, TOKEN)
    repo = make_repo(root / "repo")
    registry = Registry(root=repo)
    versions = {"v1": register_tiny(registry).version, "v2": register_tiny(registry).version,
                "bad": register_extra_feature(registry).version}
    port = free_port()
    service = start_service(port, root / "state" / "service", registry.uri, TOKEN, workers=2, ready=False)
    prom = None
    try:
        prom = start_prometheus([f"127.0.0.1:{port}"], root / "prometheus")
        url = prom.url
        env_file = repo / "environments" / "prod.yaml"
        text = env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}")
        text = text[:text.index("metrics:")] + f"metrics:\n  source: prometheus\n  url: {url}\n  selector: 'job=\"fraud\"'\n"
        env_file.write_text(text)
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        Git(repo).commit("prod reads the test Prometheus", ["environments/prod.yaml", "policies/prod.yaml"])
        rows = data.generate(2000, seed=5)[list(data.FEATURES)].to_dict("records")  # no session_risk
        yield {"repo": repo, "registry": registry, "service": service, "prometheus": url, "versions": versions,
               "rows": rows}
    finally:
        if prom is not None:
            prom.stop()
        service.stop()
        mp.undo()


def _settled(provider, expect: dict[int, float], timeout: float = 30.0):
    """The first snapshot whose request counts equal ``expect`` (Prometheus lags a scrape)."""
    deadline = time.time() + timeout
    snap = None
    while time.time() < deadline:
        snap = provider.snapshot()
        if all(snap.versions.get(v) is not None and snap.versions[v].requests == n for v, n in expect.items()):
            return snap
        time.sleep(0.5)
    got = {v: (snap.versions[v].requests if snap and v in snap.versions else None) for v in expect}
    pytest.fail(f"prometheus never showed {expect}; last {got}")


def test_provider_matches_what_clients_of_the_real_router_observed(served):
    from promotion._internal.loadgen import Load
    from promotion.traffic.bentoml_router import BentoMLRouter

    v1, bad = served["versions"]["v1"], served["versions"]["bad"]
    registry, service = served["registry"], served["service"]
    router = BentoMLRouter(service.url, TOKEN)
    digests = {v: registry.version("fraud-detector", v).digest for v in (v1, bad)}
    router.wait_applied(router.set_routing({v1: 70.0, bad: 30.0}, digests).generation, 60)
    provider = PrometheusProvider(served["prometheus"], selector='job="fraud"')
    time.sleep(2.5)  # let a scrape see the service's state before the traffic
    before = provider.snapshot()

    load = Load(service.url, served["rows"], rate=120, threads=4).start()
    time.sleep(5)
    load.stop()
    seen = load.totals()
    # clients see a 200 from v1, and a 400 from the version that needs session_risk
    assert set(seen["served"]) == {str(v1)} and set(seen["failures"]) == {"400"}, seen
    n1, failed = seen["served"][str(v1)], seen["failed"]
    assert n1 > 200 and failed > 60

    start = {v: c.requests for v, c in before.versions.items()}
    after = _settled(provider, {v1: start.get(v1, 0) + n1, bad: start.get(bad, 0) + failed})
    w = window(before, after)
    assert (w.get(v1).requests, w.get(v1).errors) == (n1, 0)
    assert (w.get(bad).requests, w.get(bad).errors) == (failed, failed)
    assert w.get(bad).errors_by_kind == {"input": failed}
    assert w.get(v1).latency_count == n1 and w.get(v1).latency_quantile(0.95) < 0.25
    # the split the router was told, within chance (binomial, 4 standard deviations)
    n = n1 + failed
    assert abs(failed / n - 0.30) < 4 * (0.3 * 0.7 / n) ** 0.5


def test_rollout_measured_through_prometheus_promotes_a_healthy_canary(served, capsys):
    from promotion._internal.envfile import set_model
    from promotion._internal.git import Git
    from promotion._internal.loadgen import Load
    from promotion.cli import main
    from promotion.config import Project
    from promotion.records import RecordStore
    from promotion.traffic import backend_for

    repo, registry = served["repo"], served["registry"]
    v1, v2 = served["versions"]["v1"], served["versions"]["v2"]

    def propose(version):
        set_model(repo / "environments" / "prod.yaml", version, registry.version("fraud-detector", version).digest)
        Git(repo).commit(f"promote prod to v{version}", ["environments/prod.yaml"])

    propose(v1)
    assert main(["--root", str(repo), "rollout", "prod"]) == 0  # first deployment: v1 alone
    load = Load(served["service"].url, served["rows"], rate=100, threads=4).start()
    try:
        propose(v2)
        assert main(["--root", str(repo), "rollout", "prod", "--max-seconds", "240"]) == 0, capsys.readouterr().out
    finally:
        load.stop()
    out = capsys.readouterr().out
    assert "10%" in out and "50%" in out and "promoted" in out
    env = Project(repo).environment("prod")
    assert env.metrics_source == "prometheus"
    assert {v: w for v, w in backend_for(env).routing().routes.items() if w > 0} == {v2: 100.0}
    assert load.totals()["failed"] == 0
    record = RecordStore(repo, "prod").latest()
    assert record.action == "promote" and record.version == v2
    steps = record.predicate["steps"]
    assert [s["weight"] for s in steps] == [10.0, 50.0, 100.0]
    # each step's numbers came from Prometheus, and they are the traffic the clients sent
    assert all(s["canary_requests"] >= 30 for s in steps)
    assert load.totals()["served"].get(str(v2), 0) >= sum(s["canary_requests"] for s in steps[:2])
    # and only traffic at the step's own weight: Prometheus answers with its last scrape,
    # and counts scraped before a weight change never leak into the next step (a request
    # in flight across the change may: 3 are allowed)
    for s in steps:
        n, p = s["canary_requests"] + s["champion_requests"], s["weight"] / 100
        assert abs(s["canary_requests"] / n - p) <= 4 * (p * (1 - p) / n) ** 0.5 + 3 / n, s
