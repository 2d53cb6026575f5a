"""Per-worker heartbeat files: how a GET that reaches one worker can report on all of them.

Each worker writes ``<state>/workers/<pid>.json`` (pid, applied generation, loaded
versions, readiness, refusals, time, pid of its shadow process) when it applies a change and about once a second.
:func:`live` reads them back, skipping (and removing) files of processes that are gone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from services.router.routing import write_json_atomic

STALE_S = 15.0


def directory(state_dir: str | Path) -> Path:
    return Path(state_dir) / "workers"


def write(state_dir: str | Path, pid: int, generation: int, loaded: list[int], ready: bool,
          refused: dict[int, str], shadow_pid: int | None = None) -> None:
    write_json_atomic(directory(state_dir) / f"{pid}.json", {
        "pid": pid, "generation": generation, "loaded": [str(v) for v in sorted(loaded)],
        "ready": ready, "refused": {str(v): r for v, r in refused.items()}, "seen_at": time.time(),
        "shadow_pid": shadow_pid,
    }, durable=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live(state_dir: str | Path, stale_s: float = STALE_S) -> list[dict[str, Any]]:
    """Heartbeats of live workers, sorted by pid."""
    found = []
    now = time.time()
    d = directory(state_dir)
    if not d.is_dir():
        return []
    for f in d.glob("*.json"):
        try:
            beat = json.loads(f.read_text(encoding="utf-8"))
            pid = int(beat["pid"])
            seen_at = float(beat.get("seen_at", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            continue  # not a heartbeat (a worker writes them whole, atomically)
        if not _alive(pid):
            try:
                f.unlink()
            except OSError:
                pass
            continue
        if now - seen_at > stale_s:
            continue
        beat["pid"] = pid
        found.append(beat)
    return sorted(found, key=lambda b: b["pid"])


def remove(state_dir: str | Path, pid: int) -> None:
    try:
        (directory(state_dir) / f"{pid}.json").unlink()
    except OSError:
        pass
