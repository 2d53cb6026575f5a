"""Persisted rollout state, the per-environment lock and the JSON-lines event log.

State is one JSON file per environment, replaced atomically after every tick, so a
killed rollout is resumed (or rolled back) by running it again. The lock is an
``flock`` held for the life of the controlling process: the kernel releases it when
the process dies, even by SIGKILL, so a crash never wedges the environment.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promotion._internal.atomic import atomic_write
from promotion._internal.paths import refuse_tracked_state, state_dir
from promotion.config import file_key
from promotion.errors import RolloutError
from promotion.rollout.phases import Phase


@dataclass
class RolloutState:
    """Everything the controller needs to resume: what moves where, and how far it got."""

    env: str
    model: str
    canary: int
    canary_digest: str
    champion: int | None
    champion_digest: str | None
    source_commit: str | None
    policy_digest: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    phase: Phase = Phase.PENDING
    step: int = -1
    weight: float = 0.0
    generation: int | None = None
    started_at: float = field(default_factory=time.time)
    step_started_at: float | None = None
    step_baseline: dict | None = None
    last_snapshot: dict | None = None
    window_after: float | None = None  # the step's window waits for counts from at least this (provider) time
    routes_applied: bool = False  # the phase's weights are applied and read back; until then nothing is judged
    failures: int = 0  # consecutive ticks that failed
    failing_since: float | None = None
    error: str | None = None  # why the last tick failed
    analysis: dict | None = None
    checks: list[dict] = field(default_factory=list)
    approvers: list[dict] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    timeline: list[dict] = field(default_factory=list)
    reason: str | None = None
    rollback_action: str = "rollback"  # "reject" when gates blocked before any traffic moved
    evidence: dict | None = None
    switch_seconds: float | None = None
    record_path: str | None = None
    commit: str | None = None
    hooks: list[dict] = field(default_factory=list)  # each lifecycle hook's result, in order
    paused_since: float | None = None  # a pause step began (clock time); cleared when it is left
    interventions: list[dict] = field(default_factory=list)  # operators' resume/abort: who, why, when
    probation: dict | None = None  # after 100%: since, promote record, baseline (promotion.rollout.probation)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phase"] = self.phase.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutState":
        d = dict(d)
        d["phase"] = Phase(d["phase"])
        return cls(**d)


class StateStore:
    """Where one environment's rollout state, lock, stop request and events live.

    Refuses (RolloutError) a state folder whose files git tracks: a rollout state
    committed to the repository would be resumed as if this controller had saved it.
    """

    def __init__(self, root: str | Path, env: str) -> None:
        refuse_tracked_state(root, RolloutError)
        self.dir = state_dir(root) / "rollouts"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env = env
        key = file_key(env)  # prod/<model>: one flat file name per model
        self.path = self.dir / f"{key}.json"
        self.lock_path = self.dir / f"{key}.lock"
        self.stop_path = self.dir / f"{key}.stop"
        self.events_path = self.dir / f"{key}.events.jsonl"
        self._lock_fd: int | None = None

    def load(self) -> RolloutState | None:
        try:
            return RolloutState.from_dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise RolloutError(f"{self.path}: unreadable rollout state ({exc}); inspect it, then remove it to start over") from None

    def save(self, st: RolloutState) -> None:
        try:
            atomic_write(self.path, json.dumps(st.to_dict(), indent=1, sort_keys=True, default=str))
        except OSError as exc:
            raise RolloutError(f"{self.path}: cannot save the rollout state ({exc.strerror or exc})") from None

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the environment's rollout lock or raise RolloutError naming the holder."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    raise RolloutError(f"a rollout of {self.env} is already running (pid {holder}); one at a time") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def request_stop(self, reason: str) -> None:
        atomic_write(self.stop_path, json.dumps({"reason": reason, "at": time.time(), "pid": os.getpid()}))

    def stop_requested(self) -> dict | None:
        try:
            return json.loads(self.stop_path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def clear_stop(self) -> None:
        self.stop_path.unlink(missing_ok=True)


class EventLog:
    """Append-only JSON lines: one event per line, flushed at once."""

    def __init__(self, path: str | Path, extra: Path | None = None) -> None:
        self.paths = [Path(path)] + ([Path(extra)] if extra else [])

    def emit(self, event: str, **fields: Any) -> dict:
        entry = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        for p in self.paths:
            try:
                with open(p, "a", encoding="utf-8") as fh:
                    fh.write(line)
            except OSError as exc:
                raise RolloutError(f"{p}: cannot append the event {event!r} ({exc.strerror or exc})") from None
        return entry
