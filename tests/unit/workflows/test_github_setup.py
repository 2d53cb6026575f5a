"""``promotion github setup`` and ``push`` against loopback stand-ins of GitHub."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from promotion.cli import main
from tests.unit.workflows.conftest import edit, git, make_repo


class FakeGitHub:
    """Just the REST endpoints setup uses: repository, rulesets, branch protection."""

    def __init__(self) -> None:
        self.rulesets: dict[int, dict] = {}
        self.protection: dict | None = None
        self.calls: list[tuple[str, str, dict | None]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, body=None):
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def handle_any(self, method):
                body = self._body() if method in ("POST", "PUT") else None
                outer.calls.append((method, self.path, body))
                if self.headers.get("Authorization") != "Bearer tok":
                    return self._send(401, {"message": "Bad credentials"})
                p = self.path
                if method == "GET" and p == "/repos/acme/models":
                    return self._send(200, {"full_name": "acme/models", "default_branch": "main"})
                if p == "/repos/acme/models/rulesets":
                    if method == "GET":
                        return self._send(200, [{"id": i, "name": r["name"]} for i, r in outer.rulesets.items()])
                    rid = len(outer.rulesets) + 1
                    outer.rulesets[rid] = {**body, "id": rid}
                    return self._send(201, outer.rulesets[rid])
                m = re.fullmatch(r"/repos/acme/models/rulesets/(\d+)", p)
                if m:
                    rid = int(m.group(1))
                    if method == "PUT":
                        outer.rulesets[rid] = {**body, "id": rid}
                    return self._send(200, outer.rulesets[rid])
                if p == "/repos/acme/models/branches/main/protection":
                    if method == "GET":
                        if outer.protection is None:
                            return self._send(404, {"message": "Branch not protected"})
                        return self._send(200, outer.protection)
                    b = body
                    outer.protection = {
                        "required_status_checks": {"strict": b["required_status_checks"]["strict"],
                                                   "checks": b["required_status_checks"]["checks"]},
                        "enforce_admins": {"enabled": b["enforce_admins"]},
                        "required_pull_request_reviews": b["required_pull_request_reviews"]}
                    return self._send(200, outer.protection)
                self._send(404, {"message": "Not Found"})

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

            def do_PUT(self):
                self.handle_any("PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def writes(self):
        return [c for c in self.calls if c[0] != "GET"]


@pytest.fixture
def gh(monkeypatch):
    fake = FakeGitHub()
    monkeypatch.setenv("GITHUB_API_URL", fake.url)
    monkeypatch.setenv("GITHUB_TOKEN", "tok")
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.fixture
def root(tmp_path):
    return make_repo(tmp_path / "repo")


def setup(root, *args):
    return main(["--root", str(root), "github", "setup", "--repo", "acme/models", *args])


def test_dry_run_prints_the_difference_and_changes_nothing(gh, root, capsys):
    assert setup(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "ruleset 'promotion' does not exist; would create:" in out
    # prod's policy asks for 2 approvals and code owners: the strictest wins
    assert "required_approving_review_count: (none) -> 2" in out
    assert "require_code_owner_review: (none) -> true" in out
    assert "required_checks: (none) -> [gates, test, workflows]" in out
    assert "dry run: nothing changed" in out
    assert gh.writes() == []


def test_apply_creates_the_ruleset_then_is_idempotent(gh, root, capsys):
    assert setup(root, "--bypass-app-id", "99") == 0
    assert "applied" in capsys.readouterr().out
    (ruleset,) = gh.rulesets.values()
    rules = {r["type"]: r.get("parameters") for r in ruleset["rules"]}
    assert rules["pull_request"]["required_approving_review_count"] == 2
    assert rules["pull_request"]["dismiss_stale_reviews_on_push"] is True
    assert rules["pull_request"]["require_code_owner_review"] is True
    assert [c["context"] for c in rules["required_status_checks"]["required_status_checks"]] == ["gates", "test", "workflows"]
    assert ruleset["conditions"]["ref_name"]["include"] == ["refs/heads/main"]
    assert ruleset["bypass_actors"] == [{"actor_id": 99, "actor_type": "Integration", "bypass_mode": "always"}]
    n = len(gh.writes())
    assert setup(root, "--bypass-app-id", "99") == 0
    assert "is up to date" in capsys.readouterr().out and len(gh.writes()) == n


def test_a_policy_change_shows_up_as_a_ruleset_update(gh, root, capsys):
    setup(root)
    capsys.readouterr()
    edit(root, "policies/prod.yaml", "required: 2", "required: 3", "stricter")
    assert setup(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "would change:" in out and "required_approving_review_count: 2 -> 3" in out
    assert out.count(" -> ") == 1
    setup(root)
    assert gh.writes()[-1][0] == "PUT"


def test_classic_branch_protection(gh, root, capsys):
    assert setup(root, "--mode", "branch-protection", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["applied"] is True and not result["exists"]
    body = gh.writes()[0][2]
    assert body["required_pull_request_reviews"]["required_approving_review_count"] == 2
    assert body["required_pull_request_reviews"]["dismiss_stale_reviews"] is True
    assert setup(root, "--mode", "branch-protection", "--dry-run") == 0
    assert "is up to date" in capsys.readouterr().out


def test_bad_token_is_one_line_exit_1(gh, root, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    assert setup(root) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: GitHub API GET /repos/acme/models: 401 Bad credentials") and err.count("\n") == 1


# -- push ------------------------------------------------------------------------------

@pytest.fixture
def clones(tmp_path):
    origin = make_repo(tmp_path / "src")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return bare, work


def push(work, bare, monkeypatch):
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    for k, v in {"GIT_AUTHOR_NAME": "bot", "GIT_AUTHOR_EMAIL": "bot@x", "GIT_COMMITTER_NAME": "bot",
                 "GIT_COMMITTER_EMAIL": "bot@x"}.items():
        monkeypatch.setenv(k, v)
    return main(["--root", str(work), "github", "push", "--remote", bare.as_uri()])


def test_push_sends_the_record_commit(clones, monkeypatch, capsys):
    bare, work = clones
    (work / "environments" / "records").mkdir(parents=True, exist_ok=True)
    (work / "environments" / "records" / "r1.json").write_text("{}")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "record")
    assert push(work, bare, monkeypatch) == 0
    assert "pushed 1 commit(s) to main" in capsys.readouterr().out
    assert git(bare, "log", "-1", "--format=%s", "main") == "record"


def test_push_rebases_over_a_concurrent_merge(clones, tmp_path, monkeypatch, capsys):
    bare, work = clones
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    edit(other, "environments/dev.yaml", "version: 1", "version: 2", "promote dev")
    git(other, "push", "-q", "origin", "main")
    edit(work, "environments/prod.yaml", "version: 1", "version: 1  # reverted", "revert prod")
    assert push(work, bare, monkeypatch) == 0
    assert git(bare, "log", "--format=%s", "-2", "main").splitlines() == ["revert prod", "promote dev"]


def test_push_with_nothing_new(clones, monkeypatch, capsys):
    bare, work = clones
    assert push(work, bare, monkeypatch) == 0
    assert "nothing to push" in capsys.readouterr().out


def test_push_over_https_needs_the_bot_token(clones, monkeypatch, capsys):
    _, work = clones
    monkeypatch.delenv("PROMOTION_BOT_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    code = main(["--root", str(work), "github", "push", "--remote", "https://github.invalid/acme/models.git"])
    assert code == 2 and "PROMOTION_BOT_TOKEN" in capsys.readouterr().err
