"""Readiness without routing, routing that survives a restart of ``bentoml serve``, and
stopping that leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest
import requests

from promotion.traffic.bentoml_router import BentoMLRouter
from services.router.process import free_port, start_service
from tests.support.router_env import FEATURES, TOKEN, fraud_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    return fraud_registry(tmp_path_factory.getbasetemp() / "registry")


def test_not_ready_without_routing_then_routing_survives_a_restart(fr, tmp_path):
    port = free_port()
    svc = start_service(port, tmp_path, fr.uri, TOKEN, workers=2, ready=False)
    try:
        assert requests.get(svc.url + "/readyz", timeout=5).status_code == 503
        r = requests.post(svc.url + "/predict", json={"features": FEATURES}, timeout=5)
        assert r.status_code == 503 and r.json()["error"]["kind"] == "unavailable"
        backend = BentoMLRouter(svc.url, TOKEN)
        state = backend.set_routing({1: 20, 2: 80}, {1: fr.digests[1], 2: fr.digests[2]})
        backend.wait_applied(state.generation, timeout_s=30)
        assert requests.get(svc.url + "/readyz", timeout=5).status_code == 200
    finally:
        svc.stop()
    svc = start_service(port, tmp_path, fr.uri, TOKEN, workers=2)
    try:
        view = BentoMLRouter(svc.url, TOKEN).routing()
        assert view.generation == state.generation and view.routes == {1: 20.0, 2: 80.0}
        assert len(view.workers) == 2 and all(w.generation == state.generation for w in view.workers)
        assert {requests.post(svc.url + "/predict", json={"features": FEATURES}, timeout=5).json()["version"]
                for _ in range(40)} == {1, 2}
    finally:
        svc.stop()


def test_admin_writes_are_refused_when_no_token_is_configured(fr, tmp_path):
    svc = start_service(free_port(), tmp_path, fr.uri, None, workers=2, initial_routes=None, ready=False)
    try:
        r = requests.post(svc.url + "/admin/routing", json=fr.body({1: 100}),
                          headers={"Authorization": "Bearer "}, timeout=10)
        assert r.status_code == 401 and "no admin token" in r.json()["error"]["message"]
        assert requests.get(svc.url + "/admin/routing", timeout=5).json()["generation"] == 0
    finally:
        svc.stop()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is gone for every purpose but its exit status
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_each_worker_has_an_idle_priority_shadow_process_and_a_killed_server_leaves_nothing(fr, tmp_path):
    port = free_port()
    svc = start_service(port, tmp_path, fr.uri, TOKEN, workers=2, initial_routes=json.dumps(fr.body({1: 100})))
    try:
        workers = requests.get(svc.url + "/admin/routing", timeout=5).json()["workers"]
        worker_pids = [w["pid"] for w in workers]
        shadow_pids = [w["shadow_pid"] for w in workers]
        assert len(set(worker_pids)) == 2 and len(set(shadow_pids)) == 2 and None not in shadow_pids
        assert all(os.sched_getscheduler(pid) == os.SCHED_IDLE for pid in shadow_pids)
        os.kill(svc.pid, signal.SIGKILL)  # the server dies without stopping its workers
        svc.proc.wait(timeout=10)
        assert not any(_gone(pid) for pid in worker_pids)  # orphaned, in sessions of their own
    finally:
        svc.stop()
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in worker_pids + shadow_pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in worker_pids + shadow_pids)
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))
