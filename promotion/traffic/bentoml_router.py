"""Traffic backend for the project's BentoML router (``services/router``), over HTTP.

Usage::

    from promotion.traffic.bentoml_router import BentoMLRouter
    backend = BentoMLRouter("http://127.0.0.1:3000", token=os.environ["PROMOTION_ADMIN_TOKEN"])
    r = backend.set_routing({1: 95, 2: 5}, {1: "sha256:…", 2: "sha256:…"})
    backend.wait_applied(r.generation, timeout_s=5)

Every failure becomes a one-line :class:`~promotion.errors.ServiceError`.
"""

from __future__ import annotations

import time
from typing import Any

from promotion.errors import ServiceError
from promotion.traffic.base import Routing

ROUTING_PATH = "/admin/routing"


class BentoMLRouter:
    """:class:`~promotion.traffic.base.TrafficBackend` over the router's admin endpoint."""

    kind = "bentoml"

    def __init__(self, endpoint: str, token: str | None, timeout_s: float = 10.0, session=None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._session = session

    @property
    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _call(self, method: str, path: str, json_body: Any = None, timeout_s: float | None = None) -> dict:
        import requests

        url = self.endpoint + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            resp = self.session.request(method, url, json=json_body, headers=headers,
                                        timeout=timeout_s or self.timeout_s)
        except requests.RequestException as exc:
            raise ServiceError(f"{method} {url}: cannot reach the service ({exc.__class__.__name__})") from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code != 200:
            detail = data.get("error") if isinstance(data, dict) else None
            if isinstance(detail, dict):
                detail = f"{detail.get('kind', 'error')}: {detail.get('message', '')}"
            if not detail:
                text = resp.text.strip()
                detail = text.splitlines()[0][:200] if text else resp.reason
            raise ServiceError(f"{method} {url}: HTTP {resp.status_code}: {detail}")
        if not isinstance(data, dict):
            raise ServiceError(f"{method} {url}: answered with something that is not a JSON object")
        return data

    def routing(self) -> Routing:
        try:
            return Routing.from_json(self._call("GET", ROUTING_PATH))
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"GET {self.endpoint}{ROUTING_PATH}: malformed routing ({exc})") from exc

    def set_routing(self, routes: dict[int, float], digests: dict[int, str],
                    shadow: dict[str, Any] | None = None) -> Routing:
        if not self.token:
            raise ServiceError(f"{self.endpoint}: no admin token configured; routing not changed")
        body = {"routes": {str(int(v)): float(w) for v, w in routes.items()},
                "digests": {str(int(v)): d for v, d in digests.items()},
                "shadow": shadow}
        # verifying a new version's artifact can take a while the first time
        data = self._call("POST", ROUTING_PATH, body, timeout_s=max(self.timeout_s, 120.0))
        try:
            return Routing.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"POST {self.endpoint}{ROUTING_PATH}: malformed answer ({exc})") from exc

    def wait_applied(self, generation: int, timeout_s: float) -> float:
        start = time.monotonic()
        last: Routing | None = None
        while True:
            try:
                last = self.routing()
                if last.workers and all(w.generation >= generation for w in last.workers):
                    return time.monotonic() - start
            except ServiceError:
                pass
            if time.monotonic() - start >= timeout_s:
                behind = [w.pid for w in (last.workers if last else ()) if w.generation < generation]
                state = f"workers behind: {behind}" if last and last.workers else "no worker reported"
                raise ServiceError(f"{self.endpoint}: routing generation {generation} not applied by every "
                                   f"worker within {timeout_s:g}s ({state})")
            time.sleep(0.02)

    def is_online(self) -> bool:
        import requests

        try:
            return self.session.get(self.endpoint + "/healthz", timeout=min(self.timeout_s, 3.0)).status_code == 200
        except requests.RequestException:
            return False
