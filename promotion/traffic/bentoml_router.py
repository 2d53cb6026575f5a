"""Traffic backend for the project's BentoML router (``services/router``), over HTTP.

Usage::

    from promotion.traffic.bentoml_router import BentoMLRouter
    backend = BentoMLRouter("http://127.0.0.1:3000", token=os.environ["PROMOTION_ADMIN_TOKEN"])
    backend.prepare(1, "sha256:…"); backend.prepare(2, "sha256:…")
    applied = backend.set_weights({1: 95, 2: 5})
    backend.verify(applied, timeout_s=5)

The contract's names map onto the router's admin API: :meth:`prepare` remembers the
digest each version must have, and :meth:`set_weights` sends it with the weights, so the
router verifies every artifact before it changes anything (HTTP 409 ``digest``
otherwise); :meth:`verify` waits until every worker reports the new generation. The
router's own calls (:meth:`set_routing`, :meth:`routing`, :meth:`wait_applied`) stay
available for tools that speak to it directly.

Every failure becomes a one-line :class:`~promotion.errors.ServiceError` that says what the
router refused and whether routing changed (it never does on a refusal)::

    POST …/admin/routing: HTTP 409: generation: routing changed since generation 6: … (routing not changed: …)
    POST …/admin/routing: HTTP 413: too_large: body: larger than 65536 bytes … (routing not changed: …)
    GET …/admin/routing: HTTP 503: routing_file: /var/lib/promotion/prod/routing.json: is not valid JSON …
"""

from __future__ import annotations

import time
from typing import Any

from promotion.contract.routing import ROUTING_PATH, Routing, Shadow, request_body
from promotion.errors import ServiceError
from promotion.traffic.base import Applied, Current, Mirror, check_mirror, check_weights

# What an operator does next, by the router's (status, error kind); routing is unchanged.
_HINTS = {
    (401, "auth"): "check the admin token (serving.admin_token_env) against the service's PROMOTION_ADMIN_TOKEN",
    (409, "generation"): "routing not changed: someone else changed it meanwhile; read it again before retrying",
    (409, "digest"): "routing not changed: the artifact does not match its registered digest",
    (413, "too_large"): "routing not changed: the request is larger than the router accepts",
    (503, "routing_file"): "the router keeps serving what it applied; a routing write (rollout, rollback) "
                           "replaces the file",
}


