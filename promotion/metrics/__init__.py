"""Metrics providers: measure a running service, per model version.

One contract (:class:`~promotion.metrics.base.MetricsProvider`: ``snapshot()`` and
``is_online()``), one file per source, and an explicit registry that refuses a source
it does not know::

    from promotion.config import Project
    from promotion.metrics import provider_for
    from promotion.metrics.base import window

    env = Project.discover().environment("prod")
    provider = provider_for(env)      # metrics.source: scrape | prometheus
    a = provider.snapshot(); b = provider.snapshot()
    w = window(a, b)                  # per-version increase, reset-safe

Sources:

``scrape``      the service's own ``/metrics`` (``metrics.url``, default
                ``<endpoint>/metrics``); ``metrics.selector`` does not apply.
``prometheus``  a Prometheus server's HTTP API at ``metrics.url``, PromQL filtered by
                ``metrics.selector``.
"""

from __future__ import annotations

from importlib import import_module

from promotion.errors import ConfigError
from promotion.metrics.base import MetricsProvider, Snapshot, VersionCounters, Window, window

__all__ = ["MetricsProvider", "Snapshot", "VersionCounters", "Window", "window", "provider_for", "SOURCES", "PROVIDERS"]

# ``metrics.source`` -> "module:class"; the class has ``from_environment(env, timeout_s=)``.
# Imported only when named, so a source's client library is needed only where it is used.
PROVIDERS: dict[str, str] = {
    "prometheus": "promotion.metrics.prometheus:PrometheusProvider",
    "scrape": "promotion.metrics.scrape:ScrapeProvider",
}
SOURCES = tuple(sorted(PROVIDERS))


def provider_for(env, *, timeout_s: float = 5.0) -> MetricsProvider:
    """The provider named by ``env.metrics_source``; an unknown source is a ConfigError."""
    source = env.metrics_source
    target = PROVIDERS.get(source)
    if target is None:
        line = env.line_of("metrics", "source") if hasattr(env, "line_of") else 1
        raise ConfigError(f"{getattr(env, 'display', env.name)}:{line} metrics.source: "
                          f"unknown metrics source {source!r} (known: {', '.join(SOURCES)})")
    module, _, name = target.partition(":")
    return getattr(import_module(module), name).from_environment(env, timeout_s=timeout_s)
