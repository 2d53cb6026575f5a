"""A loopback HTTP server that records what it was asked and answers as told."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest


class Loopback:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []
        self.respond = lambda path, params: (200, "text/plain", "")
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                outer.requests.append((url.path, params))
                status, ctype, body = outer.respond(url.path, params)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback():
    server = Loopback()
    yield server
    server.close()


def service_metrics_text(per_version: dict[int, dict], extra_labels: dict[str, str] | None = None) -> str:
    """Exposition text in the service's metric contract, written by prometheus_client
    itself (so ``_total`` and ``_created`` samples appear as the real service's do).
    ``per_version``: {version: {"requests": n, "errors": {kind: n}, "latencies": [s, ...]}}."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from promotion.metrics.base import LATENCY_BUCKETS

    extra = extra_labels or {}
    names = list(extra)
    reg = CollectorRegistry()
    req = Counter("promotion_requests", "served", ["version", *names], registry=reg)
    err = Counter("promotion_request_errors", "errors", ["version", "kind", *names], registry=reg)
    lat = Histogram("promotion_request_latency_seconds", "latency", ["version", *names],
                    buckets=LATENCY_BUCKETS[:-1], registry=reg)
    for version, m in per_version.items():
        req.labels(str(version), *extra.values()).inc(m.get("requests", 0))
        for kind, n in m.get("errors", {}).items():
            err.labels(str(version), kind, *extra.values()).inc(n)
        for s in m.get("latencies", []):
            lat.labels(str(version), *extra.values()).observe(s)
    return generate_latest(reg).decode()
