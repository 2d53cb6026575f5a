"""Shadow mirroring in a separate, lowest-priority process per serving worker.

The served path only writes small frames to a pipe: non-blocking ``os.write`` calls of
less than ``PIPE_BUF`` bytes each, which the kernel makes all-or-nothing. When the pipe
is full (the shadow is behind) the mirror is dropped and counted
(``promotion_shadow_dropped_total``); the response never waits for the shadow.

The shadow process (``python -m services.router.shadow <state_dir> <sample>``) runs under
``SCHED_IDLE`` (``nice 19`` where that is refused), so it gets a core only when serving
does not need one, and it has its own interpreter, so it never holds the serving
worker's GIL. It reads frames in batches, predicts each batch in one call, and records
the shadow's latency, whether its answer agrees with the served one (the class for
classifiers, the prediction otherwise), and (sampled) its prediction in the inference
log with ``"shadow": true``. Its metrics go to the same Prometheus multiprocess directory
as the workers', so ``/metrics`` shows them. Shadow counters count rows: one per
mirrored row, whatever number of rows a request carried.

Models reach the shadow process as verified artifact directories: the worker exports
every version it has verified and loaded as ``<state>/shadow-models/<key>.json``
(version, digest, the artifact directory under ``<state>/artifacts``); the process loads
a key on first use (or when the worker applies a routing with that shadow), after
hashing the directory again and comparing it with the digest, through the same pyfunc
loader as the workers. A frame names the key, so a change of shadow version needs no
message of its own.

Frame: 4-byte little-endian length, then ``marshal`` of ``(key, names, rows, served)``:
the shadow's input column names, the request's values of those columns row by row (a
missing value as None), and the served answers. ``rows`` empty asks the process to load
the key now.
"""

from __future__ import annotations

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

from promotion.contract.digest import tree_digest
from services.router.payload import MISSING

log = logging.getLogger("bentoml.promotion_router")

HEADER = struct.Struct("<I")
MAX_FRAME = select.PIPE_BUF  # larger writes to a pipe are not atomic
PIPE_SIZE = 1 << 20          # about 4,000 mirrored one-row requests of 10 features
# After reading, the process pauses this long before draining the pipe: rows that arrive
# meanwhile share one predict call (a model's per-call overhead is Python). Adds at most
# this much to the shadow's lag, never to the served path.
PAUSE_S = 0.05
BATCH = 256
FLUSH_S = 1.0
REPO_ROOT = Path(__file__).resolve().parents[2]
RETRY_S = 5.0  # a key that could not be loaded is tried again after this long


def models_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "shadow-models"


def export(state_dir: str | Path, model) -> None:
    """Tell shadow processes where a verified, loaded version's artifact is (once per key)."""
    if model.path is None:  # an in-memory model (tests): nothing a process could load
        return
    meta_path = models_dir(state_dir) / f"{model.key}.json"
    if meta_path.exists():
        return
    from services.router.routing import write_json_atomic

    write_json_atomic(meta_path, {"version": model.version, "digest": model.digest, "path": str(model.path)},
                      durable=False)


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

    def offer(self, model, batch, served: list) -> None:
        """Mirror one request's rows to ``model``; never blocks (the lock is only held for writes)."""
        m = self.metrics
        names = model.features or tuple(batch.columns or ())
        if batch.columns is not None:
            cols = [batch.columns.get(n) for n in names]
            rows = [tuple(None if c is None or c[i] is MISSING else c[i] for c in cols) for i in range(batch.n)]
        elif names:  # rows without names cannot be matched to the shadow's columns
            m.child(m.errors, str(model.version), "shadow").inc(batch.n)
            return
        else:
            rows = [tuple(r) if isinstance(r, list) else (r,) for r in batch.positional]
        try:
            frames, too_large = _encode(model.key, tuple(names), rows, list(served))
        except ValueError:  # a value marshal cannot carry: the shadow cannot score this request
            m.child(m.errors, str(model.version), "shadow").inc(len(rows))
            return
        if too_large:  # a row too large to hand over atomically
            m.child(m.errors, str(model.version), "shadow").inc(too_large)
        sent = 0
        with self._lock:
            fd = self._fd
            if fd is not None:
                try:
                    for frame, n in frames:
                        os.write(fd, frame)
                        sent += n
                except OSError:  # full (BlockingIOError: the shadow is behind) or gone (EPIPE)
                    pass
        if sent < len(rows) - too_large:
            self._drop(model, len(rows) - too_large - sent)

    def preload(self, model) -> None:
        """Ask the process to load ``model`` now, before the first mirrored request (best effort)."""
        frame = _frame((model.key, tuple(model.features), [], []))
        with self._lock:
            if self._fd is not None:
                try:
                    os.write(self._fd, frame)
                except OSError:
                    pass

    def _drop(self, model, n: int = 1) -> None:
        self.dropped += n
        self.metrics.child(self.metrics.shadow_dropped, str(model.version)).inc(n)


def _frame(content: tuple) -> bytes:
    payload = marshal.dumps(content)
    return HEADER.pack(len(payload)) + payload


