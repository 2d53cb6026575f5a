"""A bounded load generator for the demo and benches: steady requests to /predict.

Loopback only, bounded in time by its owner (``stop()``), and it counts what a client
would notice: responses per served version, failures, latency.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter


class Load:
    """``threads`` clients sending ``rate`` requests/s in total to ``endpoint``/predict."""

    def __init__(self, endpoint: str, rows: list[dict], rate: float = 200.0, threads: int = 4,
                 key_header: str = "X-Routing-Key", timeout: float = 5.0) -> None:
        self.url = endpoint.rstrip("/") + "/predict"
        self.rows, self.rate, self.threads = rows, rate, threads
        self.key_header, self.timeout = key_header, timeout
        self.served: Counter = Counter()
        self.failed = 0
        self.failures: Counter = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._generation = 0

    def start(self) -> "Load":
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"load-{i}")
            t.start()
            self._workers.append(t)
        return self

    def _run(self, i: int) -> None:
        import requests

        session = requests.Session()
        interval = self.threads / self.rate
        rng = random.Random(i)
        seen = self._generation
        rows = itertools.cycle(self.rows[i::self.threads] or self.rows)
        next_at = time.monotonic()
        while not self._stop.is_set():
            if seen != self._generation:
                seen = self._generation
                rows = itertools.cycle(self.rows[i::self.threads] or self.rows)
            body = {"features": next(rows)}
            headers = {self.key_header: f"customer-{rng.randrange(100_000)}"}
            try:
                r = session.post(self.url, json=body, headers=headers, timeout=self.timeout)
                with self._lock:
                    if r.status_code == 200:
                        self.served[str(r.json().get("version"))] += 1
                    else:
                        self.failed += 1
                        self.failures[str(r.status_code)] += 1
            except Exception as exc:  # a client notices any failure the same way
                with self._lock:
                    self.failed += 1
                    self.failures[type(exc).__name__] += 1
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def set_rows(self, rows: list[dict]) -> None:
        """Send these rows from now on (each client picks up the change at its next request)."""
        self.rows = rows
        self._generation += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=10)

    def totals(self) -> dict:
        with self._lock:
            return {"served": dict(self.served), "failed": self.failed, "failures": dict(self.failures)}
