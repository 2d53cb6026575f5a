"""``promotion reconcile`` against a loopback router admin API and the real embedded MLflow."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from promotion.cli import main
from tests.unit.workflows.conftest import make_repo

TOKEN = "admin-token"


class Router:
    """Speaks the router's admin API: GET/POST /admin/routing (POST needs the Bearer token)."""

    def __init__(self, routes: dict[str, float]) -> None:
        self.state = {"generation": 1, "model": "fraud-detector", "routes": routes, "digests": {},
                      "shadow": None,
                      "workers": [{"pid": 101, "generation": 1, "loaded": [1], "seen_at": 0.0, "ready": True}]}
        self.posts: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path != "/admin/routing":
                    return self._send(404, {"error": "not found"})
                self._send(200, outer.state)

            def do_POST(self):
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    return self._send(401, {"error": "unauthorized"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.posts.append(body)
                outer.state.update(routes=body["routes"], digests=body["digests"], shadow=body["shadow"],
                                   generation=outer.state["generation"] + 1)
                self._send(200, outer.state)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def registry_state(tmp_path_factory):
    """An embedded MLflow registry with fraud-detector versions 1 and 2 (built once)."""
    from promotion.registry import Registry

    state = tmp_path_factory.mktemp("state")
    mp = pytest.MonkeyPatch()
    mp.setenv("PROMOTION_STATE", str(state))
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    reg = Registry.for_root(state)
    reg.client.create_registered_model("fraud-detector")
    for _ in (1, 2):
        reg.client.create_model_version("fraud-detector", source=(state / "artifact").as_uri())
    mp.undo()
    return state


@pytest.fixture
def world(tmp_path, monkeypatch, registry_state):
    from promotion.registry import Registry

    monkeypatch.setenv("PROMOTION_STATE", str(registry_state))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PROMOTION_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("PROMOTION_RECONCILE_CONVERGE", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    repo = make_repo(tmp_path / "repo")
    router = Router({"1": 100.0})
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("http://127.0.0.1:3000", router.url))
    reg = Registry.for_root(repo)
    reg.set_alias("fraud-detector", "prod", 1)
    yield repo, router, reg
    router.close()


def reconcile(repo, *args, capsys):
    code = main(["--root", str(repo), "reconcile", "prod", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_in_sync_exits_0(world, capsys):
    repo, router, _ = world
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 0 and "prod: in_sync" in out


def test_drift_in_routing_and_alias_is_reported_not_fixed(world, capsys):
    repo, router, reg = world
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("version: 1", "version: 2"))
    code, out, err = reconcile(repo, "--json", capsys=capsys)
    assert code == 1 and "drift in prod (drift)" in err
    report = json.loads(out)["environments"][0]
    assert report["state"] == "drift" and report["live"] == {"routes": {"1": 100.0}, "champion": 1, "alias": 1}
    assert any("git wants 2" in p for p in report["problems"])
    assert router.posts == [] and reg.alias("fraud-detector", "prod") == 1


def test_converge_moves_traffic_with_the_digest_and_the_alias(world, capsys, tmp_path, monkeypatch):
    repo, router, reg = world
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("version: 1", "version: 2"))
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("PROMOTION_RECONCILE_CONVERGE", "dev,prod")
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 1 and "prod: converged" in out
    assert router.posts == [{"routes": {"2": 100.0}, "digests": {"2": "sha256:" + "0" * 64}, "shadow": None}]
    assert reg.alias("fraud-detector", "prod") == 2 and reg.previous("fraud-detector", "prod") == 1
    assert "| prod | fraud-detector v2 |" in summary.read_text()
    code, out, _ = reconcile(repo, capsys=capsys)
    assert code == 0, out


def test_a_canary_of_the_desired_version_is_left_to_the_rollout(world, capsys):
    repo, router, reg = world
    env_file = repo / "environments" / "prod.yaml"
    env_file.write_text(env_file.read_text().replace("version: 1", "version: 2"))
    router.state["routes"] = {"1": 75.0, "2": 25.0}
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "rollout_in_progress" in out and "canary at 25%" in out
    assert router.posts == []


def test_unreachable_service_is_drift_not_silence(world, capsys):
    repo, router, _ = world
    router.close()
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "prod: unknown" in out and "cannot reach the service" in out


def test_converge_without_the_admin_token_says_so(world, capsys, monkeypatch):
    repo, router, _ = world
    monkeypatch.delenv("PROMOTION_ADMIN_TOKEN")
    router.state["routes"] = {"3": 100.0}
    code, out, _ = reconcile(repo, "--converge", capsys=capsys)
    assert code == 1 and "admin token" in out and router.posts == []


def test_converge_setting_names_environments():
    from promotion.commands.reconcile import converge_allowed

    assert converge_allowed("prod", None, "dev, staging") is False
    assert converge_allowed("staging", None, "dev, staging") is True
    assert converge_allowed("prod", None, "true") is True
    assert converge_allowed("prod", False, "true") is False
