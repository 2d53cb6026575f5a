"""How the package starts the service: the ``bentoml serve`` target, the environment the
service reads, and a child-process handle that stops everything it started.

The package never imports the service: it names it by module path (:data:`ROUTER`,
:data:`PLAIN`) and runs ``bentoml serve`` on it. For tests, the demo, ``promotion serve``
and benches::

    from promotion.contract.launch import start_service
    svc = start_service(port=3010, state_dir="/tmp/svc", tracking_uri="sqlite:////tmp/r/mlflow.db",
                        token="s3cret", workers=2)
    try:
        requests.post(svc.url + "/predict", json={"features": {...}})
    finally:
        svc.stop()

``bentoml serve`` runs in a new session (its own process group). Its workers start their
own sessions, so :meth:`ServiceProcess.stop` also ends, by PID, every process that was
a descendant of the server it started (workers and their shadow processes), including
ones left behind if the server itself was killed.

The service's environment (see ``docs/service.md``): :data:`STATE_ENV` (required),
``MLFLOW_TRACKING_URI``, :data:`MODEL_NAME_ENV`, :data:`WORKERS_ENV`, :data:`TOKEN_ENV`,
:data:`INITIAL_ROUTES_ENV`, :data:`ROUTING_KEY_HEADER_ENV`, :data:`INFERENCE_SAMPLE_ENV`;
the plain baseline also reads :data:`PLAIN_VERSION_ENV` and :data:`PLAIN_DIGEST_ENV`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from promotion.errors import ServiceError

ROUTER = "services.router.service:Router"
PLAIN = "services.router.plain:Plain"
REPO_ROOT = Path(__file__).resolve().parents[2]

STATE_ENV = "PROMOTION_SERVICE_STATE"
MODEL_NAME_ENV = "PROMOTION_MODEL_NAME"
WORKERS_ENV = "PROMOTION_WORKERS"
TOKEN_ENV = "PROMOTION_ADMIN_TOKEN"
INITIAL_ROUTES_ENV = "PROMOTION_INITIAL_ROUTES"
ROUTING_KEY_HEADER_ENV = "PROMOTION_ROUTING_KEY_HEADER"
INFERENCE_SAMPLE_ENV = "PROMOTION_INFERENCE_SAMPLE"
PLAIN_VERSION_ENV = "PROMOTION_PLAIN_VERSION"
PLAIN_DIGEST_ENV = "PROMOTION_PLAIN_DIGEST"
FEEDBACK_TOKEN_ENV = "PROMOTION_FEEDBACK_TOKEN"   # = promotion.contract.feedback.FEEDBACK_TOKEN_ENV
SEGMENT_COLUMN_ENV = "PROMOTION_SEGMENT_COLUMN"   # = promotion.contract.feedback.SEGMENT_COLUMN_ENV

__all__ = ["ROUTER", "PLAIN", "REPO_ROOT", "ServiceProcess", "start_service", "free_port", "bentoml_command",
           "service_env", "STATE_ENV", "MODEL_NAME_ENV", "WORKERS_ENV", "TOKEN_ENV", "INITIAL_ROUTES_ENV",
           "ROUTING_KEY_HEADER_ENV", "INFERENCE_SAMPLE_ENV", "PLAIN_VERSION_ENV", "PLAIN_DIGEST_ENV"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def bentoml_command(target: str, host: str, port: int) -> list[str]:
    """The ``bentoml serve`` command line (no shell), using this interpreter's bentoml."""
    exe = Path(sys.executable).with_name("bentoml")
    base = [str(exe)] if exe.exists() else [shutil.which("bentoml") or "bentoml"]
    return [*base, "serve", target, "--host", host, "--port", str(port), "--working-dir", str(REPO_ROOT)]


