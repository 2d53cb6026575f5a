"""A real Prometheus server scrapes a loopback endpoint serving the service's metric
contract; PrometheusProvider must read back exactly what was served.

The endpoint is the ``service_metrics`` fixture: a tiny http.server with a
prometheus_client registry. To test against the real service instead, make that
fixture start ``bentoml serve`` and return its base URL and a way to send traffic.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promotion.metrics.base import LATENCY_BUCKETS, window
from promotion.metrics.prometheus import PrometheusProvider

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
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: fraud\n    static_configs: [{{targets: ['{service_metrics.address}']}}]\n")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    provider = PrometheusProvider(url, selector='job="fraud"')
    try:
        deadline = time.time() + 30
        while not provider.is_online():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("prometheus did not start: " + (tmp_path / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
