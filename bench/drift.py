"""Drift speed: the gate's PSI + KS on 1,000,000 rows x 30 features, side by side with evidently.

Data: a production window of 1,000,000 rows x 30 numeric features (a third of them
shifted) against a reference sample of 100,000 rows, generated with a fixed seed and
written to parquet so both tools read the very same frames.

Ours: ``promotion.gates.drift.feature_drift`` (PSI and KS for every feature, from
pandas columns, on this machine's cores). Evidently: ``Report([DataDriftPreset(
num_method="ks")])`` on the full data (same reference, same window, one statistical
test per column where ours computes two), run in a bench-only virtualenv
(``.bench-venv``, created here on first use) in a subprocess; the time is of
``report.run`` alone, after imports and parquet reads, like ours. If evidently does not
finish within ``--evidently-timeout`` seconds, the speedup printed is a lower bound
(stated in the output).

Ends with ``RESULT seconds=<ours> speedup_vs_evidently=<x>``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
VENV = ROOT / ".bench-venv"

EVIDENTLY_RUN = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref = pd.read_parquet(sys.argv[1]); cur = pd.read_parquet(sys.argv[2])
report = Report([DataDriftPreset(num_method="ks")])
t0 = time.perf_counter()
snap = report.run(current_data=cur, reference_data=ref)
print(json.dumps({"seconds": time.perf_counter() - t0}))
"""


def ensure_venv() -> Path:
    """The bench-only virtualenv with evidently, installed from its hashed lock.

    ``bench/requirements-evidently.txt`` pins evidently and everything it imports, with
    hashes (an unpinned evidently stopped importing once pandas 3 was released). The venv
    is rebuilt whenever that file changes: its sha256 is kept in the venv.
    """
    python = VENV / "bin" / "python"
    lock = ROOT / "bench" / "requirements-evidently.txt"
    want = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = VENV / ".requirements.sha256"
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    print("creating .bench-venv with evidently from bench/requirements-evidently.txt...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    uv = Path(sys.executable).with_name("uv")  # the project's locked uv (make install)
    if uv.exists():
        cmd = [str(uv), "pip", "sync", "--quiet", "--python", str(python), "--require-hashes", str(lock)]
    else:
        cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--require-hashes", "-r", str(lock)]
    subprocess.run(cmd, check=True)
    stamp.write_text(want + "\n")
    return python


def make_data(tmp: Path, rows: int, ref_rows: int, features: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(2024)
    cols = [f"f{i:02d}" for i in range(features)]

    def frame(n, shift):
        out = {}
        for i, c in enumerate(cols):
            moved = shift if i % 3 == 0 else 0.0
            kind = i % 4
            if kind == 0:
                out[c] = rng.normal(moved, 1.0, n)
            elif kind == 1:
                out[c] = rng.lognormal(1.0 + moved, 0.5, n)
            elif kind == 2:
                out[c] = rng.exponential(2.0 * (1 + moved), n)
            else:
                out[c] = rng.poisson(3 + 2 * moved, n).astype(float)  # discrete: ties
        return pd.DataFrame(out)

    ref, cur = frame(ref_rows, 0.0), frame(rows, 0.3)
    ref.to_parquet(tmp / "ref.parquet")
    cur.to_parquet(tmp / "cur.parquet")
    return ref, cur


def ours(ref, cur) -> tuple[float, object]:
    from promotion.gates.drift import feature_drift

    cols = list(ref.columns)
    feature_drift([ref[c].to_numpy()[:1000] for c in cols[:2]], [cur[c].to_numpy()[:1000] for c in cols[:2]])  # warm imports
    best, result = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        result = feature_drift([ref[c].to_numpy() for c in cols], [cur[c].to_numpy() for c in cols])
        best = min(best, time.perf_counter() - t0)
    return best, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reference-rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--evidently-timeout", type=float, default=600)
    args = parser.parse_args()

    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        tmp = Path(tmp)
        ref, cur = make_data(tmp, args.rows, args.reference_rows, args.features)
        seconds, result = ours(ref, cur)
        drifted = int(((result.psi >= 0.2) | (result.ks_p < 0.01)).sum())
        print(f"ours: {args.rows} rows x {args.features} features vs {args.reference_rows} reference rows: "
              f"{seconds:.3f} s (best of 3, {os.cpu_count()} cores), PSI+KS, {drifted} features drifted")
        lower_bound = False
        try:
            proc = subprocess.run([str(python), "-c", EVIDENTLY_RUN, str(tmp / "ref.parquet"), str(tmp / "cur.parquet")],
                                  capture_output=True, text=True, timeout=args.evidently_timeout)
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                raise SystemExit("evidently failed")
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]
        except subprocess.TimeoutExpired:
            theirs, lower_bound = args.evidently_timeout, True
        print(f"evidently DataDriftPreset(num_method='ks'), same data: {theirs:.3f} s"
              + (" (timed out: the speedup below is a lower bound)" if lower_bound else ""))
    speedup = theirs / seconds
    print(f"RESULT seconds={seconds:.3f} speedup_vs_evidently={speedup:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
