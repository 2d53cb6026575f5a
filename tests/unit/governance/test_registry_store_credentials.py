"""A registry named by an environment file (a pull request can edit it) gets no credential
of the machine: no database server (libpq answers it with $PGPASSWORD), no AWS-signed or
plugin-authenticated tracking requests. The attacker is a loopback listener."""

from __future__ import annotations

import socket
import threading

import pytest

from promotion.errors import RegistryError
from promotion.registry import Registry


@pytest.fixture
def tcp_listener():
    """A loopback TCP port that counts the connections it gets (a database the file names)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    accepted: list = []
    stop = threading.Event()

    def run():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn.recv(64))
            conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


def test_a_database_registry_named_by_the_file_is_refused_before_connecting(tmp_path, monkeypatch, tcp_listener):
    port, accepted = tcp_listener
    monkeypatch.setenv("PGPASSWORD", "operator-db-password")
    reg = Registry.for_root(tmp_path, f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow")
    with pytest.raises(RegistryError) as caught:
        reg.version("fraud-detector", 1)
    assert caught.value.diagnostics() == (
        f"registry postgresql+psycopg2://127.0.0.1:{port}/mlflow (from the environment file's "
        "registry.tracking_uri): a postgresql registry store is named by $MLFLOW_TRACKING_URI only (its client "
        "would use this machine's credentials, e.g. $PGPASSWORD or ~/.pgpass, for a host the file chose); "
        "set MLFLOW_TRACKING_URI")
    assert accepted == []


@pytest.mark.parametrize("var, value", [("MLFLOW_TRACKING_AWS_SIGV4", "true"), ("MLFLOW_TRACKING_AUTH", "my_auth")])
def test_signed_tracking_requests_never_go_to_a_host_the_file_chose(tmp_path, monkeypatch, attacker, var, value):
    monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOPERATOR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "operator-secret")
    reg = Registry.for_root(tmp_path, attacker.url)
    with pytest.raises(RegistryError) as caught:
        reg.version("fraud-detector", 1)
    assert f"refusing to send ${var}" in caught.value.diagnostics()
    assert attacker.requests == []
