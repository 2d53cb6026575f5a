"""A real router (``bentoml serve``, 2 workers) serving one environment of a test repository.

Usage::

    with serving(repo, "prod", registry, token="admin", traffic=150) as router:
        # environments/prod.yaml now points at router.url (committed), and the router
        # serves the version the file names at 100%, with live client traffic
        ...
        assert router.routes() == {2: 100.0}

On entry: a free port; ``serving.endpoint`` and ``metrics.url`` of
``environments/<env>.yaml`` rewritten to it and committed (a workflow checks out from
git); the service started with the file's version (or ``routes``) as its initial routing,
digests from the registry; optionally a steady client load. On exit: the load stopped and
exactly the process group this started ended (:meth:`ServiceProcess.stop`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import requests
import yaml

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
_URL = re.compile(r"http://127\.0\.0\.1:\d+")


@dataclass
class Router:
    url: str
    env_file: Path
    service: object            # services.router.process.ServiceProcess
    load: object | None        # promotion._internal.loadgen.Load

    def routes(self) -> dict[int, float]:
        """Live routing as the service reports it: {version: weight} for weights > 0."""
        body = requests.get(self.url + "/admin/routing", timeout=10).json()
        return {int(v): float(w) for v, w in (body.get("routes") or {}).items() if float(w) > 0}

    def served(self) -> dict[str, int]:
        """Responses per serving version, as the test clients saw them."""
        return dict(self.load.totals()["served"]) if self.load else {}

    def failed(self) -> int:
        return self.load.totals()["failed"] if self.load else 0


def _rows(n: int = 2000) -> list[dict]:
    from services.fraud import data

    frame = data.generate(n, seed=11)
    return frame[list(data.FEATURES)].to_dict("records")


@contextlib.contextmanager
def serving(repo: Path, env: str, registry, *, token: str | None = None, routes: dict[int, float] | None = None,
            traffic: float = 0.0, workers: int = 2, state_dir: Path | None = None,
            commit: bool = True) -> Iterator[Router]:
    """Start a router for ``environments/<env>.yaml`` of ``repo``; see the module docstring.

    ``traffic``: requests per second of client load while inside (0: none).
    """
    from promotion._internal.loadgen import Load
    from services.router.process import free_port, start_service

    repo = Path(repo)
    env_file = repo / "environments" / f"{env}.yaml"
    desired = yaml.safe_load(env_file.read_text())
    model = desired["model"]["name"]
    routes = routes or {int(desired["model"]["version"]): 100.0}
    token = token or os.environ["PROMOTION_ADMIN_TOKEN"]
    port = free_port()
    text = env_file.read_text()
    assert _URL.search(text), f"{env_file} names no loopback endpoint to rewrite"
    env_file.write_text(_URL.sub(f"http://127.0.0.1:{port}", text))
    if commit:
        subprocess.run(["git", "commit", "-q", "-m", f"point {env} at the test router on :{port}", "--",
                        str(env_file.relative_to(repo))], cwd=repo, check=True, capture_output=True,
                       env={**os.environ, **IDENTITY})
    initial = {"routes": {str(v): w for v, w in routes.items()},
               "digests": {str(v): registry.version(model, v).digest for v in routes}, "shadow": None}
    state = Path(state_dir) if state_dir else repo.parent / f"router-{env}-{port}"
    service = start_service(port, state, registry.uri, token, workers=workers, model_name=model,
                            initial_routes=json.dumps(initial))
    load = None
    try:
        if traffic:
            load = Load(service.url, _rows(), rate=traffic, threads=4).start()
        yield Router(service.url, env_file, service, load)
    finally:
        if load is not None:
            load.stop()
        service.stop()
