"""The main job, as a newcomer runs it: `promotion demo` tells the whole story and ends well."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_cycle(tmp_path):
    ws = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMOTION_", "MLFLOW_", "GITHUB_"))}
    proc = subprocess.run([sys.executable, "-m", "promotion", "demo", "--workspace", str(ws)],
                          capture_output=True, text=True, timeout=900, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # the story, in order
    chapters = [m.group(1) for m in re.finditer(r"\] \d+\. (.+)", out)]
    assert chapters[1].startswith("Train three versions") and chapters[-1].startswith("The audit trail")
    assert "-> exit 1: blocked, as it must be without approvals" in out
    assert re.search(r"traffic   v1=95%, v2=5%", out) and re.search(r"traffic   v1=75%, v2=25%", out)
    assert "promoted  v2" in out
    assert re.search(r"ROLLBACK  latency regressed", out)
    assert "restored  v2" in out
    assert re.search(r"prod: served by version .*failed 0", out)
    # the audit trail is in the workspace's git history, and it verifies
    log = subprocess.run(["git", "log", "--format=%s"], cwd=ws, capture_output=True, text=True, check=True).stdout
    assert log.splitlines()[0].startswith("rollback prod: fraud-detector v3 -> v2")
    assert "promote prod: fraud-detector v2 (was v1)" in log
    audit = subprocess.run([sys.executable, "-m", "promotion", "--root", str(ws), "audit", "prod", "--json"],
                           capture_output=True, text=True, env={**env, "PROMOTION_STATE": str(ws / ".promotion")})
    assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr
    # the user's own checkout was not touched
    assert not (ws.parent / "environments").exists()
