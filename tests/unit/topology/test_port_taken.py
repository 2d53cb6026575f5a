"""A port picked free can be bound by another process before the server binds it: every
launcher (Envoy, Prometheus, PostgreSQL, SeaweedFS, mlflow server) then comes up on a new
port. Each test holds the first port the launcher picks (the picker is patched to hand
out that port first) and starts the real binary; PostgreSQL, SeaweedFS and mlflow server
are checked where their stack is started anyway (tests/integration/test_registry_postgres_s3.py)."""

from __future__ import annotations

import socket

import pytest

from promotion.contract.launch import free_port
from promotion.topology.process import StartError


@pytest.fixture
def taken():
    """A port another process (this test) listens on, and a picker that hands it out first."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    picked: list[int] = []

    def picker() -> int:
        picked.append(port if not picked else free_port())
        return picked[-1]

    picker.port, picker.picked = port, picked
    yield picker
    sock.close()


def _taken_log(folder, name: str) -> str:
    return (folder / f"{name}.port-taken-1").read_text().lower()


def test_prometheus_comes_up_on_another_port(tmp_path, monkeypatch, taken):
    from promotion.topology import prometheus

    monkeypatch.setattr(prometheus, "free_port", taken)
    prom = prometheus.start_prometheus(["127.0.0.1:1"], tmp_path)
    try:
        assert prom.url != f"http://127.0.0.1:{taken.port}" and len(taken.picked) == 2
        assert "address already in use" in _taken_log(tmp_path, "prometheus.log")
        import requests

        assert requests.get(prom.url + "/-/ready", timeout=5).status_code == 200
    finally:
        prom.stop()


def _envoy_repo(tmp_path, settings):
    from tests.conftest import make_repo
    from tests.support.envoy import point_environment

    repo = make_repo(tmp_path / "repo")
    point_environment(repo, "prod", settings, amend=True)
    return repo


def test_envoy_comes_up_on_new_ports_the_environment_file_names(tmp_path, taken):
    from promotion.config import Project
    from promotion.topology.envoy import envoy_settings, new_ports, start_envoy
    from tests.support.envoy import point_environment

    settings = {**envoy_settings(tmp_path / "envoy", {1: ["http://127.0.0.1:1"]}),
                "endpoint": f"http://127.0.0.1:{taken.port}"}
    repo = _envoy_repo(tmp_path, settings)

    # without a way to write new ports, the operator is told which field to change
    with pytest.raises(StartError, match=r"prod: envoy cannot bind serving.endpoint \(http://127.0.0.1:\d+\) .*"
                                         r"another process took the port; pick others in environments/prod.yaml"):
        start_envoy(Project(repo).environment("prod"), tmp_path / "envoy")

    def repick():
        point_environment(repo, "prod", new_ports(settings))
        return Project(repo).environment("prod")

    proxy = start_envoy(Project(repo).environment("prod"), tmp_path / "envoy", repick=repick, concurrency=1)
    try:
        env = Project(repo).environment("prod")
        assert proxy.url == env.endpoint != settings["endpoint"] and proxy.env.endpoint == env.endpoint
        assert "address already in use" in _taken_log(tmp_path / "envoy", "envoy.log")
        import requests

        assert requests.get(proxy.admin + "/ready", timeout=5).status_code == 200
        # the listener is Envoy's: an unknown upstream answers 503 from Envoy, not a refused connection
        assert requests.get(proxy.url + "/healthz", timeout=5).headers.get("server") == "envoy"
    finally:
        proxy.stop()


def test_envoy_concurrency_follows_the_cores():
    from promotion.topology.envoy import default_concurrency

    assert [default_concurrency(n) for n in (1, 2, 3, 4, 8)] == [1, 2, 3, 4, 4]
