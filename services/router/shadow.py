"""Shadow mirroring in a separate, lowest-priority process per serving worker.

The served path only writes one small frame to a pipe: a non-blocking ``os.write`` of
less than ``PIPE_BUF`` bytes, which the kernel makes all-or-nothing. When the pipe is
full (the shadow is behind) the mirror is dropped and counted
(``promotion_shadow_dropped_total``); the response never waits for the shadow.

The shadow process (``python -m services.router.shadow <state_dir> <sample>``) runs under
``SCHED_IDLE`` (``nice 19`` where that is refused), so it gets a core only when serving
does not need one, and it has its own interpreter, so it never holds the serving
worker's GIL. It reads frames in batches, predicts each batch in one call, and records
the shadow's latency, whether its label agrees with the served one, and (sampled) its
prediction in the inference log with ``"shadow": true``. Its metrics go to the same
Prometheus multiprocess directory as the workers', so ``/metrics`` shows them.

Models reach the shadow process as files: the worker exports every version it has
verified and loaded to ``<state>/shadow-models/<key>.ubj`` plus ``<key>.json`` (version,
digest, threshold, features, sha256 of the exported bytes); the process loads a key on
first use and checks the bytes against that sha256. A frame names the key, so a change of
shadow version needs no message of its own.

Frame: 4-byte little-endian length, then ``marshal`` of ``(key, values, served_label)``
where ``values`` are the request's values of the shadow's features, in its order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import marshal
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from promotion._internal.atomic import atomic_write

log = logging.getLogger("bentoml.promotion_router")

HEADER = struct.Struct("<I")
MAX_FRAME = select.PIPE_BUF  # larger writes to a pipe are not atomic
PIPE_SIZE = 1 << 20          # about 6,000 mirrored requests of 10 features
# After reading, the process pauses this long before draining the pipe: rows that arrive
# meanwhile share one predict call (xgboost's per-call overhead is Python). Adds at most
# this much to the shadow's lag, never to the served path.
PAUSE_S = 0.05
BATCH = 256
FLUSH_S = 1.0
REPO_ROOT = Path(__file__).resolve().parents[2]


def models_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "shadow-models"


def export(state_dir: str | Path, model) -> None:
    """Write a verified, loaded model where shadow processes load it (once per key)."""
    d = models_dir(state_dir)
    meta_path = d / f"{model.key}.json"
    if meta_path.exists():
        return
    raw = bytes(model.booster.save_raw("ubj"))
    atomic_write(d / f"{model.key}.ubj", raw)
    atomic_write(meta_path, json.dumps({
        "version": model.version, "digest": model.digest, "threshold": model.threshold,
        "features": list(model.features), "sha256": hashlib.sha256(raw).hexdigest(),
    }, sort_keys=True))


class ShadowMirror:
    """The worker's side: owns one shadow process and hands it mirrored requests."""

    def __init__(self, state_dir: str | Path, metrics, sample: float) -> None:
        self.state_dir = Path(state_dir)
        self.metrics = metrics
        self.sample = sample
        self.dropped = 0
        self._proc: subprocess.Popen | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- lifecycle (worker threads) ------------------------------------------------------

    def ensure_running(self) -> None:
        """Start the shadow process, or restart it if it died (called by the watcher thread).

        The new process is spawned outside the lock; only the swap of pipe ends happens
        under it, so a request offering meanwhile waits for a few instructions, not a fork.
        """
        with self._lock:
            if self._stopped or (self._proc is not None and self._proc.poll() is None):
                return
            if self._proc is not None:
                log.warning("shadow process %s exited with %s; restarting it", self._proc.pid, self._proc.returncode)
        r, w = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # capped by /proc/sys/fs/pipe-max-size: the default 64 KiB still works
            pass
        os.set_blocking(w, False)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "services.router.shadow", str(self.state_dir), repr(self.sample)],
                stdin=r, env=env, cwd=str(REPO_ROOT), close_fds=True)
        except BaseException:
            os.close(w)
            raise
        finally:
            os.close(r)
        _lower_priority(proc.pid)  # from its first instruction, imports included
        with self._lock:
            if self._stopped:  # stopped while spawning: this process is not wanted
                os.close(w)
                proc.kill()
                proc.wait(timeout=5)
                return
            self._close_fd()
            self._proc, self._fd = proc, w

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def stop(self, timeout_s: float = 2.0) -> None:
        """Close the pipe (the process drains it and exits), then reap the process."""
        with self._lock:
            self._stopped = True
            self._close_fd()
            proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def _close_fd(self) -> None:
        # under self._lock: a descriptor number is reused as soon as it is closed, and a
        # request still holding the old number must not write a frame into whatever got it
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    # -- request path ----------------------------------------------------------------------

    def offer(self, model, features: dict, served_label: int) -> None:
        """Mirror one request to ``model``; never blocks (the lock is only held for a write)."""
        m = self.metrics
        try:
            payload = marshal.dumps((model.key, tuple(features.get(n) for n in model.features), served_label))
        except ValueError:  # a value marshal cannot carry: the shadow cannot score this request
            m.child(m.errors, str(model.version), "shadow").inc()
            return
        if len(payload) + HEADER.size > MAX_FRAME:
            m.child(m.errors, str(model.version), "shadow").inc()  # too large to hand over atomically
            return
        frame = HEADER.pack(len(payload)) + payload
        with self._lock:
            fd = self._fd
            if fd is not None:
                try:
                    os.write(fd, frame)
                    return
                except OSError:  # full (BlockingIOError: the shadow is behind) or gone (EPIPE)
                    pass
        self._drop(model)

    def _drop(self, model) -> None:
        self.dropped += 1
        self.metrics.child(self.metrics.shadow_dropped, str(model.version)).inc()