def _encode(key: str, names: tuple, rows: list, served: list) -> tuple[list[tuple[bytes, int]], int]:
    """Frames of at most MAX_FRAME bytes for these rows (halving until each fits), with the
    number of rows each holds, and the number of rows too large for any frame."""
    frame = _frame((key, names, rows, served))
    if len(frame) <= MAX_FRAME:
        return [(frame, len(rows))], 0
    if len(rows) == 1:
        return [], 1
    mid = len(rows) // 2
    first, bad1 = _encode(key, names, rows[:mid], served[:mid])
    second, bad2 = _encode(key, names, rows[mid:], served[mid:])
    return first + second, bad1 + bad2


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


class ShadowProcess:
    """Reads frames, scores them in batches, records metrics and the inference log."""

    def __init__(self, state_dir: str | Path, sample: float, metrics, inference_log) -> None:
        self.state_dir = Path(state_dir)
        self.dir = models_dir(state_dir)
        self.sample = sample
        self.metrics = metrics
        self.inference_log = inference_log
        self.models: dict[str, Any] = {}
        self._failed: dict[str, float] = {}

    def model(self, key: str):
        """The loaded model of ``key``, or None (unknown, unverifiable or unloadable: retried later)."""
        m = self.models.get(key)
        if m is None and time.monotonic() - self._failed.get(key, -RETRY_S) >= RETRY_S:
            m = self._load(key)
            if m is None:
                self._failed[key] = time.monotonic()
            else:
                self.models[key] = m
                self._failed.pop(key, None)
        return m

    def _load(self, key: str):
        from services.router import models

        try:
            meta = json.loads((self.dir / f"{key}.json").read_text(encoding="utf-8"))
            version, digest, path = int(meta["version"]), str(meta["digest"]), Path(meta["path"]).resolve()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("shadow model %s unavailable: %s", key, exc)
            return None
        artifacts = (self.state_dir / "artifacts").resolve()
        if artifacts not in path.parents:
            log.error("shadow model %s: %s is outside %s; not loading it", key, path, artifacts)
            return None
        try:
            actual = tree_digest(path)
        except OSError as exc:
            log.error("shadow model %s unreadable: %s", key, exc)
            return None
        if actual != digest:
            log.error("shadow model %s does not match its digest (%s, expected %s); not scoring with it",
                      key, actual, digest)
            return None
        try:
            return models.load_local(path, version, digest)
        except models.LoadError as exc:
            log.error("shadow model %s: %s", key, exc)
            return None

    def handle(self, frames: list[tuple]) -> None:
        by_key: dict[tuple, list[tuple]] = {}
        for frame in frames:
            by_key.setdefault((frame[0], frame[1]), []).append(frame)
        for (key, names), items in by_key.items():
            self._score(key, names, items)

    def _score(self, key: str, names: tuple, items: list[tuple]) -> None:
        from services.router.payload import Batch, InputError

        m = self.metrics
        rows = [(r, s) for _, _, frame_rows, served in items for r, s in zip(frame_rows, served)]
        model = self.model(key)
        if model is None:
            if rows:
                m.child(m.errors, key.split("-", 1)[0], "shadow").inc(len(rows))
            return
        if not rows:  # a preload frame
            return
        v = str(model.version)
        # rows that do not fit the shadow's signature fail on the shadow alone
        batch, usable = self._batch(Batch, names, rows, model), rows
        try:
            values = model.inputs(batch)
        except InputError:
            usable = [(r, s) for r, s in rows if self._fits(Batch, names, (r, s), model)]
            m.child(m.errors, v, "shadow").inc(len(rows) - len(usable))
            if not usable:
                return
            batch = self._batch(Batch, names, usable, model)
            values = model.inputs(batch)
        t0 = time.perf_counter()
        try:
            prediction = model.predict(values, batch)
        except Exception:  # a failing shadow is reported, never raised
            log.exception("shadow version %s failed to predict", v)
            m.child(m.errors, v, "shadow").inc(len(usable))
            return
        # per-row latency of a batched call: its time, shared by the rows it served
        elapsed = (time.perf_counter() - t0) / len(usable)
        decisions = prediction.decisions()
        agree = sum(1 for (_, served), mine in zip(usable, decisions) if served == mine)
        if self.sample > 0:
            self.inference_log.write_sampled(model.version, values, prediction.predictions, prediction.scores,
                                             prediction.labels, self.sample, shadow=True)
        n = len(usable)
        m.child(m.shadow_requests, v).inc(n)
        latency = m.child(m.shadow_latency, v)
        for _ in range(n):
            latency.observe(elapsed)
        if agree:
            m.child(m.shadow_agreement, v, "true").inc(agree)
        if n - agree:
            m.child(m.shadow_agreement, v, "false").inc(n - agree)

    @staticmethod
    def _batch(batch_type, names: tuple, rows: list, model):
        if model.schema.columns is None and not names:
            return batch_type(None, len(rows), "shadow", positional=[list(r) for r, _ in rows])
        columns = {n: [r[j] for r, _ in rows] for j, n in enumerate(names)}
        return batch_type(columns, len(rows), "shadow")

    def _fits(self, batch_type, names: tuple, pair: tuple, model) -> bool:
        from services.router.payload import InputError

        try:
            model.inputs(self._batch(batch_type, names, [pair], model))
            return True
        except InputError:
            return False


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
