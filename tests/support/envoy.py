"""A real Envoy in front of real ``bentoml serve`` replicas, for tests.

Usage::

    fleet = start_replicas(registry.uri, {1: digest1, 2: digest2}, count=2, root=tmp, token=TOKEN)
    settings = envoy_settings(tmp / "envoy", fleet.urls())       # a serving: block of kind envoy
    point_environment(repo, "prod", settings)                     # written into the file, committed
    proxy = start_envoy(Project(repo).environment("prod"), tmp / "envoy")
    ...
    proxy.stop(); fleet.stop()

The launchers (Envoy, the replicas, Prometheus) live in the package
(:mod:`promotion.topology`), shared with the scale-out demo, and are re-exported here;
this module adds what only tests need: committing a serving block, and counting the
versions that answered.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests
import yaml

from promotion.topology.envoy import EnvoyProcess, envoy_binary, envoy_settings, new_ports, start_envoy  # noqa: F401
from promotion.topology.prometheus import PrometheusProcess, start_prometheus  # noqa: F401
from promotion.topology.replicas import Fleet, start_replicas  # noqa: F401

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def point_environment(repo: Path, env: str, serving: dict, *, metrics: dict | None = None,
                      amend: bool = False) -> None:
    """Write ``serving`` (and ``metrics``) into ``environments/<env>.yaml`` and commit it
    (``amend``: as part of the repository's initial state)."""
    path = Path(repo) / "environments" / f"{env}.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["serving"] = serving
    if metrics is not None:
        doc["metrics"] = metrics
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rel = str(path.relative_to(repo))
    subprocess.run(["git", "add", rel], cwd=repo, check=True, capture_output=True)
    args = ["commit", "-q", "--amend", "--no-edit"] if amend else ["commit", "-q", "-m", f"serve {env} through envoy"]
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **IDENTITY})


def served_split(url: str, rows: list[dict], n: int, headers: dict | None = None) -> dict[int, int]:
    """Send ``n`` predictions through ``url``; answers per serving version, as a client sees them."""
    counts: dict[int, int] = {}
    with requests.Session() as s:
        for i in range(n):
            r = s.post(url + "/predict", json={"features": rows[i % len(rows)]}, headers=headers or {}, timeout=10)
            assert r.status_code == 200, (r.status_code, r.text[:200])
            v = int(r.json()["version"])
            counts[v] = counts.get(v, 0) + 1
    return counts


def rollout_evidence(repo: Path, env: str, *, envoy_admin: str | None = None,
                     replicas: dict[int, list[str]] | None = None, load=None, prometheus: str | None = None) -> str:
    """What to look at when a rollout through Envoy did not end as expected: the last
    events (with their times), what the clients saw, what Envoy sent to each cluster, what
    each replica counted itself and what Prometheus holds of it. An assertion message."""
    import json

    from promotion.rollout import StateStore

    lines = []
    events = StateStore(Path(repo), env).events_path
    if events.exists():
        lines += ["events:"] + [f"  {line[:400]}" for line in events.read_text().splitlines()[-14:]]
    if load is not None:
        lines.append(f"clients: {load.totals()}")

    def fetch(what, get):
        try:
            lines.append(f"{what}: {get()}")
        except Exception as exc:  # noqa: BLE001 - evidence is best effort
            lines.append(f"{what}: unavailable ({type(exc).__name__}: {exc})")

    if envoy_admin:
        fetch("envoy clusters", lambda: " ".join(
            line for line in requests.get(envoy_admin + "/stats", timeout=5).text.splitlines()
            if line.startswith("cluster.v") and any(k in line for k in (
                ".upstream_rq_total:", ".upstream_cx_connect_fail:", ".upstream_rq_timeout:", ".upstream_cx_total:",
                ".upstream_rq_pending_failure_eject:", ".upstream_cx_destroy_remote_with_active_rq:"))))
    for version, urls in sorted((replicas or {}).items()):
        for url in urls:
            fetch(f"replica v{version} {url} requests", lambda url=url: sum(
                float(line.rsplit(" ", 1)[1]) for line in requests.get(url + "/metrics", timeout=5).text.splitlines()
                if line.startswith("promotion_requests_total{")))
    if prometheus:
        # the scrapes of the last seconds (their times, whether they failed, how long they
        # took) and every request counter over them: what each snapshot could have read
        for promql in ("timestamp(up)", "sum by (instance, version) (promotion_requests_total)", "time()",
                       "up[12s]", "scrape_duration_seconds[12s]", "promotion_requests_total[12s]"):
            fetch(f"prometheus {promql}", lambda promql=promql: json.dumps(requests.get(
                prometheus + "/api/v1/query", params={"query": promql}, timeout=5).json().get("data", {}).get("result")))
    return "\n".join(lines)
