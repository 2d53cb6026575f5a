"""The scale-out demo: the story of ``promotion demo`` on the parts a team runs beyond one host.

``promotion demo --topology envoy`` (``make demo-envoy``) tells the same story — v1
deployed, v2 promoted through gates and a staged canary, v3 rolled back by the prod
canary, the audit replayed from git — with:

- the registry as a team runs it: ``mlflow server`` on PostgreSQL 15, its artifacts in an
  S3 store (SeaweedFS), proxied by the server; the demo's own process holds only
  ``MLFLOW_TRACKING_URI`` (no database password, no S3 key), as a workflow does;
- prod behind a real Envoy: two replicas per version (``bentoml serve`` of the router,
  one worker each, each serving one version), the weights moved through Envoy's watched
  route file without a restart;
- a real Prometheus scraping every replica each second; the prod canary's analysis reads
  per-version counters summed over replicas through it;
- staging: one BentoML router on the same registry.

Every server is started on free loopback ports by :mod:`promotion.topology` and stopped
by its PID when the story ends, fails, or is interrupted (Ctrl-C, SIGTERM). The
database lives in a temp folder that is removed; the workspace (git history, records,
the servers' logs under ``.promotion/``) is kept.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from promotion.demo import Story, _cli, prepare_workspace, production_window, tell_story, train_versions

REPLICAS_PER_VERSION = 2
# Six replicas, Envoy, Prometheus, PostgreSQL, SeaweedFS and mlflow server share two cores.
# There v2 (300 trees, against v1's 80) answers a few ms later than v1 through Envoy: in
# the demo's rollout events its p95 was 7-12 ms against v1's 5 ms, and with the shipped
# 3 ms floor one run in five rolled it back for latency. prod here accepts up to 10 ms
# more for the better model; v3 (2,000 trees) is 17-25 ms slower and still rolls back.
PROD_LATENCY_FLOOR = "10               # ...and >= 10 ms above it (two shared cores: promotion/demo_envoy.py)"
RATES = (200, 60)  # req/s to prod (through Envoy) and staging: what two cores carry next to six replicas
SELECTOR = 'job="fraud"'
# what a client of the registry never holds (the server does): the demo runs as a workflow would
_STORE_SECRETS = ("MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME",
                  "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD")


def scale_out_story(story: Story, ws: Path, services: list, load: list) -> int:
    """The scale-out story; everything it starts is appended to ``services`` at once (the
    caller stops them in reverse order), the load generators to ``load``."""
    from promotion.config import Project
    from promotion.registry import Registry
    from promotion.topology.envoy import envoy_settings, start_envoy
    from promotion.topology.prometheus import start_prometheus
    from promotion.topology.replicas import Router, start_replicas
    from promotion.topology.stores import start_registry_stack

    for var in [v for v in os.environ if v.startswith("AWS_")] + list(_STORE_SECRETS):
        os.environ.pop(var, None)
    token = os.environ["PROMOTION_ADMIN_TOKEN"]
    state = ws / ".promotion"

    story.chapter("Start the registry: PostgreSQL 15, an S3 store (SeaweedFS) and mlflow server")
    stack = start_registry_stack(state / "stack")
    services.append(stack)
    os.environ["MLFLOW_TRACKING_URI"] = stack.tracking_uri
    pg = stack.postgres
    story.say(f"postgres      pid {pg.proc.pid:<7} 127.0.0.1:{pg.port}, database {pg.database} "
              f"(runs as {'postgres' if os.geteuid() == 0 else 'you'}, data in a temp folder)\n"
              f"seaweedfs     pid {stack.s3.proc.pid:<7} S3 at {stack.s3.endpoint}, bucket {stack.s3.bucket}\n"
              f"mlflow server pid {stack.mlflow.pid:<7} {stack.tracking_uri} "
              f"(backend postgresql+psycopg2://{pg.user}:***@127.0.0.1:{pg.port}/{pg.database}, "
              f"artifacts {stack.artifacts_destination})\n"
              f"up in {sum(stack.startup_s.values()):.1f}s; only mlflow server holds the database password "
              "and the S3 keys")

    window = ws / "data" / "production-window.parquet"
    production = production_window(window)
    story.chapter("Train three versions and register them in MLflow (PostgreSQL, artifacts in S3)")
    registry = Registry.for_root(ws)
    versions = train_versions(story, registry)
    story.say(f"registry: {registry.uri} (from $MLFLOW_TRACKING_URI)")
    story.say(f"artifacts: {len(stack.s3.keys())} objects in s3://{stack.s3.bucket}/")

    story.chapter(f"Start prod: {REPLICAS_PER_VERSION} replicas per version behind Envoy, Prometheus scraping "
                  "each; staging: one router")
    staging = Router(state / "service" / "staging", stack.tracking_uri, token, {"workers": 1}).start()
    services.append(staging)  # stopped whichever process it runs by then
    digests = {mv.version: mv.digest for mv in versions.values()}
    fleet = start_replicas(stack.tracking_uri, digests, count=REPLICAS_PER_VERSION, root=state / "replicas",
                           token=token)
    services.append(fleet)
    staging = staging.wait(timeout_s=120, ready=False)
    for version, replicas in fleet.replicas.items():
        story.say(f"v{version} replicas   " + "  ".join(f"{r.url} (pid {r.pid})" for r in replicas))
    prom = start_prometheus(fleet.targets(), state / "prometheus")
    services.append(prom)
    story.say(f"prometheus    pid {prom.pid:<7} {prom.url}, scraping {len(fleet.targets())} replicas each second "
              f"as {SELECTOR}")
    settings = envoy_settings(state / "envoy", fleet.urls())
    prepare_workspace(ws, {"staging": int(urlsplit(staging.url).port)}, window, blocks={"prod": {
        "serving": settings, "metrics": {"source": "prometheus", "url": prom.url, "selector": SELECTOR}}},
        analysis={"prod": {"latency_min_added_ms": PROD_LATENCY_FLOOR}})
    envoy = start_envoy(Project(ws).environment("prod"), state / "envoy")
    services.append(envoy)
    story.say(f"envoy         pid {envoy.pid:<7} listener {envoy.url}, admin {envoy.admin}; weights move through "
              f"{settings['route_file']} (watched, never a restart)\n"
              f"staging       pid {staging.pid:<7} {staging.url} (BentoML router, 1 worker)\n"
              "environments/prod.yaml: serving.kind envoy with these replicas, metrics from this Prometheus")

    rows = production[list(_features())].head(4000).to_dict("records")
    if tell_story(story, ws, versions, rows, load, {"staging": staging.url, "prod": envoy.url}, RATES) != 0:
        return 1

    story.chapter("Where prod's traffic is now: what Envoy applies and what it serves")
    if not _show_traffic(story, ws, envoy, rows, versions["v2"].version):
        return 1

    story.chapter("The registry's own stores, read directly: PostgreSQL rows and S3 objects")
    if not _show_stores(story, ws, stack, registry, versions["v2"]):
        return 1

    story.chapter("The audit trail, replayed from git with every signature and chain link verified")
    return 0 if _cli("audit", "prod") == 0 else 1


def _features() -> tuple[str, ...]:
    import importlib

    from promotion.demo import EXAMPLE

    return tuple(importlib.import_module(EXAMPLE + ".data").FEATURES)


def _show_traffic(story: Story, ws: Path, envoy, rows: list[dict], want: int) -> bool:
    """Envoy's applied split (admin ``/config_dump``) and the versions that answer through it."""
    import requests

    from promotion.config import Project
    from promotion.traffic import backend_for

    live = backend_for(Project(ws).environment("prod")).current()
    split = ", ".join(f"v{v}={w:g}%" for v, w in sorted(live.weights.items()))
    story.say(f"envoy applies route version {live.generation}: {split}")
    served: dict[int, int] = {}
    with requests.Session() as s:
        for i in range(200):
            headers = {"X-Canary": "always"} if i % 4 == 0 else {}  # the tester's header reaches no canary now
            r = s.post(envoy.url + "/predict", json={"features": rows[i % len(rows)]}, headers=headers, timeout=10)
            v = int(r.json()["version"]) if r.status_code == 200 else -r.status_code
            served[v] = served.get(v, 0) + 1
        pattern = r"^cluster\.v[0-9]+\.upstream_rq_(2xx|5xx|retry)$"
        stats = s.get(envoy.admin + "/stats", params={"format": "json", "filter": pattern}, timeout=10).json()
    story.say("200 requests through envoy (50 with X-Canary: always): "
              + ", ".join(f"v{v} x{n}" if v > 0 else f"HTTP {-v} x{n}" for v, n in sorted(served.items())))
    counts = {x["name"]: x.get("value", 0) for x in stats.get("stats", [])}
    clusters = sorted({name.split(".")[1] for name in counts}, key=lambda c: int(c[1:]))
    story.say("envoy's own counters per cluster: " + "; ".join(
        f"{c} " + " ".join(f"{k}={counts.get(f'cluster.{c}.upstream_rq_{k}', 0)}" for k in ("2xx", "5xx", "retry"))
        for c in clusters))
    return live.weights == {want: 100.0} and served == {want: 200}


