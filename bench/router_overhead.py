"""Speed and safety of the router, side by side with a plain single-model service.

Starts two real ``bentoml serve`` processes (2 workers each) on loopback over a fresh
MLflow sqlite registry with two ``tiny`` fraud-detector versions, then measures:

1. overhead: throughput under a saturating closed-loop load (8 keep-alive clients) against
   4 instances each of the plain service (``services/router/plain.py``, version 1) and the
   router (95/5 between versions 1 and 2, sticky keys), in short pairs: a plain instance
   for ``PAIR_S`` then a router instance for as long (order alternating), the pairing of
   instances rotating every round so every plain instance meets every router instance.
   The figure is the median of the per-pair ratios. On this virtual machine the speed of
   identical processes moves by 10-30% from one second to the next and by a few per cent
   from one process to another; short adjacent measurements cancel the first, the rotation
   over 4 instances averages the second (measured with ``--aa``, which runs the plain
   service on both sides: the A/A figure it prints is the noise floor). Server CPU per
   request over the same measurements is printed beside it. Added p95 latency: 2 clients
   each alternate request by request between the two services (same moments, same load,
   about one request in flight per service: below saturation, so the figure is the
   router's own cost, not queueing); the p95 under 8 such clients (saturated, mostly
   queueing) is printed alongside;
2. storm: 50 weight changes (0<->100 flips among them) while 8 clients send back to back
   (saturating both workers) over connections pinned 4 per worker (so every worker keeps
   serving): failed client requests, misrouted requests (a response on a version whose
   weight was 0 in the generation that served it), and for each change and each worker
   the time from sending the admin call to the first response that worker served with it;
3. shadow: the served path's p95 (client side, 2 closed-loop clients, below saturation) in
   short alternating rounds without a shadow and with 100% mirrored to version 2; the
   ratio is the p95 over every request with mirroring to the p95 over every request
   without (a round's p95 rests on a few hundred requests; the median of per-round
   ratios is printed too).
   One unmeasured round with mirroring on comes first, so the shadow processes have loaded
   the shadow version before any round counts;
4. pyfunc: the same overhead and added-p95 measurements (20 rounds; a 30 s latency window,
   as a pipeline answers fewer requests a second) for a scikit-learn
   pipeline with a string column (StandardScaler + OneHotEncoder -> LogisticRegression,
   ``tests/support/flavours.py``), registered twice, served through its pyfunc flavour by
   the router (95/5 between the two versions) and by the plain service (the same version,
   the same loading and input handling, the same 2 workers), one row per request in
   MLflow's ``dataframe_split`` format. Printed beside it, measured in this process on
   the same row: what the router's input path and model call cost, and what
   ``PyFuncModel.predict`` on a one-row DataFrame costs (MLflow's own serving path).

Every figure is printed with its spread over rounds. Ends with one line::

    RESULT throughput_ratio=<x> p95_added_ms=<ms> storm_failed=<n> storm_apply_ms_max=<ms> shadow_p95_ratio=<x> \
        pyfunc_throughput_ratio=<x> pyfunc_p95_added_ms=<ms>

Run: ``.venv/bin/python bench/router_overhead.py`` (about 7 minutes on 2 cores);
``--aa`` runs only the throughput phase with the plain service on both sides and ends with
``RESULT aa_throughput_ratio=<x> aa_cpu_ratio=<x>``; ``--pyfunc`` runs only phase 4 and
ends with ``RESULT pyfunc_throughput_ratio=<x> pyfunc_p95_added_ms=<ms>``.
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

CLIENTS = 8          # saturating load: throughput
WARMUP_S = 1.5
PAIR_S = 0.25        # overhead: each side of a pair; adjacent short measurements share the machine's mood
ROUNDS = 40          # each round measures INSTANCES pairs
INSTANCES = 4        # of each service, started side by side
LAT_CLIENTS = 2      # latency: clients alternating between the two services (below saturation)
PAIRED_S = 12.0
SATURATED_S = 6.0    # the same with CLIENTS clients, printed for reference
SHADOW_CLIENTS = 2
SHADOW_ROUND_S = 0.5
SHADOW_ROUNDS = 48   # per condition
STORM_CHANGES = 50
STORM_GAP_S = 0.2
PER_WORKER = CLIENTS // 2
TOKEN = "bench-token"
AA = "--aa" in sys.argv[1:]  # plain service on both sides: the throughput figure's noise floor
PYFUNC_ONLY = "--pyfunc" in sys.argv[1:]
PYFUNC_MODEL = "pipeline"
PYFUNC_ROUNDS = 20   # each round measures INSTANCES pairs
PYFUNC_PAIRED_S = 30.0  # a pipeline answers a few hundred requests/s: longer, for as many samples per p95
PYFUNC_ROW = {"amount": 42.5, "hour": 13, "merchant": "travel"}

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

    def __init__(self, port: int, reuse: int = REUSE) -> None:
        self.port = port
        self.reuse = reuse
        self.sock: socket.socket | None = None
        self.buf = b""
        self.used = 0

    def _connect(self) -> None:
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, body: bytes, key: str | None = None) -> tuple[int, dict[str, str]]:
        if self.used >= self.reuse:
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
                until: threading.Event | None = None, conns: list | None = None, rate: float | None = None,
                body: bytes | None = None):
    """``clients`` threads sending ``body`` (default: one fraud row) back to back (or each
    at ``rate`` requests/s) for ``seconds`` (or until ``until`` is set), over ``conns`` if
    given (one per client); returns (latencies, failures, elapsed)."""
    if conns is not None:
        clients = len(conns)
    body = body or json.dumps({"features": FEATURES}).encode()
    deadline = time.monotonic() + seconds
    lat: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients

    def client(i: int) -> None:
        conn = conns[i] if conns is not None else Conn(port)
        rnd = random.Random(i)
        next_at = time.monotonic()
        while (until.is_set() is False) if until is not None else (time.monotonic() < deadline):
            if rate:
                next_at += 1.0 / rate
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
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
        if conns is None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [x for part in lat for x in part], sum(failures), time.monotonic() - t0


def paired(ports: tuple[int, int], seconds: float, clients: int = CLIENTS, body: bytes | None = None):
    """Each client alternates between the two services, so both see the same moment's
    machine and the same concurrent load; returns the latencies per service."""
    body = body or json.dumps({"features": FEATURES}).encode()
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


def pinned(port: int, per_worker: int, workers: int = 2, tries: int = 400) -> list[Conn]:
    """Keep-alive connections, ``per_worker`` on each worker process (the kernel picks the
    worker that accepts a connection; the response header tells which one it was)."""
    body = json.dumps({"features": FEATURES}).encode()
    by_pid: dict[str, list[Conn]] = {}
    for _ in range(tries):
        conn = Conn(port, reuse=1 << 30)
        _, headers = conn.post(body)
        pid = headers.get("x-promotion-worker", "")
        if len(by_pid.setdefault(pid, [])) < per_worker:
            by_pid[pid].append(conn)
        else:
            conn.close()
        if len(by_pid) >= workers and all(len(c) >= per_worker for c in by_pid.values()):
            break
    return [c for cs in by_pid.values() for c in cs]


def server_cpu(svc) -> float:
    """CPU seconds used so far by the service's processes (server, workers, shadow processes)."""
    import psutil

    total = 0.0
    try:
        procs = [psutil.Process(svc.pid), *psutil.Process(svc.pid).children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2) if s else float("nan")


