"""Direct scrape of the service's own ``/metrics`` (the embedded default).

No Prometheus server is needed: each :meth:`ScrapeProvider.snapshot` reads the
service's cumulative counters (BentoML aggregates its workers at ``GET /metrics``),
and the analysis works on the difference between successive snapshots::

    from promotion.metrics.scrape import ScrapeProvider
    provider = ScrapeProvider("http://127.0.0.1:3000/metrics")
    snap = provider.snapshot()          # Snapshot(taken_at, {version: VersionCounters})
"""

from __future__ import annotations

import time

from promotion.errors import MetricsError
from promotion.metrics.base import Snapshot, counters_from_samples


class ScrapeProvider:
    """Reads the Prometheus text exposition at ``url``."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, session=None) -> None:
        import requests

        self.url = url
        self.timeout_s = timeout_s
        self._session = session or requests.Session()

    @classmethod
    def from_environment(cls, env, *, timeout_s: float = 5.0) -> "ScrapeProvider":
        """The provider of an environment file's ``metrics`` block (``url``, default
        ``<serving.endpoint>/metrics``)."""
        return cls(env.metrics_url, timeout_s=timeout_s)

    def _fetch(self) -> str:
        import requests

        try:
            response = self._session.get(self.url, timeout=self.timeout_s, headers={"Accept": "text/plain"})
        except requests.Timeout:
            raise MetricsError(f"scrape {self.url}: no answer within {self.timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise MetricsError(f"scrape {self.url}: {type(exc).__name__}: {_first_line(exc)}") from exc
        if response.status_code != 200:
            raise MetricsError(f"scrape {self.url}: HTTP {response.status_code}")
        return response.text

    def now(self) -> float:
        """This machine's time: every later snapshot reads counts from after it."""
        return time.time()

    def snapshot(self) -> Snapshot:
        from prometheus_client.parser import text_string_to_metric_families

        taken_at = time.time()
        text = self._fetch()
        try:
            samples = [(s.name, s.labels, s.value) for fam in text_string_to_metric_families(text) for s in fam.samples]
        except Exception as exc:  # the parser raises ValueError, TypeError, IndexError...
            raise MetricsError(f"scrape {self.url}: not Prometheus text format ({_first_line(exc)})") from exc
        return Snapshot(taken_at, counters_from_samples(samples, f"scrape {self.url}"))

    def is_online(self) -> bool:
        try:
            self._fetch()
        except MetricsError:
            return False
        return True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
