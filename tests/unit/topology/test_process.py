"""The launchers' process handling: a server that dies says why, one that ignores SIGTERM
is still stopped, a missing binary is named; the scale-out demo's workspace validates."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from promotion.topology.process import Proc, StartError, popen, stop, wait_ready


def _start(tmp_path, code: str, **kw) -> Proc:
    log = tmp_path / "server.log"
    return Proc("server", popen("server", [sys.executable, "-c", code], log, {}), log, **kw)


def test_a_server_that_exits_while_starting_names_its_exit_code_and_log(tmp_path):
    proc = _start(tmp_path, "import sys; print('port 5432 already in use', flush=True); sys.exit(3)")
    with pytest.raises(StartError, match=r"server exited with code 3:\nport 5432 already in use"):
        wait_ready(proc, lambda: False, timeout_s=20)


def test_a_server_that_never_answers_times_out_with_its_log(tmp_path):
    proc = _start(tmp_path, "import time; print('still migrating', flush=True); time.sleep(60)")
    try:
        with pytest.raises(StartError, match=r"server not up after 1s:\nstill migrating"):
            wait_ready(proc, lambda: 1 / 0, timeout_s=1)  # a ready() that raises is "not yet"
    finally:
        stop(proc)


def test_a_server_ignoring_sigterm_is_killed_after_its_grace(tmp_path):
    proc = _start(tmp_path, "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                            "print('up', flush=True); time.sleep(60)", stop_signal=signal.SIGTERM, grace_s=0.5)
    wait_ready(proc, lambda: "up" in proc.tail(), timeout_s=20)
    t = time.monotonic()
    proc.stop()
    assert proc.popen.returncode == -signal.SIGKILL and time.monotonic() - t < 5


def test_missing_binaries_are_named(tmp_path):
    from promotion.topology.prometheus import start_prometheus

    with pytest.raises(StartError, match=r"/nonexistent/prometheus is not installed \(make system-deps"):
        start_prometheus(["127.0.0.1:1"], tmp_path, binary="/nonexistent/prometheus")
    with pytest.raises(StartError, match=r"server: cannot start /nonexistent/server"):
        popen("server", ["/nonexistent/server"], tmp_path / "log", {})


def test_the_scale_out_demo_workspace_serves_prod_through_envoy(tmp_path):
    from promotion.analysis import AnalysisSettings
    from promotion.config import Project
    from promotion.demo import prepare_workspace
    from promotion.demo_envoy import PROD_LATENCY_FLOOR
    from promotion.topology.envoy import envoy_settings

    replicas = {1: ["http://127.0.0.1:3101", "http://127.0.0.1:3102"], 2: ["http://127.0.0.1:3201"]}
    serving = envoy_settings(tmp_path / "envoy", replicas)
    ws = tmp_path / "ws"
    ws.mkdir()
    prepare_workspace(ws, {"staging": 3999}, tmp_path / "window.parquet", blocks={"prod": {
        "serving": serving, "metrics": {"source": "prometheus", "url": "http://127.0.0.1:9090",
                                        "selector": 'job="fraud"'}}},
        analysis={"prod": {"latency_min_added_ms": PROD_LATENCY_FLOOR}})
    project = Project(ws)
    prod, staging = project.environment("prod"), project.environment("staging")
    assert prod.serving.get("kind") == "envoy" and prod.endpoint == serving["endpoint"]
    assert {int(v): u for v, u in prod.serving.get("replicas").items()} == replicas
    assert staging.endpoint == "http://127.0.0.1:3999"
    # prod's replicas share two cores with every other server: a higher latency floor there only
    floors = {env.name: AnalysisSettings.from_policy(project.policy_for(env)).latency_min_added_ms
              for env in (prod, staging)}
    assert floors == {"prod": 10, "staging": 3}


def test_an_analysis_setting_the_policy_does_not_hold_is_refused(tmp_path):
    from promotion.demo import prepare_workspace

    with pytest.raises(ValueError, match=r"policies/prod.yaml: analysis.latency_floor is on 0 lines"):
        prepare_workspace(tmp_path, {}, tmp_path / "window.parquet", analysis={"prod": {"latency_floor": "1"}})


def test_a_proxied_artifact_location_maps_to_its_bucket_prefix():
    from promotion.topology.stores import Stack

    stack = Stack(None, None, None, "http://127.0.0.1:5000", "s3://models/mlartifacts")
    assert stack.object_prefix("mlflow-artifacts:/1/models/m-abc/artifacts") == "mlartifacts/1/models/m-abc/artifacts/"
    with pytest.raises(StartError, match="not a proxied artifact location"):
        stack.object_prefix("s3://elsewhere/1/models")


def test_a_router_whose_port_was_taken_starts_again_on_another_port(tmp_path, monkeypatch):
    """free_port() can only say a port was free: another process may bind it first."""
    from promotion.errors import ServiceError
    from promotion.topology import replicas

    started, stopped = [], []

    class Started:
        def __init__(self, port, root):
            self.port, self.log_path = port, root / "service.log"
            root.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text("OSError: [Errno 98] Address already in use\n" if not started else "up\n")
            started.append(self)

        def wait_up(self, timeout_s, ready=True):
            if "in use" in self.log_path.read_text():
                raise ServiceError("service exited with code 1")

        def log_tail(self, lines=40):
            return self.log_path.read_text()

        def stop(self):
            stopped.append(self.port)

    ports = iter([4001, 4002])
    monkeypatch.setattr(replicas, "free_port", lambda: next(ports))
    monkeypatch.setattr(replicas, "start_service", lambda port, root, *a, **kw: Started(port, root))
    router = replicas.Router(tmp_path / "r", "http://127.0.0.1:5000", "t", {"workers": 1}).start()
    assert router.wait(1).port == 4002 and stopped == [4001]
    assert "in use" in (tmp_path / "r" / "service.port-taken-1.log").read_text()

    # another failure is not retried: it is reported
    monkeypatch.setattr(replicas, "free_port", lambda: 4003)
    monkeypatch.setattr(replicas, "start_service", lambda port, root, *a, **kw: _Broken())
    with pytest.raises(ServiceError, match="no model"):
        replicas.Router(tmp_path / "b", "http://127.0.0.1:5000", "t").start().wait(1)


class _Broken:
    log_path = None

    def wait_up(self, timeout_s, ready=True):
        from promotion.errors import ServiceError

        raise ServiceError("service exited with code 1: no model")

    def log_tail(self, lines=40):
        return "no model"

    def stop(self):
        pass
