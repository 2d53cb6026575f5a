"""Fixtures for the governance tests: a pull request branch in a real git repository, and a
loopback HTTP listener standing in for a host the pull request's author controls."""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class PullRequest:
    """A branch ``pr`` off ``main`` in ``root``; edits are committed on it."""

    root: Path
    base: str

    def edit(self, rel: str, old: str, new: str) -> "PullRequest":
        path = self.root / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))
        return self

    def write(self, rel: str, text: str) -> "PullRequest":
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return self

    def commit(self, message: str = "pull request change") -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    @property
    def head(self) -> str:
        return git(self.root, "rev-parse", "HEAD")


@pytest.fixture
def pull(repo) -> PullRequest:
    """A pull request branch of ``repo``, checked out (the checkout the gate is given)."""
    base = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "pr")
    return PullRequest(repo, base)


@dataclass
class Listener:
    """Every request a loopback HTTP server received (method, path, headers)."""

    url: str
    requests: list = field(default_factory=list)

    @property
    def authorizations(self) -> list[str]:
        return [r["headers"].get("Authorization", "") for r in self.requests]


@pytest.fixture
def attacker():
    """An HTTP server the attacker controls: it records everything and answers 404."""
    received: list = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _any(self):
            received.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
            body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "not found"}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Listener(f"http://127.0.0.1:{server.server_port}", received)
    finally:
        server.shutdown()
        server.server_close()
