"""The scale-out demo, as a newcomer runs it: `promotion demo --topology envoy`.

The same story as `promotion demo` (v2 promoted, v3 rolled back) with prod behind a real
Envoy (two `bentoml serve` replicas per version), MLflow on PostgreSQL with its artifacts
in S3, and Prometheus. What an operator notices: the exit code, the story it prints
(read from PostgreSQL, S3 and Envoy's admin interface while they run), the records and
commits left in the workspace, and that no process it started outlives it, whether it
ends or is stopped.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
import yaml

from promotion.records import RecordStore

pytestmark = pytest.mark.integration
SERVERS = {"postgres", "weed", "mlflow", "bentoml", "prometheus", "envoy"}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PROMOTION_", "MLFLOW_", "GITHUB_", "AWS_"))}


class Watch:
    """Every descendant of the demo's process, collected while it runs (psutil handles:
    a reused PID is not mistaken for one of them)."""

    def __init__(self, pid: int) -> None:
        self.root, self.seen = psutil.Process(pid), {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE:
            try:
                for child in self.root.children(recursive=True):
                    # named again on every look: a child seen between fork and exec carries
                    # the demo's own command line (and could not be read at all a moment before)
                    known = self.seen.get(child.pid)
                    name = _name(child)
                    if known is None or name != "?":
                        self.seen[child.pid] = (known[0] if known else child, name)
            except psutil.Error:
                pass
            time.sleep(0.2)

    def names(self) -> set[str]:
        return {name for _, name in self.seen.values()}

    def left_running(self) -> list[str]:
        self._thread.join(timeout=5)
        return [f"{p.pid} {name}" for p, name in self.seen.values()
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _name(proc: psutil.Process) -> str:
    try:
        words = " ".join(proc.cmdline()).replace("/", " ").split()
    except psutil.Error:
        return "?"
    return next((s for w in words for s in SERVERS if w == s or w.startswith(s + "-")), words[0] if words else "?")


def test_scale_out_demo_promotes_v2_rolls_back_v3_and_leaves_nothing_running(tmp_path):
    ws = tmp_path / "demo"
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "promotion", "demo", "--topology", "envoy", "--workspace", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env())
    watch = Watch(proc.pid)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
    took = time.monotonic() - start
    print(f"\npromotion demo --topology envoy: exit {proc.returncode} in {took:.0f}s")
    assert proc.returncode == 0, out[-5000:]

    # the story, in order, on the scale-out parts
    chapters = [m.group(1) for m in re.finditer(r"\] \d+\. (.+)", out)]
    assert chapters[1].startswith("Start the registry: PostgreSQL 15, an S3 store (SeaweedFS) and mlflow server")
    assert chapters[-1].startswith("The audit trail")
    assert re.search(r"mlflow server pid \d+ +http://127\.0\.0\.1:\d+ \(backend postgresql\+psycopg2://mlflow:\*\*\*@"
                     r"127\.0\.0\.1:\d+/mlflow, artifacts s3://models/mlartifacts\)", out), out[:3000]
    assert re.search(r"registry: http://127\.0\.0\.1:\d+ \(from \$MLFLOW_TRACKING_URI\)", out)
    for v in (1, 2, 3):
        assert re.search(rf"v{v} replicas +http://127\.0\.0\.1:\d+ \(pid \d+\) +http://127\.0\.0\.1:\d+ \(pid \d+\)\n",
                         out), out[:4000]
    assert "-> exit 1: blocked, as it must be without approvals" in out
    assert re.search(r"traffic   v1=95%, v2=5%", out) and re.search(r"traffic   v1=75%, v2=25%", out)
    assert "promoted  v2" in out
    assert re.search(r"ROLLBACK  latency regressed", out) and "restored  v2" in out
    totals = re.search(r"prod: served by version .*", out)
    assert totals and totals.group(0).endswith("failed 0"), (totals and totals.group(0), out[-1500:])
    # read while the servers ran: Envoy's applied split and what answers through it ...
    assert re.search(r"envoy applies route version \d+: v2=100%\n", out)
    assert "200 requests through envoy (50 with X-Canary: always): v2 x200\n" in out
    # ... the registry's rows in PostgreSQL, and the champion's bytes in S3 hashing to git's digest
    assert "postgres model_versions: fraud-detector v1, v2, v3\n" in out
    assert re.search(r"postgres registered_model_aliases: .*\bprod=v2\b", out)
    s3 = re.search(r"s3 s3://models/mlartifacts/\S+: (\d+) objects of v2, hashing to (sha256:[0-9a-f]{64})\n"
                   r" += model\.digest in environments/prod\.yaml", out)
    assert s3 and int(s3.group(1)) >= 2, out[-3000:]
    assert "ok: every record verifies, the chain is intact and every change is explained" in out

    # the workspace: prod is served through Envoy, two replicas per version; records and commits
    prod = yaml.safe_load((ws / "environments" / "prod.yaml").read_text())
    assert prod["serving"]["kind"] == "envoy" and prod["metrics"]["source"] == "prometheus"
    assert {v: len(urls) for v, urls in prod["serving"]["replicas"].items()} == {"1": 2, "2": 2, "3": 2}
    assert prod["model"]["version"] == 2 and prod["model"]["digest"] == s3.group(2)
    records = RecordStore(ws, "prod").records()
    assert [(r.action, r.version) for r in records] == [("promote", 1), ("promote", 2), ("rollback", 2)]
    assert [s["weight"] for s in records[1].predicate["steps"]] == [5.0, 25.0, 100.0]
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0].startswith("rollback prod: fraud-detector v3 -> v2")
    assert "promote prod: fraud-detector v2 (was v1)" in log

    # every process it started is gone; and it did start each kind of server
    assert SERVERS <= watch.names(), watch.names()
    assert not watch.left_running()
    assert took < 600, f"the scale-out demo took {took:.0f}s"


def test_a_stopped_scale_out_demo_stops_every_server_it_started(tmp_path):
    """SIGTERM to the demo alone (a CI timeout, `kill PID`) once its registry is up: the
    servers it started, which the signal never reached, are stopped too."""
    ws = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "promotion", "demo", "--topology", "envoy", "--workspace", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_clean_env(),
                            start_new_session=True)  # the servers never see a terminal's signal
    watch = Watch(proc.pid)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if re.search(r"3\. Train three versions", line):
                break
        assert {"postgres", "weed", "mlflow"} <= watch.names(), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    out = "".join(lines) + rest
    assert proc.returncode == 130, out[-3000:]
    assert f"workspace kept at {ws}" in out
    assert not watch.left_running()
