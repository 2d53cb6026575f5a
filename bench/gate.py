"""Gate speed: a full ``promotion gate prod`` on the example models, and ``promotion --help``.

Sets up a scratch promotion repository (this project's environments/ and policies/) with
the embedded registry (sqlite + local artifact root in a scratch state folder), trains
and registers the example models v1 and v2 (not timed), makes v1 the prod champion and
proposes v2 with a 5,000-row production window and two local approvals. Then times, as a
user would run them, fresh processes of ``promotion gate prod`` (every gate of the prod
policy: metrics, drift with both models scoring the window, fairness, schema, lineage with
the artifact digest recomputed, promotion path, approvals) and ``promotion --help``.

Ends with ``RESULT gate_seconds=<s> help_seconds=<s>``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        tmp = Path(tmp)
        repo, state = tmp / "repo", tmp / "state"
        shutil.copytree(ROOT / "environments", repo / "environments", ignore=shutil.ignore_patterns("records", "trust.yaml"))
        shutil.copytree(ROOT / "policies", repo / "policies")
        os.environ["PROMOTION_STATE"] = str(state)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        for var in ("GITHUB_ACTIONS", "GITHUB_TOKEN", "GITHUB_EVENT_PATH"):
            os.environ.pop(var, None)

        from promotion.github.approvals import record_local
        from promotion.registry import Registry
        from services.fraud import data, train

        print("registering example models v1 and v2 (not timed)...", flush=True)
        reg = Registry(root=repo)
        train.register(reg, train.SPECS["v1"])
        v2 = train.register(reg, train.SPECS["v2"])
        reg.set_alias("fraud-detector", "prod", 1)
        data.generate(5000, seed=11).to_parquet(repo / "window.parquet")
        env_file = repo / "environments" / "prod.yaml"
        text = env_file.read_text()
        text = re.sub(r"version: \d+", f"version: {v2.version}", text, count=1)
        text = re.sub(r"digest: sha256:[0-9a-f]{64}", f"digest: {v2.digest}", text, count=1)
        env_file.write_text(text + "\ndrift:\n  production_window: window.parquet\n")
        for who in ("bob", "carol"):
            record_local(state, "prod", v2.version, v2.digest, who)

        promotion = [sys.executable, "-m", "promotion"]
        env = dict(os.environ, PROMOTION_STATE=str(state))
        gate_s, proc = timed([*promotion, "--root", str(repo), "gate", "prod"], env, repo)
        print(proc.stdout)
        if proc.returncode not in (0, 1):
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"promotion gate prod failed with exit {proc.returncode}")
        help_s = min(timed([*promotion, "--help"], env, repo)[0] for _ in range(3))
    print(f"promotion gate prod (fresh process, exit {proc.returncode}): {gate_s:.2f} s; promotion --help: {help_s:.3f} s")
    print(f"RESULT gate_seconds={gate_s:.2f} help_seconds={help_s:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
