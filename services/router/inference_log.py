"""A sampled log of served requests: features, score and label per model version.

Each worker appends JSON lines to ``<state>/inference/v<version>/<pid>.jsonl``; a file
that grows past ``max_bytes`` is rotated to ``<pid>.jsonl.1`` (one older file is kept),
so the log of each worker and version stays bounded. The drift gate reads it back as
the production window::

    from services.router.inference_log import read_inference_log
    window = read_inference_log(state_dir, version=2, limit=5000)   # newest rows
    window[["amount", "score"]].describe()

Each line: ``{"ts": …, "version": 2, "score": 0.013, "label": 0, "shadow": false,
"features": {"amount": 12.0, …}}``. Shadow predictions are logged under the shadow's
version with ``"shadow": true``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 8 << 20


def directory(state_dir: str | Path) -> Path:
    return Path(state_dir) / "inference"


class InferenceLog:
    """Per-worker writer; cheap to call on the request path (buffered, flushed in the background)."""

    def __init__(self, state_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES, pid: int | None = None) -> None:
        self.dir = directory(state_dir)
        self.max_bytes = max_bytes
        self.pid = pid or os.getpid()
        self._files: dict[int, Any] = {}
        self._sizes: dict[int, int] = {}  # bytes in each open file (tell() would flush the buffer)
        self._lock = threading.Lock()

    def _file(self, version: int):
        fh = self._files.get(version)
        if fh is None:
            d = self.dir / f"v{version}"
            d.mkdir(parents=True, exist_ok=True)
            fh = open(d / f"{self.pid}.jsonl", "ab", buffering=1 << 16)
            self._files[version] = fh
            self._sizes[version] = fh.tell()
        return fh

    def write(self, version: int, features: dict, score: float, label: int, shadow: bool = False) -> None:
        line = json.dumps({"ts": time.time(), "version": version, "score": score, "label": label,
                           "shadow": shadow, "features": features}, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            fh = self._file(version)
            fh.write(line)
            self._sizes[version] += len(line)
            if self._sizes[version] > self.max_bytes:
                self._rotate(version, fh)

    def _rotate(self, version: int, fh) -> None:
        fh.close()
        del self._files[version], self._sizes[version]
        path = self.dir / f"v{version}" / f"{self.pid}.jsonl"
        os.replace(path, path.with_name(path.name + ".1"))

    def flush(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.flush()

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()
            self._sizes.clear()


def read_inference_log(state_dir: str | Path, version: int | None = None, limit: int | None = None,
                       include_shadow: bool = True):
    """The logged requests as a DataFrame: one column per feature, then score, label,
    version, ts and shadow; oldest first. ``limit`` keeps the newest ``limit`` rows."""
    import pandas as pd

    base = directory(state_dir)
    dirs = [base / f"v{int(version)}"] if version is not None else sorted(base.glob("v*"))
    rows: list[dict[str, Any]] = []
    for d in dirs:
        for f in sorted(d.glob("*.jsonl*")) if d.is_dir() else ():
            try:
                text = f.read_text(encoding="utf-8")
            except OSError:
                continue
            for line in text.splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line being written right now
                if not include_shadow and rec.get("shadow"):
                    continue
                row = dict(rec.get("features") or {})
                row.update(score=rec.get("score"), label=rec.get("label"), version=rec.get("version"),
                           ts=rec.get("ts"), shadow=bool(rec.get("shadow", False)))
                rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["score", "label", "version", "ts", "shadow"])
    frame = pd.DataFrame(rows).sort_values("ts", kind="stable").reset_index(drop=True)
    if limit is not None:
        frame = frame.tail(int(limit)).reset_index(drop=True)
    return frame