# -- the shadow process -------------------------------------------------------------------

def _lower_priority(pid: int = 0) -> None:
    """SCHED_IDLE for ``pid`` (0: this process), or the lowest nice value where that is refused."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, pid, 19)
        except OSError:
            pass


class _ShadowModel:
    def __init__(self, version: int, booster: Any, threshold: float, features: tuple[str, ...]) -> None:
        self.version = version
        self.booster = booster
        self.threshold = threshold
        self.features = features


class ShadowProcess:
    """Reads frames, scores them in batches, records metrics and the inference log."""

    def __init__(self, state_dir: str | Path, sample: float, metrics, inference_log) -> None:
        self.dir = models_dir(state_dir)
        self.sample = sample
        self.metrics = metrics
        self.inference_log = inference_log
        self.models: dict[str, _ShadowModel | None] = {}

    def model(self, key: str) -> _ShadowModel | None:
        if key not in self.models:
            self.models[key] = self._load(key)
        return self.models[key]

    def _load(self, key: str) -> _ShadowModel | None:
        import xgboost

        try:
            meta = json.loads((self.dir / f"{key}.json").read_text(encoding="utf-8"))
            raw = (self.dir / f"{key}.ubj").read_bytes()
        except (OSError, ValueError) as exc:
            log.error("shadow model %s unavailable: %s", key, exc)
            return None
        if hashlib.sha256(raw).hexdigest() != meta.get("sha256"):
            log.error("shadow model %s does not match its sha256; not scoring with it", key)
            return None
        booster = xgboost.Booster()
        booster.load_model(bytearray(raw))
        booster.set_param({"nthread": 1})
        return _ShadowModel(int(meta["version"]), booster, float(meta["threshold"]), tuple(meta["features"]))

    def handle(self, frames: list[tuple]) -> None:
        by_key: dict[str, list[tuple]] = {}
        for frame in frames:
            by_key.setdefault(frame[0], []).append(frame)
        for key, items in by_key.items():
            self._score(key, items)

    def _score(self, key: str, items: list[tuple]) -> None:
        import random

        import numpy as np

        m = self.metrics
        model = self.model(key)
        if model is None:
            m.child(m.errors, key.split("-", 1)[0], "shadow").inc(len(items))
            return
        v = str(model.version)
        rows, usable = [], []
        for item in items:
            values = item[1]
            if len(values) == len(model.features) and all(type(x) is float or type(x) is int for x in values):
                rows.append(values)
                usable.append(item)
        if len(usable) < len(items):  # the request lacks what the shadow needs: the shadow fails it
            m.child(m.errors, v, "shadow").inc(len(items) - len(usable))
        if not usable:
            return
        t0 = time.perf_counter()
        try:
            scores = model.booster.inplace_predict(np.array(rows, dtype=np.float32), validate_features=False)
        except Exception:  # a failing shadow is reported, never raised
            log.exception("shadow version %s failed to predict", v)
            m.child(m.errors, v, "shadow").inc(len(usable))
            return
        # per-request latency of a batched call: its time, shared by the rows it served
        elapsed = (time.perf_counter() - t0) / len(usable)
        agree = 0
        for (_, values, served_label), score in zip(usable, scores):
            label = 1 if score >= model.threshold else 0
            agree += label == served_label
            if self.sample > 0 and random.random() < self.sample:
                self.inference_log.write(model.version, dict(zip(model.features, values)), float(score), label,
                                         shadow=True)
        n = len(usable)
        m.child(m.shadow_requests, v).inc(n)
        latency = m.child(m.shadow_latency, v)
        for _ in range(n):
            latency.observe(elapsed)
        if agree:
            m.child(m.shadow_agreement, v, "true").inc(agree)
        if n - agree:
            m.child(m.shadow_agreement, v, "false").inc(n - agree)


def _frames(buf: bytearray) -> tuple[list[tuple], int]:
    """Complete frames at the start of ``buf`` and how many bytes they used."""
    out, pos = [], 0
    while len(buf) - pos >= HEADER.size:
        (n,) = HEADER.unpack_from(buf, pos)
        if len(buf) - pos - HEADER.size < n:
            break
        out.append(marshal.loads(bytes(buf[pos + HEADER.size:pos + HEADER.size + n])))
        pos += HEADER.size + n
    return out, pos


def run(fd: int, process: ShadowProcess, flush) -> None:
    """Serve frames from ``fd`` until the writer closes it."""
    buf = bytearray()
    last_flush = time.monotonic()
    eof = False
    while not eof:
        readable, _, _ = select.select([fd], [], [], FLUSH_S)
        if readable:
            time.sleep(PAUSE_S)  # let a batch gather
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    eof = True
                    break
                buf += chunk
                if len(buf) >= 4 * PIPE_SIZE or not select.select([fd], [], [], 0)[0]:
                    break
            frames, used = _frames(buf)
            del buf[:used]
            for i in range(0, len(frames), BATCH):
                process.handle(frames[i:i + BATCH])
        if time.monotonic() - last_flush >= FLUSH_S or eof:
            flush()
            last_flush = time.monotonic()


def main(argv: list[str]) -> int:
    _lower_priority()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shadow[%(process)d] %(levelname)s %(message)s")
    from services.router import metrics
    from services.router.inference_log import InferenceLog

    state_dir, sample = Path(argv[0]), float(argv[1])
    inference_log = InferenceLog(state_dir)
    try:
        run(0, ShadowProcess(state_dir, sample, metrics.get(), inference_log), inference_log.flush)
    finally:
        inference_log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
