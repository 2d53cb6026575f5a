"""Shadow mirroring off the request path: a bounded queue and one worker thread.

The request handler only does ``queue.put_nowait``; when the queue is full the mirror is
dropped and counted (``promotion_shadow_dropped_total``), so a slow shadow never slows
the served path. The thread predicts with the shadow version (rows that queued up
together in one call, which keeps its CPU and GIL use small) and records its latency,
whether its label agrees with the served one, and (sampled) its prediction in the
inference log.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from typing import Callable

QUEUE_SIZE = 1024
BATCH = 64
# After a batch, the thread pauses this long before draining the queue again: rows that
# arrive meanwhile share one predict call, so at 100% mirroring the shadow costs a few
# predict calls per second instead of one per request (xgboost's per-call overhead is
# Python, under the GIL the served path needs). Adds at most this much to shadow lag.
PAUSE_S = 0.005


class ShadowMirror:
    def __init__(self, metrics, log_write: Callable | None, sample: float, queue_size: int = QUEUE_SIZE) -> None:
        self.metrics = metrics
        self.log_write = log_write
        self.sample = sample
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="promotion-shadow", daemon=True)
        self._thread.start()

    def offer(self, model, row, features: dict, served_label: int) -> None:
        """Mirror one request to ``model``; never blocks."""
        try:
            self.queue.put_nowait((model, row, features, served_label))
        except queue.Full:
            self.dropped += 1
            self.metrics.child(self.metrics.shadow_dropped, str(model.version)).inc()

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            while len(batch) < BATCH:  # drain what is waiting: one predict call for many rows
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is None for item in batch):
                return
            by_model: dict[int, list] = {}
            for item in batch:
                by_model.setdefault(id(item[0]), []).append(item)
            for items in by_model.values():
                self._predict(items)
            time.sleep(PAUSE_S)

    def _predict(self, items: list) -> None:
        import numpy as np

        m = self.metrics
        model = items[0][0]
        v = str(model.version)
        # the shadow builds its own rows: it may need other features than the served version
        rows, usable = [], []
        for item in items:
            try:
                rows.append(model.row(item[2]))
                usable.append(item)
            except Exception:  # the request lacks what the shadow needs: the shadow fails it
                m.child(m.errors, v, "shadow").inc()
        if not usable:
            return
        items = usable
        t0 = time.perf_counter()
        try:
            scores = model.predict_many(np.concatenate(rows))
        except Exception:  # a failing shadow is reported, never raised into serving
            m.child(m.errors, v, "shadow").inc(len(items))
            return
        # per-request latency of a batched call: its time, shared by the rows it served
        elapsed = (time.perf_counter() - t0) / len(items)
        threshold = model.threshold
        agree = 0
        for (_, _, features, served_label), score in zip(items, scores):
            label = 1 if score >= threshold else 0
            agree += label == served_label
            if self.sample > 0 and self.log_write is not None and random.random() < self.sample:
                self.log_write(model.version, features, float(score), label, shadow=True)
        n = len(items)
        m.child(m.shadow_requests, v).inc(n)
        latency = m.child(m.shadow_latency, v)
        for _ in range(n):
            latency.observe(elapsed)
        if agree:
            m.child(m.shadow_agreement, v, "true").inc(agree)
        if n - agree:
            m.child(m.shadow_agreement, v, "false").inc(n - agree)

    def stop(self) -> None:
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