class BentoMLRouter:
    """:class:`~promotion.traffic.base.TrafficBackend` over the router's admin endpoint."""

    kind = "bentoml"
    apply_timeout_s = 5.0

    def __init__(self, endpoint: str, token: str | None, timeout_s: float = 10.0, session=None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._session = session
        self._digests: dict[int, str] = {}  # version -> digest it must serve, from prepare()

    @classmethod
    def from_environment(cls, env) -> "BentoMLRouter":
        """The router of ``env`` (``serving.endpoint``, token from ``serving.admin_token_env``)."""
        return cls(env.endpoint, env.admin_token())

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
        except (ValueError, RecursionError):
            data = None
        if resp.status_code != 200:
            raise ServiceError(f"{method} {url}: HTTP {resp.status_code}: {_detail(resp, data)}")
        if not isinstance(data, dict):
            raise ServiceError(f"{method} {url}: answered with something that is not a JSON object")
        return data

    def routing(self) -> Routing:
        try:
            return Routing.from_json(self._call("GET", ROUTING_PATH), view=True)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"GET {self.endpoint}{ROUTING_PATH}: malformed routing ({exc})") from exc

    def set_routing(self, routes: dict[int, float], digests: dict[int, str],
                    shadow: Shadow | dict[str, Any] | None = None, *, based_on: int | None = None) -> Routing:
        """Change the split. ``based_on``: the generation this change was computed from (as
        read with :meth:`routing`); the router refuses it (409) if routing changed since."""
        if not self.token:
            raise ServiceError(f"{self.endpoint}: no admin token configured; routing not changed")
        body = request_body(routes, digests, shadow, based_on)
        # verifying a new version's artifact can take a while the first time
        data = self._call("POST", ROUTING_PATH, body, timeout_s=max(self.timeout_s, 120.0))
        try:
            return Routing.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ServiceError(f"POST {self.endpoint}{ROUTING_PATH}: malformed answer ({exc})") from exc

    def wait_applied(self, generation: int, timeout_s: float) -> float:
        start = time.monotonic()
        last: Routing | None = None
        error: ServiceError | None = None
        while True:
            try:
                last, error = self.routing(), None
                if last.workers and all(w.generation >= generation for w in last.workers):
                    return time.monotonic() - start
            except ServiceError as exc:
                error = exc
            if time.monotonic() - start >= timeout_s:
                behind = [w.pid for w in (last.workers if last else ()) if w.generation < generation]
                state = f"workers behind: {behind}" if last and last.workers else "no worker reported"
                if error is not None:
                    state = f"last answer: {error.message}"
                raise ServiceError(f"{self.endpoint}: routing generation {generation} not applied by every "
                                   f"worker within {timeout_s:g}s ({state})")
            time.sleep(0.02)

    # -- the contract (promotion.traffic.base.TrafficBackend) ------------------------------

    def prepare(self, version: int, digest: str) -> None:
        """Remember that ``version`` must serve ``digest``: the router checks it against the
        artifact when :meth:`set_weights` routes the version, before any change."""
        from promotion.contract.digest import DIGEST_RE

        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise ServiceError(f"{self.endpoint}: v{version}: {digest!r} is not a sha256 digest; traffic not changed")
        self._digests[int(version)] = digest

    def _digest(self, version: int) -> str:
        try:
            return self._digests[version]
        except KeyError:
            raise ServiceError(f"{self.endpoint}: v{version} was not prepared (no digest to verify it with); "
                               "traffic not changed") from None

    def set_weights(self, weights: dict[int, float], mirror: Mirror | None = None, *,
                    canary: int | None = None, based_on: int | None = None) -> Applied:
        """The router's admin call with each version's prepared digest; see the module docstring.

        ``canary`` is not used: the router reaches a version by weight or routing key only.
        """
        weights = check_weights(weights, self.endpoint)
        mirror = check_mirror(mirror, self.endpoint)
        digests = {v: self._digest(v) for v in weights}
        shadow = None if mirror is None else Shadow(mirror.version, mirror.percent, self._digest(mirror.version))
        r = self.set_routing(weights, digests, shadow, based_on=based_on)
        return Applied(generation=r.generation, weights=dict(r.routes),
                       mirror=None if r.shadow is None else Mirror(r.shadow.version, r.shadow.percent), canary=canary)

    def verify(self, applied: Applied, timeout_s: float) -> float:
        """Seconds until every live worker reports ``applied``'s generation."""
        return self.wait_applied(applied.generation, timeout_s)

    def current(self) -> Current:
        r = self.routing()
        return Current(generation=r.generation, weights=dict(r.routes),
                       mirror=None if r.shadow is None else Mirror(r.shadow.version, r.shadow.percent),
                       digests=dict(r.digests), applied=r.applied)

    def is_online(self) -> bool:
        import requests

        try:
            return self.session.get(self.endpoint + "/healthz", timeout=min(self.timeout_s, 3.0)).status_code == 200
        except requests.RequestException:
            return False


def _detail(resp, data: Any) -> str:
    """``kind: message; what to do`` from the router's error body, or the first line of a
    foreign answer (a proxy's 413 or 502 page)."""
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        kind = str(error.get("kind", "error"))
        detail = f"{kind}: {' '.join(str(error.get('message', '')).split())[:500]}"
    else:
        kind = ""
        text = resp.text.strip()
        detail = text.splitlines()[0][:200] if text else (resp.reason or "no reason given")
    hint = _HINTS.get((resp.status_code, kind))
    if hint is None and resp.status_code == 413:  # a proxy in front refused it
        hint = _HINTS[(413, "too_large")]
    return f"{detail} ({hint})" if hint else detail