def spread(xs: list[float], fmt: str = "{:.3f}") -> str:
    return f"median {fmt.format(median(xs))} (min {fmt.format(min(xs))}, max {fmt.format(max(xs))}, n={len(xs)})"


def p95(samples: list[float]) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(0.95 * len(s)))] if s else float("nan")


_admin_session = None


def admin(port: int, body: dict) -> dict:
    global _admin_session
    import requests

    if _admin_session is None:
        _admin_session = requests.Session()
    r = _admin_session.post(f"http://127.0.0.1:{port}/admin/routing", json=body,
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"admin call failed: {r.status_code} {r.text}")
    return r.json()


def port_of(svc) -> int:
    return int(svc.url.rsplit(":", 1)[1])


def overhead(starting: list, fleet: dict, rounds: int, body: bytes | None = None,
             what: str = "") -> tuple[float, dict[str, float]]:
    """Throughput of router vs plain in short alternating pairs over rotating instances
    (see the module docstring); prints the figures, returns (median ratio, CPU ms per request)."""
    for _, svc in starting:
        closed_loop(port_of(svc), WARMUP_S, body=body)
    ratios: list[float] = []
    tput: dict[str, list[float]] = {"plain": [], "router": []}
    cpu = {"plain": [0.0, 0], "router": [0.0, 0]}  # server CPU seconds, requests
    per_instance: dict[int, list[float]] = {}
    for r in range(rounds):
        for i in range(INSTANCES):
            pair = (("plain", fleet["plain"][i]), ("router", fleet["router"][(i + r) % INSTANCES]))
            got = {}
            for name, svc in pair if (r + i) % 2 == 0 else pair[::-1]:
                c0 = server_cpu(svc)
                lat, failed, elapsed = closed_loop(port_of(svc), PAIR_S, body=body)
                cpu[name][0] += server_cpu(svc) - c0
                cpu[name][1] += len(lat)
                got[name] = len(lat) / elapsed
                per_instance.setdefault(id(svc), []).append(got[name])
                if failed:
                    print(f"warning: {failed} failed requests against {name}")
            ratios.append(got["router"] / got["plain"])
            for name in got:
                tput[name].append(got[name])
    label = "plain (as router)" if AA else "router"
    print(f"{what}throughput ({CLIENTS} clients, {len(ratios)} pairs of {PAIR_S:.2f}s measurements over "
          f"{INSTANCES} instances per service, rotating): plain {spread(tput['plain'], '{:.0f}')} req/s | "
          f"{label} {spread(tput['router'], '{:.0f}')} req/s | {label}/plain per pair {spread(ratios)}; "
          f"ratio of totals {sum(tput['router']) / sum(tput['plain']):.3f}", flush=True)
    print("  median req/s per instance: " + "; ".join(
        f"{name} {k} {median(per_instance[id(svc)]):.0f}" for k, (name, svc) in enumerate(starting)), flush=True)
    cpu_ms = {name: 1000 * c / max(n, 1) for name, (c, n) in cpu.items()}
    print(f"{what}server CPU per request (all processes of all instances, same measurements): plain "
          f"{cpu_ms['plain']:.3f} ms | {label} {cpu_ms['router']:.3f} ms | {label}/plain "
          f"{cpu_ms['router'] / cpu_ms['plain']:.3f}", flush=True)
    return median(ratios), cpu_ms