def service_env(state_dir: str | Path, tracking_uri: str | None, token: str | None, workers: int = 2,
                model_name: str = "fraud-detector", initial_routes: str | None = None,
                routing_key_header: str = "X-Routing-Key", env_extra: dict[str, str] | None = None,
                base: dict[str, str] | None = None, feedback_token: str | None = None,
                segment_column: str | None = None) -> dict[str, str]:
    """The environment the service reads (see docs/service.md). ``feedback_token`` and
    ``segment_column`` set ``PROMOTION_FEEDBACK_TOKEN`` (the only credential ``POST
    /feedback`` accepts) and ``PROMOTION_SEGMENT_COLUMN`` (the request column whose value
    labels are counted under)."""
    state = Path(state_dir).resolve()
    env = dict(os.environ if base is None else base)
    for key in (TOKEN_ENV, INITIAL_ROUTES_ENV):
        env.pop(key, None)  # never inherited by accident
    env.update({
        STATE_ENV: str(state),
        MODEL_NAME_ENV: model_name,
        WORKERS_ENV: str(workers),
        ROUTING_KEY_HEADER_ENV: routing_key_header,
        "BENTOML_HOME": str(state / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
    })
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    if token:
        env[TOKEN_ENV] = token
    if initial_routes:
        env[INITIAL_ROUTES_ENV] = initial_routes
    if feedback_token:
        env[FEEDBACK_TOKEN_ENV] = feedback_token
    if segment_column:
        env[SEGMENT_COLUMN_ENV] = segment_column
    env.update(env_extra or {})
    return env


@dataclass
class ServiceProcess:
    """A running ``bentoml serve``; :meth:`stop` ends its process group."""

    proc: subprocess.Popen
    url: str
    state_dir: Path
    log_path: Path
    workers: int
    target: str = ROUTER
    _log: object = field(default=None, repr=False)
    _descendants: dict = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember_descendants(self) -> None:
        """Note the server's current descendants (psutil handles survive PID reuse checks)."""
        import psutil

        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._descendants[child.pid] = child
        except psutil.Error:
            pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_up(self, timeout_s: float = 90.0, ready: bool = True) -> None:
        """Wait until every worker answers: /readyz (or /healthz) and one heartbeat per worker.

        The plain baseline has no heartbeats: for it, /readyz answering is enough.
        """
        import requests

        if self.target != ROUTER:
            _wait_http(self, "/readyz", timeout_s)
            self.remember_descendants()
            return
        deadline = time.monotonic() + timeout_s
        probe = "/readyz" if ready else "/healthz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"service exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + probe, timeout=2).status_code == 200:
                    view = requests.get(self.url + "/admin/routing", timeout=2).json()
                    beats = view.get("workers", [])
                    if len(beats) >= self.workers and (not ready or all(b.get("ready") for b in beats)):
                        self.remember_descendants()
                        return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        raise ServiceError(f"service at {self.url} not up after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Terminate the server this object started, then every descendant it had."""
        import psutil

        self.remember_descendants()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        # workers run in sessions of their own: end by PID the ones that outlived the server
        for child in self._descendants.values():
            try:
                if child.is_running():
                    child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(self._descendants.values()), timeout=5)
        self._descendants.clear()
        if self._log is not None:
            self._log.close()
            self._log = None


def start_service(port: int, state_dir: str | Path, tracking_uri: str | None, token: str | None,
                  workers: int = 2, env_extra: dict[str, str] | None = None, *, host: str = "127.0.0.1",
                  initial_routes: str | None = None, model_name: str = "fraud-detector",
                  target: str = ROUTER, wait: bool = True, ready: bool = True,
                  timeout_s: float = 90.0, feedback_token: str | None = None,
                  segment_column: str | None = None) -> ServiceProcess:
    """Start ``bentoml serve`` for the router (default) or the plain baseline.

    Output goes to ``<state_dir>/service.log``. With ``wait`` it returns once the service
    answers and every worker reports (``ready``: with its routing applied).
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    env = service_env(state, tracking_uri, token, workers, model_name, initial_routes, env_extra=env_extra,
                      feedback_token=feedback_token, segment_column=segment_column)
    log_path = state / "service.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen(bentoml_command(target, host, port), env=env, cwd=str(REPO_ROOT),
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    svc = ServiceProcess(proc=proc, url=f"http://{host}:{port}", state_dir=state, log_path=log_path,
                         workers=workers, target=target, _log=log)
    if wait:
        try:
            svc.wait_up(timeout_s, ready=ready)
        except BaseException:
            svc.stop()
            raise
    return svc


def _wait_http(svc: ServiceProcess, path: str, timeout_s: float) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise ServiceError(f"service exited with code {svc.proc.returncode}:\n{svc.log_tail()}")
        try:
            if requests.get(svc.url + path, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ServiceError(f"service at {svc.url} not up after {timeout_s:.0f}s:\n{svc.log_tail()}")
