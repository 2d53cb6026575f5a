import pytest
from conftest import service_metrics_text

from promotion.errors import ConfigError, MetricsError
from promotion.metrics import provider_for
from promotion.metrics.base import window
from promotion.metrics.scrape import ScrapeProvider


def test_snapshot_reads_the_contract_summing_other_labels(loopback):
    text = service_metrics_text({6: {"requests": 90, "errors": {"predict": 2}, "latencies": [0.004] * 90}}, {"worker": "1"})
    text2 = service_metrics_text({6: {"requests": 10, "errors": {"input": 1}, "latencies": [0.2] * 10},
                                  7: {"requests": 5, "latencies": [0.004] * 5}}, {"worker": "2"})
    merged = _merge_expositions(text, text2)
    loopback.respond = lambda path, params: (200, "text/plain; version=0.0.4", merged)
    snap = ScrapeProvider(loopback.url + "/metrics").snapshot()
    v6 = snap.versions[6]
    assert (v6.requests, v6.errors, v6.errors_by_kind) == (100, 3, {"predict": 2, "input": 1})
    assert v6.latency_count == 100 and v6.slower_than(0.15) == 10
    assert snap.versions[7].requests == 5 and snap.versions[7].errors == 0
    assert loopback.requests[-1][0] == "/metrics"


def _merge_expositions(*texts: str) -> str:
    """Two workers' samples under one HELP/TYPE header per family."""
    families: dict[str, list[str]] = {}
    headers: dict[str, list[str]] = {}
    order: list[str] = []
    for text in texts:
        current = None
        for line in text.splitlines():
            if line.startswith("# HELP"):
                current = line.split()[2]
                if current not in order:
                    order.append(current)
                    headers[current] = [line]
                    families[current] = []
            elif line.startswith("# TYPE"):
                if len(headers[current]) == 1:
                    headers[current].append(line)
            elif line:
                families[current].append(line)
    return "\n".join(line for name in order for line in headers[name] + families[name]) + "\n"


def test_successive_scrapes_make_a_window(loopback):
    texts = iter([service_metrics_text({7: {"requests": 10, "errors": {"predict": 1}}}),
                  service_metrics_text({7: {"requests": 25, "errors": {"predict": 4}}})])
    loopback.respond = lambda path, params: (200, "text/plain", next(texts))
    provider = ScrapeProvider(loopback.url + "/metrics")
    w = window(provider.snapshot(), provider.snapshot())
    assert (w.get(7).requests, w.get(7).errors) == (15, 3)


def test_http_error_fails_closed_with_one_line(loopback):
    loopback.respond = lambda path, params: (503, "text/plain", "busy\nreally")
    provider = ScrapeProvider(loopback.url + "/metrics")
    with pytest.raises(MetricsError) as exc:
        provider.snapshot()
    assert exc.value.diagnostics() == f"scrape {loopback.url}/metrics: HTTP 503"
    assert provider.is_online() is False


def test_garbage_and_bad_version_labels_fail_closed(loopback):
    loopback.respond = lambda path, params: (200, "text/plain", "promotion_requests_total{version=\"7\"} abc\n")
    with pytest.raises(MetricsError, match="not Prometheus text format"):
        ScrapeProvider(loopback.url + "/metrics").snapshot()
    loopback.respond = lambda path, params: (200, "text/plain", 'promotion_requests_total{version="canary"} 3\n')
    with pytest.raises(MetricsError, match="version label 'canary', expected an integer"):
        ScrapeProvider(loopback.url + "/metrics").snapshot()


def test_unreachable_endpoint_is_offline_and_snapshot_raises():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = ScrapeProvider(f"http://127.0.0.1:{port}/metrics", timeout_s=1)
    assert provider.is_online() is False
    with pytest.raises(MetricsError, match=rf"scrape http://127.0.0.1:{port}/metrics: ConnectionError"):
        provider.snapshot()


class _Env:
    name = "prod"
    display = "environments/prod.yaml"
    metrics_url = "http://127.0.0.1:9/metrics"
    metrics_selector = ""

    def __init__(self, source):
        self.metrics_source = source

    def line_of(self, *path):
        return 18


def test_registry_picks_by_source_and_refuses_unknown_ones():
    from promotion.metrics.prometheus import PrometheusProvider

    assert isinstance(provider_for(_Env("scrape")), ScrapeProvider)
    assert isinstance(provider_for(_Env("prometheus")), PrometheusProvider)
    with pytest.raises(ConfigError) as exc:
        provider_for(_Env("datadog"))
    assert exc.value.diagnostics() == ("environments/prod.yaml:18 metrics.source: unknown metrics source 'datadog' "
                                       "(known: prometheus, scrape)")