def added_latency(plain_port: int, router_port: int, body: bytes | None = None, what: str = "",
                  seconds: float = PAIRED_S) -> float:
    """p95 added by the router, below saturation (clients alternating request by request
    between the two services); prints it with the saturated figure; returns milliseconds."""
    lat_plain, lat_router = paired((plain_port, router_port), seconds, LAT_CLIENTS, body=body)
    added_ms = (p95(lat_router) - p95(lat_plain)) * 1000
    sat_plain, sat_router = paired((plain_port, router_port), SATURATED_S, CLIENTS, body=body)
    print(f"{what}latency ({LAT_CLIENTS} clients alternating between the services, {seconds:.0f}s): "
          f"p95 plain {p95(lat_plain) * 1000:.2f} ms | router {p95(lat_router) * 1000:.2f} ms | "
          f"added {added_ms:+.2f} ms; median plain {median(lat_plain) * 1000:.2f} ms | "
          f"router {median(lat_router) * 1000:.2f} ms  ({len(lat_plain)}/{len(lat_router)} requests)", flush=True)
    print(f"{what}latency, saturated ({CLIENTS} clients alternating, {SATURATED_S:.0f}s, reference only): "
          f"p95 plain {p95(sat_plain) * 1000:.2f} ms | router {p95(sat_router) * 1000:.2f} ms | "
          f"added {(p95(sat_router) - p95(sat_plain)) * 1000:+.2f} ms", flush=True)
    return added_ms


def in_process_costs(reg, mv) -> None:
    """Per-row cost of the router's input path and model call vs PyFuncModel.predict, here."""
    import warnings

    import pandas as pd

    from services.router import models, payload

    model = models.load(reg, mv.name, mv.version, mv.digest, Path(tempfile.mkdtemp(prefix="bench-pyfunc-")))
    body = {"dataframe_split": {"columns": list(PYFUNC_ROW), "data": [list(PYFUNC_ROW.values())]}}
    frame = pd.DataFrame([PYFUNC_ROW])

    def ours():
        batch = payload.parse(body)
        return model.predict(model.inputs(batch), batch)

    def timed(f, n: int = 400) -> float:
        for _ in range(40):
            f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n * 1e6

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = timed(ours), timed(lambda: model.pyfunc.predict(frame))
    print(f"pyfunc, in this process, one row: the router's path (parse, signature check, DataFrame, "
          f"predict_proba) {a:.0f} us | PyFuncModel.predict on a DataFrame (class only) {b:.0f} us", flush=True)


