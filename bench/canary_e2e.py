"""End to end: a canary that starts failing is rolled back, and no client notices the switch.

A real `bentoml serve` (2 workers) serves v1 (champion) and a canary at 5% under about
200 requests/s on loopback. The canary is a real model that needs a feature
(`session_risk`) the champion does not use. At first every client sends it; at time T
half of the clients stop sending it, so the canary starts failing half of its requests
(400, kind "input") while the champion keeps answering. `promotion rollout` runs as its
own process and is measured from T until every worker serves 100% champion traffic (the
router reports each worker's applied routing generation).

Printed: seconds from T to 100% champion on every worker, and client requests that
failed for any other reason than the canary's own input errors (lost to the switch).
Ends with `RESULT seconds_to_champion=<s> failed_requests=<n>`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = """apiVersion: promotion/v1
environment: prod
gates:
  lineage: {}
rollout:
  strategy: steps
  steps:
    - {weight: 5, hold_s: 600, min_requests: 100000, max_s: 900}
    - {weight: 100}
  interval_s: 0.2
slo:
  error_rate_max: 0.05
  latency_p95_ms_max: 100
  min_requests: 20
"""
TOKEN = "bench-token"


def main() -> int:
    from promotion._internal.envfile import set_model
    from promotion._internal.git import Git
    from promotion._internal.loadgen import Load
    from promotion.registry import Registry
    from services.fraud import data
    from services.router.process import free_port, start_service
    from tests.conftest import make_repo
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny

    work = Path(tempfile.mkdtemp(prefix="canary-e2e-"))
    os.environ.update({"PROMOTION_STATE": str(work / "state"), "PROMOTION_ADMIN_TOKEN": TOKEN,
                       "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
                       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"})
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    repo = make_repo(work / "repo")
    registry = Registry(root=repo)
    champion = register_tiny(registry)
    canary = register_extra_feature(registry)
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        registry.set_tag("fraud-detector", canary.version, key, "sha256:" + "0" * 64)
    port = free_port()
    routes = json.dumps({"routes": {str(champion.version): 100}, "digests": {str(champion.version): champion.digest}})
    service = start_service(port, work / "state" / "service", registry.uri, TOKEN, workers=2, initial_routes=routes)
    load = None
    try:
        env_file = repo / "environments" / "prod.yaml"
        env_file.write_text(env_file.read_text().replace("127.0.0.1:3000", f"127.0.0.1:{port}"))
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        set_model(env_file, champion.version, champion.digest)
        registry.set_alias("fraud-detector", "prod", champion.version)
        Git(repo).commit("prod runs v1", ["environments/prod.yaml", "policies/prod.yaml"])
        set_model(env_file, canary.version, canary.digest)
        Git(repo).commit(f"promote prod to v{canary.version}", ["environments/prod.yaml"])

        frame = data.generate(4000, seed=3)[list(data.FEATURES)]
        good = [dict(r, **{EXTRA_FEATURE: 0.5}) for r in frame.to_dict("records")]
        half = [dict(r) if i % 2 else dict(r, **{EXTRA_FEATURE: 0.5}) for i, r in enumerate(frame.to_dict("records"))]
        load = Load(service.url, good, rate=200, threads=6).start()
        events = work / "events.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "promotion", "--root", str(repo), "rollout", "prod",
                                 "--quiet", "--events", str(events)], env=os.environ.copy(), cwd=str(ROOT))
        # let the healthy canary serve at 5% for a while, then break half of its inputs
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lines = events.read_text().splitlines() if events.exists() else []
            if sum(1 for l in lines if '"observed"' in l) >= 10:
                break
            if proc.poll() is not None:
                raise SystemExit(f"rollout ended early with {proc.returncode}")
            time.sleep(0.1)
        before = load.totals()
        t_fail = time.time()
        load.set_rows(half)
        rc = proc.wait(timeout=120)
        time.sleep(1.0)
        after = load.totals()
    finally:
        if load:
            load.stop()
        service.stop()
    entries = [json.loads(l) for l in events.read_text().splitlines()]
    back = [e for e in entries if e["event"] == "routing" and e["ts"] >= t_fail
            and e["routes"] == {str(champion.version): 100.0}]
    started = [e for e in entries if e["event"] == "rollback_started"]
    if rc != 1 or not back or not started:
        print(f"rollout exit {rc}; events: {[e['event'] for e in entries][-8:]}")
        return 1
    seconds = back[0]["ts"] - t_fail
    lost = {k: v for k, v in after["failures"].items() if k != "400"}
    lost_n = sum(lost.values())
    canary_errors = after["failures"].get("400", 0) - before["failures"].get("400", 0)
    print(f"load: ~200 req/s, 6 clients, 2 workers; canary v{canary.version} at 5%, champion v{champion.version}")
    print(f"canary input errors after T (expected, the regression itself): {canary_errors}")
    print(f"decision: {started[0]['reason']}")
    print(f"T -> rollback decided: {started[0]['ts'] - t_fail:.3f} s; T -> 100% champion on every worker: {seconds:.3f} s "
          f"(apply {back[0]['applied_s'] * 1000:.0f} ms)")
    print(f"client requests served: {sum(after['served'].values())}; lost to the switch (not the canary's 400s): {lost_n} {lost or ''}")
    print(f"RESULT seconds_to_champion={seconds:.3f} failed_requests={lost_n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
