"""A real Prometheus scraping two replicas per version (four processes, each exporting
the service's metric contract with prometheus_client), found through file-based
service discovery as a deployment's targets are.

PrometheusProvider must read the per-version counters summed over the replicas; a
replica killed and started again on its port mid-window (its counters begin at 0) must
neither break the window nor count as served or failed; a replica that stops answering
(``up == 0``) or leaves service discovery must leave the window undecided.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from promotion.errors import MetricsError
from promotion.metrics.base import window
from promotion.metrics.prometheus import PrometheusProvider

PROMETHEUS = "/usr/bin/prometheus"
REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which(PROMETHEUS) is None, reason=f"{PROMETHEUS} is not installed (apt-get install prometheus)"),
]

# One replica serving one model version: GET /serve?n=&errors=&latency= records n requests
# (errors of them failed) in the contract's metrics, GET /metrics exposes them.
REPLICA = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from promotion.contract import metrics as m

port, version = int(sys.argv[1]), sys.argv[2]
reg = CollectorRegistry()
req = Counter(m.REQUESTS_FAMILY, "served", ["version"], registry=reg)
err = Counter(m.ERRORS_FAMILY, "errors", ["version", "kind"], registry=reg)
lat = Histogram(m.LATENCY_FAMILY, "latency", ["version"], buckets=m.LATENCY_BUCKETS, registry=reg)

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/serve":
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            n, e = int(q["n"]), int(q.get("errors", 0))
            req.labels(version).inc(n)
            if e:
                err.labels(version, "predict").inc(e)
            for _ in range(n):
                lat.labels(version).observe(float(q.get("latency", 0.004)))
            body = b"ok"
        else:
            body = generate_latest(reg)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Replica:
    def __init__(self, version: int) -> None:
        self.version, self.port, self.proc = version, free_port(), None
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> "Replica":
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        self.proc = subprocess.Popen([sys.executable, "-c", REPLICA, str(self.port), str(self.version)], env=env)
        deadline = time.time() + 20
        while True:
            try:
                requests.get(f"http://{self.address}/metrics", timeout=1)
                return self
            except requests.RequestException:
                if self.proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"replica v{self.version} on :{self.port} did not start")
                time.sleep(0.1)

    def serve(self, n: int, errors: int = 0, latency: float = 0.004) -> None:
        requests.get(f"http://{self.address}/serve", params={"n": n, "errors": errors, "latency": latency},
                     timeout=5).raise_for_status()

    def kill(self) -> None:
        """SIGKILL exactly this process (a crash: no chance to flush anything)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Replicas a, b of v1 and c, d of v2, and a Prometheus discovering them from a file."""
    root = tmp_path_factory.mktemp("replicas")
    replicas = {name: Replica(1 if name in "ab" else 2).start() for name in "abcd"}
    targets = root / "targets.json"

    def discover(names):
        tmp = targets.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [replicas[n].address for n in names]}]))
        os.replace(tmp, targets)  # atomically, as Prometheus reads it on change

    discover("abcd")
    port = free_port()
    config = root / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: fraud\n    file_sd_configs: [{{files: ['{targets}'], refresh_interval: 1s}}]\n")
    log = (root / "prometheus.log").open("w")
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    provider = PrometheusProvider(f"http://127.0.0.1:{port}", selector='job="fraud"')
    try:
        deadline = time.time() + 30
        while not provider.is_online():
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail("prometheus did not start: " + (root / "prometheus.log").read_text()[-2000:])
            time.sleep(0.2)
        yield {"replicas": replicas, "provider": provider, "discover": discover}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for r in replicas.values():
            r.kill()


def settled(provider, expect: dict[int, float], timeout: float = 20.0):
    """The first complete snapshot with these request counts (a scrape lags; a replica
    that is down makes snapshots fail until it is scraped again)."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            snap = provider.snapshot()
        except MetricsError as exc:
            last = exc.diagnostics()
        else:
            last = {v: c.requests for v, c in snap.versions.items()}
            if all(snap.versions.get(v) and snap.versions[v].requests == n for v, n in expect.items()):
                return snap
        time.sleep(0.3)
    pytest.fail(f"prometheus never showed {expect}; last: {last}")


def test_counts_are_summed_over_replicas_and_survive_a_replica_restart(fleet):
    r, provider = fleet["replicas"], fleet["provider"]
    r["a"].serve(30)
    r["b"].serve(50, errors=5)
    r["c"].serve(20, latency=0.2)
    r["d"].serve(10, errors=1)
    s0 = settled(provider, {1: 80, 2: 30})
    assert (s0.versions[1].errors, s0.versions[2].errors) == (5, 1)
    assert s0.versions[2].slower_than(0.15) == 20 and len(s0.replicas) == 4

    r["a"].serve(40)
    r["c"].serve(15)
    s1 = settled(provider, {1: 120, 2: 45})
    # a crashes and comes back on its port: its counters start again from 0
    r["a"].kill()
    r["a"].start()
    r["a"].serve(7)
    r["b"].serve(10)
    s2 = settled(provider, {1: 67, 2: 45})      # summed raw counters went down: 120 -> 67

    across = window(s1, s2)
    assert across.resets == (1,)
    assert (across.get(1).requests, across.get(1).errors, across.get(1).latency_count) == (17, 0, 17)
    # window after window, as the analysis adds them: exactly what the replicas served
    w01 = window(s0, s1)
    assert w01.get(1).requests + across.get(1).requests == 40 + 17
    assert w01.get(1).errors + across.get(1).errors == 0   # b's 5 old errors are not the window's
    assert w01.get(2).requests + across.get(2).requests == 15


def test_a_replica_that_stops_being_scraped_leaves_the_window_undecided(fleet):
    from promotion.rollout.transitions import window_since

    r, provider, discover = fleet["replicas"], fleet["provider"], fleet["discover"]
    start = settled(provider, {})
    r["d"].kill()                                  # stops answering: up == 0
    deadline = time.time() + 15
    while True:
        try:
            provider.snapshot()
        except MetricsError as exc:
            message = exc.diagnostics()
            break
        assert time.time() < deadline, "a replica that is down never made the snapshot incomplete"
        time.sleep(0.3)
    assert f'up == 0: {{job="fraud", instance="{r["d"].address}"}}' in message

    discover("abc")                                # and leaves service discovery
    r["c"].serve(5)
    before = {v: c.requests for v, c in start.versions.items()}
    later = settled(provider, {2: before[2] - 10 + 5})  # d's 10 requests are gone with its series
    with pytest.raises(MetricsError, match=r"no longer scraped .*" + r["d"].address.replace(".", r"\.")):
        window_since(start.to_dict(), later)
