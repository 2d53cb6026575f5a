"""The sampled inference log: one JSON line per served (or shadow-scored) row.

Each worker appends to ``<state>/inference/v<version>/<pid>.jsonl``; a file that grows
past ``max_bytes`` is rotated to ``<pid>.jsonl.1`` (one older file is kept), so the log of
each worker and version stays bounded. The drift gate reads it back as the production
window::

    from promotion.contract.inference_log import read_inference_log
    window = read_inference_log(state_dir, version=2, limit=5000)   # newest rows
    window[["amount", "merchant", "score"]].describe(include="all")

Each line (:func:`row`)::

    {"ts": 1733.2, "version": 2, "prediction": 1, "score": 0.93, "label": 1, "shadow": false,
     "features": {"amount": 12.0, "merchant": "grocery", "hour": 3},
     "request_id": "9f1c…", "segment": "online"}

- ``features``: the row's input columns by name, as the model's signature names them.
  Numbers stay numbers; every other value (strings, categories, booleans, dates) is kept
  as a string; a missing optional value or a non-finite number is ``null``.
- ``prediction``: what the model predicted for the row (a class label or a value).
- ``score``: the positive class's probability for binary classifiers, else ``null``.
- ``label``: the predicted class for classifiers (equal to ``prediction``), else ``null``.
- ``shadow``: true for a shadow version's prediction (logged under the shadow's version).
- ``request_id``: the row's id as the service returned it (:mod:`promotion.contract.feedback`),
  the key labels join on; absent in rows written before request ids existed.
- ``segment``: the segment column's value (``PROMOTION_SEGMENT_COLUMN``) as a string, only
  when the service is told the segment column.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_MAX_BYTES = 8 << 20
FIELDS = ("ts", "version", "prediction", "score", "label", "shadow", "features", "request_id", "segment")
# columns read_inference_log adds beside the features (and ``segment`` when rows carry one)
META_COLUMNS = ("prediction", "score", "label", "version", "ts", "shadow", "request_id")


def directory(state_dir: str | Path) -> Path:
    return Path(state_dir) / "inference"


def feature_value(value: Any) -> Any:
    """A feature as the log keeps it: numbers as numbers, anything else as a string."""
    t = type(value)
    if t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else None
    if value is None:
        return None
    if isinstance(value, float):  # numpy's float64 is a float
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # other numpy scalars
        value = value.item()
        if type(value) in (int, float):
            return feature_value(value)
    return str(value)


def row(version: int, features: dict, score: float | None, label: Any = None, shadow: bool = False,
        prediction: Any = None, ts: float | None = None, request_id: str | None = None,
        segment: Any = None) -> dict[str, Any]:
    """One log line's content; ``prediction`` defaults to ``label``."""
    out = {"ts": time.time() if ts is None else ts, "version": version,
           "prediction": label if prediction is None else prediction, "score": score, "label": label,
           "shadow": shadow, "features": {str(k): feature_value(v) for k, v in features.items()}}
    if request_id is not None:
        out["request_id"] = request_id
    if segment is not None:
        out["segment"] = str(segment)
    return out


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

    def write(self, version: int, features: dict, score: float | None = None, label: Any = None,
              shadow: bool = False, prediction: Any = None, request_id: str | None = None,
              segment: Any = None) -> None:
        """Append one row (see :func:`row`)."""
        line = json.dumps(row(version, features, score, label, shadow, prediction, request_id=request_id,
                              segment=segment), separators=(",", ":"), default=str).encode() + b"\n"
        with self._lock:
            fh = self._file(version)
            fh.write(line)
            self._sizes[version] += len(line)
            if self._sizes[version] > self.max_bytes:
                self._rotate(version, fh)

    def write_sampled(self, version: int, columns: dict[str, list], predictions: list, scores: list | None,
                      labels: list | None, sample: float, shadow: bool = False,
                      request_ids: list[str] | None = None, segments: list | None = None) -> None:
        """Append each row of a scored batch with probability ``sample`` (drawn row by row)."""
        import random

        for i in range(len(predictions)):
            if random.random() < sample:
                self.write(version, {k: col[i] for k, col in columns.items()},
                           scores[i] if scores is not None else None, labels[i] if labels is not None else None,
                           shadow=shadow, prediction=predictions[i],
                           request_id=request_ids[i] if request_ids is not None else None,
                           segment=segments[i] if segments is not None else None)

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
    """The logged rows as a DataFrame: one column per feature, then prediction, score,
    label, version, ts and shadow; oldest first. ``limit`` keeps the newest ``limit`` rows."""
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
                if not isinstance(rec, dict) or (not include_shadow and rec.get("shadow")):
                    continue
                flat = dict(rec.get("features") or {})
                flat.update(prediction=rec.get("prediction", rec.get("label")), score=rec.get("score"),
                            label=rec.get("label"), version=rec.get("version"), ts=rec.get("ts"),
                            shadow=bool(rec.get("shadow", False)), request_id=rec.get("request_id"))
                if rec.get("segment") is not None and "segment" not in flat:  # a feature of that name wins
                    flat["segment"] = rec["segment"]
                rows.append(flat)
    if not rows:
        return pd.DataFrame(columns=list(META_COLUMNS))
    frame = pd.DataFrame(rows).sort_values("ts", kind="stable").reset_index(drop=True)
    if limit is not None:
        frame = frame.tail(int(limit)).reset_index(drop=True)
    return frame
