"""Speed and safety of the router, side by side with a plain single-model service.

Starts two real ``bentoml serve`` processes (2 workers each) on loopback over a fresh
MLflow sqlite registry with two ``tiny`` fraud-detector versions, then measures:

1. overhead: the same closed-loop load (8 keep-alive clients) in short alternating rounds against the
   plain service (``services/router/plain.py``, version 1) and the router (95/5 between
   versions 1 and 2, sticky keys) for the throughput ratio; then the 8 clients alternate
   request by request between the two services (same moment, same concurrent load) for
   the added p95 latency;
2. storm: 50 weight changes (0<->100 flips among them) while 8 clients keep sending;
   failed client requests, misrouted requests (a response on a version whose weight
   was 0 in the generation that served it), and for each change and each worker the
   time from the admin call to the first response that worker served with it;
3. shadow: the served path's p95 (client side) at a fixed offered rate (40% of the plain
   service's capacity) in short alternating rounds, without a shadow and with 100% mirrored
   to version 2.

Ends with one line::

    RESULT throughput_ratio=<x> p95_added_ms=<ms> storm_failed=<n> storm_apply_ms_max=<ms> shadow_p95_ratio=<x>

Run: ``.venv/bin/python bench/router_overhead.py`` (about 2-3 minutes).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIENTS = 8
WARMUP_S = 2.0
ROUND_S = 1.5      # overhead: short alternating rounds, so machine noise hits both services alike
ROUNDS = 8
PAIRED_S = 10.0    # latency: clients alternate between the two services for this long
SHADOW_ROUND_S = 1.5
SHADOW_ROUNDS = 6
STORM_CHANGES = 50
STORM_GAP_S = 0.2
SHADOW_LOAD = 0.4  # shadow comparison offers this share of the plain service's capacity
TOKEN = "bench-token"

FEATURES = {"amount": 42.0, "hour": 13.0, "merchant_risk": 0.3, "distance_km": 12.0, "velocity_1h": 1.0,
            "account_age_days": 400.0, "device_trust": 0.7, "intl": 0.0, "card_present": 1.0,
            "prior_chargebacks": 0.0}


class Conn:
    """A minimal keep-alive HTTP/1.1 client: the load generator must cost little CPU.

    It reconnects every ``REUSE`` requests: BentoML workers share one listening socket,
    and which worker accepts a connection is up to the kernel. Long-lived connections can
    pile onto one worker for a whole run; rotating them spreads the load the same way
    for both services.
    """

    REUSE = 32

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.used = 0

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, body: bytes, key: str | None = None) -> tuple[int, dict[str, str]]:
        if self.used >= self.REUSE:
            self.close()
        if self.sock is None:
            self._connect()
            self.used = 0
        self.used += 1
        head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n" + (f"X-Routing-Key: {key}\r\n" if key else "") + "\r\n")
        try:
            self.sock.sendall(head.encode() + body)
            while b"\r\n\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk
            header, _, rest = self.buf.partition(b"\r\n\r\n")
            lines = header.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            n = int(headers.get("content-length", "0"))
            while len(rest) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                rest += chunk
            headers["_body"] = rest[:n].decode()
            self.buf = rest[n:]
            return status, headers
        except (OSError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def closed_loop(port: int, seconds: float, clients: int = CLIENTS, on_response=None, keyed: bool = True,
                until: threading.Event | None = None):
    """``clients`` threads sending back to back for ``seconds`` (or until ``until`` is set);
    returns (latencies, failures, elapsed)."""
    body = json.dumps({"features": FEATURES}).encode()
    deadline = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients

    def client(i: int) -> None:
        conn = Conn(port)
        rnd = random.Random(i)
        while (until.is_set() is False) if until is not None else (time.monotonic() < deadline):
            key = f"user-{rnd.randrange(1_000_000)}" if keyed else None
            t0 = time.perf_counter()
            try:
                status, headers = conn.post(body, key)
            except (OSError, ValueError):
                failures[i] += 1
                continue
            t1 = time.perf_counter()
            if status != 200:
                failures[i] += 1
            lat[i].append(t1 - t0)
            if on_response is not None:
                on_response(time.monotonic(), status, headers)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for part in lat for x in part], sum(failures), time.monotonic() - t0


def paired(ports: tuple[int, int], seconds: float, clients: int = CLIENTS):
    """Each client alternates between the two services, so both see the same moment's
    machine and the same concurrent load; returns the latencies per service."""
    body = json.dumps({"features": FEATURES}).encode()
    deadline = time.monotonic() + seconds
    lat: list[tuple[list[float], list[float]]] = [([], []) for _ in range(clients)]

    def client(i: int) -> None:
        conns = (Conn(ports[0]), Conn(ports[1]))
        rnd = random.Random(i)
        j = i % 2
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                conns[j].post(body, f"user-{rnd.randrange(1_000_000)}")
                lat[i][j].append(time.perf_counter() - t0)
            except (OSError, ValueError):
                pass
            j = 1 - j
        for c in conns:
            c.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for part in lat for x in part[0]], [x for part in lat for x in part[1]]


def paced(port: int, seconds: float, rate: float, clients: int = CLIENTS):
    """Open-loop load at ``rate`` requests/s spread over ``clients``; latencies from the schedule."""
    body = json.dumps({"features": FEATURES}).encode()
    lat: list[list[float]] = [[] for _ in range(clients)]
    start = time.perf_counter() + 0.05
    n = int(seconds * rate)

    def client(i: int) -> None:
        conn = Conn(port)
        for j in range(i, n, clients):
            due = start + j / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                conn.post(body, f"user-{j}")
            except (OSError, ValueError):
                continue
            lat[i].append(time.perf_counter() - due)  # includes any queueing behind the schedule
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for part in lat for x in part]


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.95 * len(s)))] if s else float("nan")


def admin(port: int, body: dict) -> dict:
    import requests

    r = requests.post(f"http://127.0.0.1:{port}/admin/routing", json=body,
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"admin call failed: {r.status_code} {r.text}")
    return r.json()


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    os.environ["PROMOTION_STATE"] = str(tmp / "promotion")
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    from promotion.registry import Registry
    from services.router.process import PLAIN, free_port, start_service
    from tests.support.fraud_versions import register_tiny

    t_setup = time.monotonic()
    reg = Registry(root=tmp)
    v1, v2 = register_tiny(reg), register_tiny(reg)
    digests = {str(v1.version): v1.digest, str(v2.version): v2.digest}
    print(f"registered versions {v1.version}, {v2.version} in {time.monotonic() - t_setup:.1f}s", flush=True)

    initial = json.dumps({"routes": {str(v1.version): 95, str(v2.version): 5}, "digests": digests})
    plain_port, router_port = free_port(), free_port()
    services = []
    try:
        services.append(start_service(plain_port, tmp / "plain", reg.uri, None, workers=2, target=PLAIN,
                                      env_extra={"PROMOTION_PLAIN_VERSION": str(v1.version),
                                                 "PROMOTION_PLAIN_DIGEST": v1.digest}))
        services.append(start_service(router_port, tmp / "router", reg.uri, TOKEN, workers=2,
                                      initial_routes=initial))
        print(f"services up after {time.monotonic() - t_setup:.1f}s", flush=True)

        # -- 1. overhead --------------------------------------------------------------
        for port in (plain_port, router_port):
            closed_loop(port, WARMUP_S)
        done = {"plain": 0, "router": 0}
        spent = {"plain": 0.0, "router": 0.0}
        for i in range(ROUNDS):
            order = (("plain", plain_port), ("router", router_port))
            for name, port in order if i % 2 == 0 else order[::-1]:
                lat, failed, elapsed = closed_loop(port, ROUND_S)
                done[name] += len(lat)
                spent[name] += elapsed
                if failed:
                    print(f"warning: {failed} failed requests against {name}")
        t_plain, t_router = done["plain"] / spent["plain"], done["router"] / spent["router"]
        throughput_ratio = t_router / t_plain
        lat_plain, lat_router = paired((plain_port, router_port), PAIRED_S)
        lats = {"plain": lat_plain, "router": lat_router}
        p95_added_ms = (p95(lats["router"]) - p95(lats["plain"])) * 1000
        print(f"overhead: plain {t_plain:.0f} req/s p95 {p95(lats['plain']) * 1000:.2f} ms | "
              f"router {t_router:.0f} req/s p95 {p95(lats['router']) * 1000:.2f} ms", flush=True)

        # -- 2. storm -----------------------------------------------------------------
        a, b = str(v1.version), str(v2.version)
        plan = [{a: 100, b: 0}, {a: 0, b: 100}, {a: 95, b: 5}, {a: 75, b: 25}, {a: 50, b: 50}]
        changes: dict[int, tuple[float, dict]] = {}
        seen: list[tuple[float, int, int, int, int]] = []  # (t, status, pid, generation, version)
        seen_lock = threading.Lock()

        def on_response(t: float, status: int, headers: dict) -> None:
            version = -1
            if status == 200:
                version = json.loads(headers["_body"])["version"]
            with seen_lock:
                seen.append((t, status, int(headers.get("x-promotion-worker", 0)),
                             int(headers.get("x-promotion-generation", 0)), version))

        result: dict = {}
        admin_ms: list[float] = []
        storm_over = threading.Event()
        loader = threading.Thread(target=lambda: result.update(zip(
            ("lat", "failed", "elapsed"),
            closed_loop(router_port, 0, on_response=on_response, until=storm_over))))
        loader.start()
        time.sleep(0.5)
        try:
            for i in range(STORM_CHANGES):
                routes = plan[i % len(plan)]
                t_call = time.monotonic()
                state = admin(router_port, {"routes": routes, "digests": digests, "shadow": None})
                admin_ms.append((time.monotonic() - t_call) * 1000)
                changes[state["generation"]] = (t_call, routes)
                time.sleep(STORM_GAP_S)
            time.sleep(1.0)
        finally:
            storm_over.set()
            loader.join()
        pids = {pid for _, _, pid, _, _ in seen if pid}
        apply_ms = []
        misrouted = 0
        for gen, (t_call, routes) in changes.items():
            for pid in pids:
                first = min((t for t, st, p, g, _ in seen if p == pid and g >= gen), default=None)
                if first is None:
                    apply_ms.append(float("inf"))
                else:
                    apply_ms.append((first - t_call) * 1000)
        for _, st, _, g, version in seen:
            if st == 200 and g in changes and changes[g][1].get(str(version), 0) == 0:
                misrouted += 1
        storm_failed = result["failed"]
        storm_apply_ms_max = max(apply_ms)
        print(f"storm: {len(seen)} requests over {len(pids)} workers, {STORM_CHANGES} changes, "
              f"{storm_failed} failed, {misrouted} misrouted, apply max {storm_apply_ms_max:.1f} ms "
              f"(median {sorted(apply_ms)[len(apply_ms) // 2]:.1f} ms); admin call max {max(admin_ms):.1f} ms "
              f"median {sorted(admin_ms)[len(admin_ms) // 2]:.1f} ms", flush=True)

        # -- 3. shadow ----------------------------------------------------------------
        base = {"routes": {a: 100}, "digests": {a: v1.digest}}
        with_shadow = {**base, "shadow": {"version": v2.version, "percent": 100, "digest": v2.digest}}
        rate = SHADOW_LOAD * t_plain
        shadow_lat = {"off": [], "on": []}
        for _ in range(SHADOW_ROUNDS):
            for name, body in (("off", {**base, "shadow": None}), ("on", with_shadow)):
                state = admin(router_port, body)
                from promotion.traffic.bentoml_router import BentoMLRouter

                BentoMLRouter(f"http://127.0.0.1:{router_port}", TOKEN).wait_applied(state["generation"], 10)
                shadow_lat[name].extend(paced(router_port, SHADOW_ROUND_S, rate))
        p_off, p_on = p95(shadow_lat["off"]), p95(shadow_lat["on"])
        shadow_p95_ratio = p_on / p_off
        import requests

        metrics = requests.get(f"http://127.0.0.1:{router_port}/metrics", timeout=10).text
        mirrored = sum(float(l.split()[-1]) for l in metrics.splitlines()
                       if l.startswith("promotion_shadow_requests_total{"))
        dropped = sum(float(l.split()[-1]) for l in metrics.splitlines()
                      if l.startswith("promotion_shadow_dropped_total{"))
        print(f"shadow at {rate:.0f} req/s: p95 off {p_off * 1000:.2f} ms, on {p_on * 1000:.2f} ms; "
              f"{mirrored:.0f} mirrored, {dropped:.0f} dropped", flush=True)
    finally:
        for svc in services:
            svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"RESULT throughput_ratio={throughput_ratio:.3f} p95_added_ms={p95_added_ms:.3f} "
          f"storm_failed={storm_failed} storm_apply_ms_max={storm_apply_ms_max:.1f} "
          f"shadow_p95_ratio={shadow_p95_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