def _show_stores(story: Story, ws: Path, stack, registry, champion) -> bool:
    """Model versions and aliases as PostgreSQL holds them; the champion's files as S3 holds
    them, hashed to the digest in git."""
    from promotion._internal.digest import tree_digest
    from promotion.config import Project

    name = champion.name
    rows = stack.postgres.query("SELECT version FROM model_versions WHERE name = %s ORDER BY version", name)
    story.say(f"postgres model_versions: {name} " + ", ".join(f"v{v}" for (v,) in rows))
    aliases = stack.postgres.query(
        "SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias", name)
    story.say("postgres registered_model_aliases: " + ", ".join(f"{a}=v{v}" for a, v in aliases))
    location = registry.artifact_uri(f"models:/{name}/{champion.version}", f"model {name} v{champion.version}")
    prefix = stack.object_prefix(location)
    with tempfile.TemporaryDirectory() as tmp:
        keys = stack.s3.download(prefix, tmp)
        digest = tree_digest(tmp)
    in_git = Project(ws).environment("prod").model.digest
    story.say(f"s3 s3://{stack.s3.bucket}/{prefix}: {len(keys)} objects of v{champion.version}, hashing to {digest}")
    agree = digest == in_git == champion.digest
    story.say("= model.digest in environments/prod.yaml" if agree else f"!= model.digest in git ({in_git})")
    return agree and dict(aliases).get("prod") == champion.version
