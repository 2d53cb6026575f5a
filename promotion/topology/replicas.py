"""Replicas of the router, each serving ONE model version at 100%.

Usage::

    fleet = start_replicas(tracking_uri, {1: digest1, 2: digest2}, count=2, root=folder, token=TOKEN)
    fleet.urls()        # {1: [url, url], 2: [url, url]}: the serving.replicas of kind envoy
    fleet.stop()

    staging = Router(folder / "staging", tracking_uri, TOKEN, {"workers": 1}).start()
    staging.wait()                                                   # one router, no version yet
    staging.stop()

Each replica is ``bentoml serve`` of the project's router, started by its command line
(:func:`promotion.contract.launch.start_service`), with ``initial_routes`` naming its
version and digest (it verifies the artifact before it serves it) and one worker, so that
two versions x two replicas fit on a 2-core machine. A router whose port another process
took between :func:`~promotion.contract.launch.free_port` and its bind is started again
on another port.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from promotion.contract.launch import ServiceProcess, free_port, start_service
from promotion.errors import ServiceError

PORT_TAKEN = "Address already in use"
PORT_ATTEMPTS = 3


@dataclass
class Router:
    """How one router is launched, and the process running it now."""

    root: Path
    tracking_uri: str
    token: str
    options: dict = field(default_factory=dict)
    process: ServiceProcess | None = None

    def start(self) -> "Router":
        """Start it on a free port (without waiting)."""
        self.process = start_service(free_port(), self.root, self.tracking_uri, self.token, wait=False,
                                     **self.options)
        return self

    def wait(self, timeout_s: float = 120.0, *, ready: bool = True) -> ServiceProcess:
        """Wait until it is up; when it exited because its port was taken, start it again on
        another port (up to :data:`PORT_ATTEMPTS` times in all)."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self.process.wait_up(timeout_s, ready=ready)
                return self.process
            except ServiceError:
                self.process.stop()
                if attempt == PORT_ATTEMPTS or PORT_TAKEN not in self.process.log_tail(200):
                    raise
                self.process.log_path.replace(self.process.log_path.with_name(f"service.port-taken-{attempt}.log"))
                self.start()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the process it runs now (server and workers, by PID)."""
        if self.process is not None:
            self.process.stop()


@dataclass
class Fleet:
    """Replicas per version: ``{version: [ServiceProcess, ...]}``."""

    replicas: dict[int, list[ServiceProcess]] = field(default_factory=dict)

    def urls(self) -> dict[int, list[str]]:
        """The replicas' base URLs per version."""
        return {v: [r.url for r in rs] for v, rs in self.replicas.items()}

    def targets(self) -> list[str]:
        """``host:port`` of every replica (what Prometheus scrapes)."""
        return [u.split("//", 1)[1] for urls in self.urls().values() for u in urls]

    def pids(self) -> list[int]:
        return [r.pid for rs in self.replicas.values() for r in rs]

    def stop(self) -> None:
        """Stop every replica (its server and workers, by PID)."""
        for rs in self.replicas.values():
            for r in rs:
                r.stop()


def start_replicas(tracking_uri: str, digests: dict[int, str], *, count: int, root: Path, token: str,
                   model: str = "fraud-detector", workers: int = 1, env_extra: dict | None = None,
                   timeout_s: float = 120.0) -> Fleet:
    """``count`` routers per version of ``digests``, each serving only that version; started
    together, then waited for (each loads and verifies its artifact). On a failure every
    one started is stopped."""
    routers: list[tuple[int, Router]] = []
    try:
        for version, digest in digests.items():
            initial = json.dumps({"routes": {str(version): 100}, "digests": {str(version): digest}, "shadow": None})
            for i in range(count):
                options = {"workers": workers, "model_name": model, "initial_routes": initial, "env_extra": env_extra}
                routers.append((version, Router(Path(root) / f"replica-v{version}-{i}", tracking_uri, token,
                                                options).start()))
        fleet = Fleet()
        for version, router in routers:
            fleet.replicas.setdefault(version, []).append(router.wait(timeout_s))
    except BaseException:
        for _, router in routers:
            if router.process is not None:
                router.process.stop()
        raise
    return fleet