def pyfunc_phase(tmp: Path, reg) -> tuple[float, float]:
    """Phase 4: the router and the plain service over a scikit-learn pipeline's pyfunc model."""
    import requests

    from services.router.process import PLAIN, free_port, start_service
    from tests.support.flavours import register_pipeline

    t0 = time.monotonic()
    p1, p2 = register_pipeline(reg, 1, PYFUNC_MODEL), register_pipeline(reg, 2, PYFUNC_MODEL)
    initial = json.dumps({"routes": {str(p1.version): 95, str(p2.version): 5},
                          "digests": {str(p1.version): p1.digest, str(p2.version): p2.digest}})
    body = json.dumps({"dataframe_split": {"columns": list(PYFUNC_ROW),
                                           "data": [list(PYFUNC_ROW.values())]}}).encode()
    starting = []
    try:
        for i in range(INSTANCES):
            starting.append(("plain", start_service(
                free_port(), tmp / f"pyfunc-plain{i}", reg.uri, None, workers=2, target=PLAIN, wait=False,
                model_name=PYFUNC_MODEL,
                env_extra={"PROMOTION_PLAIN_VERSION": str(p1.version), "PROMOTION_PLAIN_DIGEST": p1.digest})))
            starting.append(("router", start_service(
                free_port(), tmp / f"pyfunc-router{i}", reg.uri, TOKEN, workers=2, model_name=PYFUNC_MODEL,
                initial_routes=initial, wait=False)))
        for _, svc in starting:
            svc.wait_up(240)
        for name, svc in starting:  # a refused payload would be fast and meaningless: check first
            answer = requests.post(svc.url + "/predict", data=body, timeout=30,
                                   headers={"Content-Type": "application/json"})
            if answer.status_code != 200 or "scores" not in answer.json():
                raise SystemExit(f"pyfunc {name} answered {answer.status_code}: {answer.text[:300]}")
        print(f"pyfunc: versions {p1.version}, {p2.version} of {PYFUNC_MODEL!r} (scikit-learn pipeline), "
              f"{len(starting)} services up after {time.monotonic() - t0:.1f}s", flush=True)
        in_process_costs(reg, p1)
        fleet = {k: [svc for n, svc in starting if n == k] for k in ("plain", "router")}
        ratio, _ = overhead(starting, fleet, PYFUNC_ROUNDS, body, "pyfunc ")
        for svc in fleet["plain"][1:] + fleet["router"][1:]:
            svc.stop()
        added_ms = added_latency(port_of(fleet["plain"][0]), port_of(fleet["router"][0]), body, "pyfunc ",
                                 PYFUNC_PAIRED_S)
    finally:
        for _, svc in starting:
            svc.stop()
    return ratio, added_ms


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="router-bench-"))
    os.environ["PROMOTION_STATE"] = str(tmp / "promotion")
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    from promotion.registry import Registry
    from services.router.process import PLAIN, free_port, start_service
    from tests.support.fraud_versions import register_tiny

    t_setup = time.monotonic()
    reg = Registry(root=tmp)
    if PYFUNC_ONLY:
        try:
            ratio, added = pyfunc_phase(tmp, reg)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"RESULT pyfunc_throughput_ratio={ratio:.3f} pyfunc_p95_added_ms={added:.3f}")
        return 0
    v1, v2 = register_tiny(reg), register_tiny(reg)
    digests = {str(v1.version): v1.digest, str(v2.version): v2.digest}
    print(f"registered versions {v1.version}, {v2.version} in {time.monotonic() - t_setup:.1f}s", flush=True)

    initial = json.dumps({"routes": {str(v1.version): 95, str(v2.version): 5}, "digests": digests})
    services = []
    try:
        # INSTANCES of each service: identical processes differ by a few per cent in speed
        def plain_service(name: str):
            return start_service(
                free_port(), tmp / name, reg.uri, None, workers=2, target=PLAIN, wait=False,
                env_extra={"PROMOTION_PLAIN_VERSION": str(v1.version), "PROMOTION_PLAIN_DIGEST": v1.digest})

        starting = []
        for i in range(INSTANCES):
            starting.append(("plain", plain_service(f"plain{i}")))
            starting.append(("router", plain_service(f"aa{i}") if AA else start_service(
                free_port(), tmp / f"router{i}", reg.uri, TOKEN, workers=2, initial_routes=initial, wait=False)))
        services.extend(svc for _, svc in starting)
        for _, svc in starting:
            svc.wait_up(180)
        print(f"{len(starting)} services up after {time.monotonic() - t_setup:.1f}s", flush=True)
        fleet = {"plain": [svc for n, svc in starting if n == "plain"],
                 "router": [svc for n, svc in starting if n == "router"]}
        plain_port, router_port = (int(fleet[k][0].url.rsplit(":", 1)[1]) for k in ("plain", "router"))

        # -- 1. overhead --------------------------------------------------------------
        throughput_ratio, cpu_ms = overhead(starting, fleet, ROUNDS)
        if AA:
            print(f"RESULT aa_throughput_ratio={throughput_ratio:.3f} "
                  f"aa_cpu_ratio={cpu_ms['router'] / cpu_ms['plain']:.3f}")
            return 0
        for svc in fleet["plain"][1:] + fleet["router"][1:]:  # the rest runs on one instance of each
            svc.stop()
        p95_added_ms = added_latency(plain_port, router_port)

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
        conns = pinned(router_port, PER_WORKER)
        loader = threading.Thread(target=lambda: result.update(zip(
            ("lat", "failed", "elapsed"),
            closed_loop(router_port, 0, on_response=on_response, until=storm_over, conns=conns))))
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
        print(f"storm: {len(conns)} clients pinned {PER_WORKER} per worker, back to back, "
              f"{len(seen)} requests over {len(pids)} workers, {STORM_CHANGES} changes, "
              f"{storm_failed} failed, {misrouted} misrouted, apply max {storm_apply_ms_max:.1f} ms "
              f"(median {sorted(apply_ms)[len(apply_ms) // 2]:.1f} ms); admin call max {max(admin_ms):.1f} ms "
              f"median {sorted(admin_ms)[len(admin_ms) // 2]:.1f} ms", flush=True)

        # -- 3. shadow ----------------------------------------------------------------
        from promotion.traffic.bentoml_router import BentoMLRouter

        backend = BentoMLRouter(f"http://127.0.0.1:{router_port}", TOKEN)
        base = {"routes": {a: 100}, "digests": {a: v1.digest}}
        bodies = {"off": {**base, "shadow": None},
                  "on": {**base, "shadow": {"version": v2.version, "percent": 100, "digest": v2.digest}}}
        shadow_lat: dict[str, list[float]] = {"off": [], "on": []}
        shadow_p95: dict[str, list[float]] = {"off": [], "on": []}
        state = admin(router_port, bodies["on"])  # warm-up, not measured
        backend.wait_applied(state["generation"], 10)
        closed_loop(router_port, SHADOW_ROUND_S, SHADOW_CLIENTS)
        for i in range(SHADOW_ROUNDS):
            for name in ("off", "on") if i % 2 == 0 else ("on", "off"):
                state = admin(router_port, bodies[name])
                backend.wait_applied(state["generation"], 10)
                lat, _, _ = closed_loop(router_port, SHADOW_ROUND_S, SHADOW_CLIENTS)
                shadow_lat[name].extend(lat)
                shadow_p95[name].append(p95(lat))
        shadow_ratios = [on / off for off, on in zip(shadow_p95["off"], shadow_p95["on"])]
        shadow_p95_ratio = p95(shadow_lat["on"]) / p95(shadow_lat["off"])
        import requests

        metrics = requests.get(f"http://127.0.0.1:{router_port}/metrics", timeout=10).text
        mirrored = sum(float(l.split()[-1]) for l in metrics.splitlines()
                       if l.startswith("promotion_shadow_requests_total{"))
        dropped = sum(float(l.split()[-1]) for l in metrics.splitlines()
                      if l.startswith("promotion_shadow_dropped_total{"))
        print(f"shadow ({SHADOW_CLIENTS} clients, {SHADOW_ROUNDS} alternating rounds of {SHADOW_ROUND_S:.1f}s each): "
              f"p95 off {spread([x * 1000 for x in shadow_p95['off']], '{:.2f}')} ms | "
              f"on (100% mirrored) {spread([x * 1000 for x in shadow_p95['on']], '{:.2f}')} ms | "
              f"on/off per round {spread(shadow_ratios)}; p95 over all rounds off {p95(shadow_lat['off']) * 1000:.2f} ms, "
              f"on {p95(shadow_lat['on']) * 1000:.2f} ms, on/off {shadow_p95_ratio:.3f}; {mirrored:.0f} mirrored, "
              f"{dropped:.0f} dropped", flush=True)
        for svc in services:  # memory and cores for phase 4
            svc.stop()

        # -- 4. pyfunc ----------------------------------------------------------------
        pyfunc_ratio, pyfunc_added_ms = pyfunc_phase(tmp, reg)
    finally:
        for svc in services:
            svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"RESULT throughput_ratio={throughput_ratio:.3f} p95_added_ms={p95_added_ms:.3f} "
          f"storm_failed={storm_failed} storm_apply_ms_max={storm_apply_ms_max:.1f} "
          f"shadow_p95_ratio={shadow_p95_ratio:.3f} pyfunc_throughput_ratio={pyfunc_ratio:.3f} "
          f"pyfunc_p95_added_ms={pyfunc_added_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
