"""A stand-in for the GitOps agent: applies the HTTPRoute committed on a git remote to a local Envoy.

Argo CD or Flux would apply the route to a cluster's Gateway; here a thread polls the
remote branch (as the agent does), reads the committed HTTPRoute, translates its
backendRefs weights, header match and mirror into the route configuration the envoy
backend writes (:func:`promotion.traffic.envoy.render_route`), and replaces Envoy's
watched route file. It never reads the rollout's working tree::

    agent = GitOpsAgent(remote_git_dir, "main", spec, route_path, envoy_route_file).start()
    ...
    agent.stop()
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import yaml

from promotion.traffic import envoy
from promotion.traffic.k8s_render import RouteSpec, parse_httproute


class GitOpsAgent:
    def __init__(self, remote: Path, branch: str, spec: RouteSpec, route_path: str, route_file: Path,
                 interval_s: float = 0.2) -> None:
        self.remote, self.branch, self.spec = Path(remote), branch, spec
        self.route_path, self.route_file, self.interval_s = route_path, Path(route_file), interval_s
        self.applied: list[tuple[str, int, dict]] = []  # (commit, generation, weights) in order
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "GitOpsAgent":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _git(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "--git-dir", str(self.remote), *args], capture_output=True, text=True)

    def sync_once(self) -> None:
        head = self._git("rev-parse", f"refs/heads/{self.branch}")
        if head.returncode != 0:
            return
        commit = head.stdout.strip()
        if self.applied and self.applied[-1][0] == commit:
            return
        shown = self._git("show", f"{commit}:{self.route_path}")
        if shown.returncode != 0:
            return  # nothing committed yet
        split = parse_httproute(self.spec, yaml.safe_load(shown.stdout), self.route_path)
        if self.applied and self.applied[-1][1] == split.generation:
            self.applied.append((commit, split.generation, split.weights))
            return  # another file changed; the route is as applied
        config = envoy.render_route(split.weights, split.generation, mirror=split.mirror, canary=split.canary,
                                    canary_header=self.spec.canary_header)
        envoy._atomic_write(self.route_file, config)
        self.applied.append((commit, split.generation, split.weights))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync_once()
            except Exception as exc:  # a test helper: keep watching, the test reads the errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)
