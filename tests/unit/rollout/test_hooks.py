"""Lifecycle hooks: what a command sees, timeouts that kill the whole group, HTTP verdicts,
and the policy problems a schema cannot name."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import pytest

from promotion.config import Project
from promotion.errors import ConfigError
from promotion.hooks import Hook, HookContext, run_hook


def _ctx(tmp_path, endpoint="http://127.0.0.1:9", token=None) -> HookContext:
    return HookContext(env="prod", model="m", version=7, champion=6, endpoint=endpoint, root=tmp_path,
                       admin_token=token)


def test_command_sees_only_path_its_context_and_the_named_hook_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMOTION_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-secret")
    monkeypatch.setenv("PROMOTION_HOOK_KEY", "named")
    monkeypatch.setenv("PROMOTION_HOOK_OTHER", "not-named")
    hook = Hook("pre_rollout", "env", 5, command=("sh", "-c", "env | sort"), env=("PROMOTION_HOOK_KEY",))
    result = run_hook(hook, _ctx(tmp_path))
    assert result.passed and result.exit_code == 0
    assert result.output_sha256.startswith("sha256:") and result.output_bytes > 0
    assert "PROMOTION_HOOK_KEY=named" in result.message and "PROMOTION_HOOK_VERSION=7" in result.message
    for leaked in ("admin-secret", "gh-secret", "not-named"):
        assert leaked not in result.message


def test_a_command_past_its_timeout_fails_and_its_whole_group_is_killed(tmp_path):
    marker = tmp_path / "child.pid"
    hook = Hook("during_step", "slow", 0.5, command=("sh", "-c", f"sleep 30 & echo $! > {marker}; wait"))
    start = time.monotonic()
    result = run_hook(hook, _ctx(tmp_path))
    assert not result.passed and "timed out after 0.5s" in result.message
    assert time.monotonic() - start < 5
    child = int(marker.read_text())
    time.sleep(0.2)
    stat = Path(f"/proc/{child}/stat")
    # the background child died with its hook (gone, or a zombie nobody has reaped yet)
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_nonzero_exit_and_missing_program_fail(tmp_path):
    assert run_hook(Hook("pre_rollout", "x", 5, command=("sh", "-c", "echo nope; exit 3")), _ctx(tmp_path)).message \
        == "exited 3: nope"
    missing = run_hook(Hook("pre_rollout", "x", 5, command=("./no-such-script",)), _ctx(tmp_path))
    assert not missing.passed and "cannot start './no-such-script'" in missing.message


class _Server(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Server.seen.append((self.path, dict(self.headers), body))
        status = 500 if b"fail" in body else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Server.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_canary_pinned_http_hook_sends_n_requests_with_the_pin_and_token(tmp_path, server):
    hook = Hook("pre_rollout", "smoke", 5, http={"path": "/predict", "canary": True, "requests": 3, "body": {"a": 1}})
    result = run_hook(hook, _ctx(tmp_path, server, token="tok"))
    assert result.passed and result.requests == 3 and result.status == 200
    assert len(_Server.seen) == 3
    path, headers, _ = _Server.seen[0]
    assert path == "/predict" and headers["X-Promotion-Version"] == "7" and headers["Authorization"] == "Bearer tok"


def test_http_hook_fails_on_non_2xx_unreachable_and_without_the_token(tmp_path, server):
    bad = run_hook(Hook("pre_rollout", "s", 5, http={"path": "/p", "body": {"x": "fail"}}), _ctx(tmp_path, server))
    assert not bad.passed and bad.status == 500 and "answered 500 on request 1 of 1" in bad.message
    down = run_hook(Hook("pre_rollout", "s", 2, http={"path": "/p"}), _ctx(tmp_path, "http://127.0.0.1:9"))
    assert not down.passed and "ConnectionError" in down.message
    untokened = run_hook(Hook("pre_rollout", "s", 2, http={"path": "/p", "canary": True}), _ctx(tmp_path, server))
    assert not untokened.passed and "admin token" in untokened.message and _Server.seen == [
        s for s in _Server.seen if "Authorization" not in s[1]]


def _policy_with(repo, hooks_yaml: str):
    path = repo / "policies" / "prod.yaml"
    base = getattr(_policy_with, "base", None) or path.read_text()
    _policy_with.base = base
    path.write_text(base + hooks_yaml)
    project = Project(repo)
    return project.policy_for(project.environment("prod"))


def test_policy_problems_name_file_line_and_field(repo):
    _policy_with.base = None
    with pytest.raises(ConfigError) as err:
        _policy_with(repo, "hooks:\n  pre_rollout:\n    - name: smoke\n      timeout_s: 5\n"
                           "      http: {url: 'https://hooks.example.com/x', canary: true}\n")
    assert "policies/prod.yaml:" in str(err.value) and "hooks.pre_rollout[0].http.canary" in str(err.value)
    with pytest.raises(ConfigError) as err:
        _policy_with(repo, "hooks:\n  post_promotion:\n    - {name: x, timeout_s: 5, command: [a], env: [GITHUB_TOKEN]}\n")
    assert "hooks.post_promotion[0].env[0]" in str(err.value)


def test_hooks_parse_into_typed_hooks(repo):
    _policy_with.base = None
    policy = _policy_with(repo, "hooks:\n  pre_rollout:\n    - {name: smoke, timeout_s: 5, http: {path: /predict, canary: true}}\n")
    assert [h.name for h in policy.hooks["pre_rollout"]] == ["smoke"]
