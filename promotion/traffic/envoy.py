"""Traffic backend for a real Envoy proxy in front of one replica set per model version.

Each version's replicas are routers of this project (``bentoml serve`` of
``services/router``), each serving only that version at 100%. Envoy splits the traffic:
one cluster per version (``v<version>``), a route with ``weighted_clusters`` and a header
match (``X-Canary: always``) that reaches the canary. The weights move through Envoy's
file-based dynamic configuration: the route (RDS) and cluster (CDS) files named by
``serving.route_file`` are replaced by a rename in their folder, which Envoy watches (``path_config_source`` with
``watched_directory``), so no restart happens. :meth:`EnvoyBackend.verify` reads Envoy's
admin ``/config_dump`` until it shows the new route version *and* weights.

A shadow is mirrored by the replicas that serve, not by Envoy. An Envoy
``request_mirror_policies`` copy reaches the shadow's replicas as an ordinary request:
they count it as served by the shadow version (``promotion_requests_total``), an error
of it as the shadow version's error of its own kind, and nobody compares its answer with
the one the client got, so the shadow phase would read no agreement and never pass.
Instead, every replica of a version that serves is given the shadow in its routing (the
router's own mirror: the shadow predicts in a lowest-priority process beside each worker,
counts ``promotion_shadow_requests_total`` and ``promotion_shadow_agreement_total``
against the answer served, and its failures as errors of kind ``shadow``), so the
analysis reads the same counters, summed over replicas, as on one host. The shadow's
artifact is verified against its digest by each replica before it mirrors to it.

Environment file::

    serving:
      kind: envoy
      endpoint: http://127.0.0.1:10000        # Envoy's listener (clients)
      admin: http://127.0.0.1:9901            # Envoy's admin interface
      route_file: /var/lib/promotion/prod/envoy/route.json
      replicas:
        "1": [http://127.0.0.1:3101, http://127.0.0.1:3102]
        "2": [http://127.0.0.1:3201, http://127.0.0.1:3202]

Start Envoy with the bootstrap of the environment (same PID for its whole life)::

    from promotion.traffic.envoy import write_bootstrap
    path = write_bootstrap(env, "/var/lib/promotion/prod/envoy/bootstrap.json")
    # envoy -c <path>   (or: promotion serve prod --envoy-bootstrap <path>)
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from promotion.contract.digest import DIGEST_RE
from promotion.errors import ServiceError
from promotion.traffic.base import Applied, Current, Mirror, check_mirror, check_weights

ROUTE_NAME = "promotion"          # the RouteConfiguration the listener asks RDS for
DEFAULT_ROUTE = "split"           # the Route holding the weighted clusters
CANARY_ROUTE = "canary-header"
CANARY_VALUE = "always"
CLUSTERS_FILE = "clusters.json"
SHADOW_FILE = "shadow.json"       # the shadow the replicas were last given (none: no file)
GENERATION_HEADER = "x-promotion-route-version"  # on every answer through Envoy: the route version that served it
WEIGHT_SCALE = 100                # Envoy weights are integers: 0.01 percentage points
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def cluster_name(version: int) -> str:
    return f"v{int(version)}"


def _version_of(name: str) -> int:
    if not (isinstance(name, str) and name.startswith("v") and name[1:].isdigit()):
        raise ServiceError(f"envoy routes to cluster {name!r}, which is not a model version's cluster")
    return int(name[1:])


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80)


# -- rendering (pure: unit tested without Envoy) -------------------------------------------


UPSTREAM_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_IDLE_TIMEOUT = "3s"


def render_clusters(replicas: dict[int, list[str]], generation: int = 1) -> dict:
    """The CDS file: one STATIC cluster ``v<version>`` per version, its replicas as endpoints."""
    resources = []
    for version in sorted(replicas):
        endpoints = [{"endpoint": {"address": {"socket_address": dict(zip(("address", "port_value"),
                                                                          _host_port(u)))}}}
                     for u in replicas[version]]
        resources.append({
            "@type": CLUSTER_TYPE, "name": cluster_name(version), "type": "STATIC", "connect_timeout": "1s",
            "lb_policy": "ROUND_ROBIN",
            # close idle upstream connections before the replica's server does (uvicorn: 5 s),
            # so a request is never sent on a connection the replica is closing
            "typed_extension_protocol_options": {UPSTREAM_HTTP_OPTIONS: {
                "@type": "type.googleapis.com/" + UPSTREAM_HTTP_OPTIONS,
                "common_http_protocol_options": {"idle_timeout": UPSTREAM_IDLE_TIMEOUT},
                "explicit_http_config": {"http_protocol_options": {}}}},
            "load_assignment": {"cluster_name": cluster_name(version), "endpoints": [{"lb_endpoints": endpoints}]},
        })
    return {"version_info": str(generation), "resources": resources}


def render_route(weights: dict[int, float], generation: int, *, mirror: Mirror | None = None,
                 canary: int | None = None, canary_header: str = "X-Canary", shadow: int | None = None) -> dict:
    """The RDS file: the weighted split, the canary header route and (``mirror``) an Envoy
    mirror policy. :class:`EnvoyBackend` passes no ``mirror``: its replicas mirror, and
    ``shadow`` names the version they mirror to.

    ``canary`` gets a header route only while it is part of this split (or mirrored, or the
    ``shadow``): after a rollback, the header reaches the champion like every other request.
    """
    weights = check_weights(weights, "envoy")
    split: dict[str, Any] = {"weighted_clusters": {"clusters": [
        {"name": cluster_name(v), "weight": int(round(w * WEIGHT_SCALE))} for v, w in sorted(weights.items())]}}
    if mirror is not None:
        split["request_mirror_policies"] = [{
            "cluster": cluster_name(mirror.version),
            "runtime_fraction": {"default_value": {"numerator": int(round(mirror.percent * WEIGHT_SCALE)),
                                                   "denominator": "TEN_THOUSAND"}}}]
    routes = []
    reachable = set(weights) | ({mirror.version} if mirror else set()) | ({shadow} if shadow is not None else set())
    if canary is not None and canary in reachable and len(reachable) > 1:
        routes.append({"name": CANARY_ROUTE,
                       "match": {"prefix": "/", "headers": [{"name": canary_header.lower(),
                                                             "string_match": {"exact": CANARY_VALUE}}]},
                       "route": {"cluster": cluster_name(canary)}})
    routes.append({"name": DEFAULT_ROUTE, "match": {"prefix": "/"}, "route": split})
    # The generation is part of the content, not only of version_info: Envoy ignores an
    # update whose configuration hashes the same (a rollback to the split it already
    # serves), and would then never show the new version. Clients see it on each answer.
    config = {"@type": ROUTE_TYPE, "name": ROUTE_NAME,
              "virtual_hosts": [{"name": "models", "domains": ["*"], "routes": routes,
                                 "response_headers_to_add": [{
                                     "header": {"key": GENERATION_HEADER, "value": str(generation)},
                                     "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}]}
    return {"version_info": str(generation), "resources": [config]}


def parse_route(config: dict) -> tuple[dict[int, float], Mirror | None, int | None]:
    """(weights, mirror, canary) of a RouteConfiguration, as written or as Envoy dumps it.

    A cluster Envoy dumps without a weight has weight 0 (proto3 leaves zero out).
    """
    routes = [r for vh in config.get("virtual_hosts", ()) for r in vh.get("routes", ())]
    split = next((r for r in routes if r.get("name") == DEFAULT_ROUTE), None)
    if split is None:
        raise ServiceError(f"envoy route configuration {config.get('name')!r} has no {DEFAULT_ROUTE!r} route")
    action = split.get("route", {})
    clusters = (action.get("weighted_clusters") or {}).get("clusters")
    if clusters:
        weights = {_version_of(c["name"]): int(c.get("weight", 0)) / WEIGHT_SCALE for c in clusters}
    elif action.get("cluster"):
        weights = {_version_of(action["cluster"]): 100.0}
    else:
        raise ServiceError("envoy's split route names no cluster")
    mirror = None
    for policy in action.get("request_mirror_policies") or ():
        fraction = (policy.get("runtime_fraction") or {}).get("default_value") or {}
        scale = {"HUNDRED": 1, "TEN_THOUSAND": WEIGHT_SCALE, "MILLION": 10_000}.get(fraction.get("denominator", "HUNDRED"), 1)
        mirror = Mirror(_version_of(policy["cluster"]), int(fraction.get("numerator", 0)) / scale
                        if fraction else 100.0)
    canary_route = next((r for r in routes if r.get("name") == CANARY_ROUTE), None)
    canary = _version_of(canary_route["route"]["cluster"]) if canary_route else None
    return weights, mirror, canary


def render_bootstrap(env) -> dict:
    """Envoy's bootstrap for ``env``: node, admin, one listener on ``serving.endpoint``'s
    port whose routes come from the watched route file, clusters from the watched
    cluster file (both in ``route_file``'s folder)."""
    s = env.serving
    route_file = Path(s.get("route_file"))
    watched = {"path": str(route_file.parent)}
    host, port = _host_port(env.endpoint)
    admin_host, admin_port = _host_port(s.get("admin"))
    node = s.get("node") or f"promotion-{env.name}"

    def source(path: Path) -> dict:
        return {"path_config_source": {"path": str(path), "watched_directory": watched},
                "resource_api_version": "V3"}

    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "promotion", "codec_type": "AUTO",
        # the replicas take the client's X-Request-Id (or make their own): no UUID per request here
        "generate_request_id": False,
        "rds": {"route_config_name": ROUTE_NAME, "config_source": source(route_file)},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                                           # per-request stats per upstream cluster, and x-envoy-* headers: not read
                                           "dynamic_stats": False, "suppress_envoy_headers": True}}],
    }
    return {
        "node": {"id": node, "cluster": node},
        "admin": {"address": {"socket_address": {"address": admin_host, "port_value": admin_port}}},
        "dynamic_resources": {"cds_config": source(route_file.parent / CLUSTERS_FILE)},
        "static_resources": {"listeners": [{
            "name": "models",
            "address": {"socket_address": {"address": host, "port_value": int(s.get("listen_port") or port)}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": manager}]}],
        }]},
    }


def write_bootstrap(env, path: str | Path) -> Path:
    """Write :func:`render_bootstrap` to ``path``, and the route and cluster files if they do
    not exist yet (Envoy needs both at start): the environment's version at 100%."""
    backend = EnvoyBackend.from_environment(env)
    backend.write_initial(env.model.version)
    path = Path(path)
    _atomic_write(path, render_bootstrap(env))
    return path


def _atomic_write(path: Path, doc: dict) -> None:
    """Write ``doc`` next to ``path`` and rename it over ``path``: Envoy sees a move into the
    watched folder, never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ServiceError(f"{path}: cannot read the envoy configuration ({exc})") from exc


def _mirror_of(routing) -> Mirror | None:
    """The shadow of a replica's routing, as a :class:`Mirror`."""
    return None if routing.shadow is None else Mirror(int(routing.shadow.version), float(routing.shadow.percent))


# -- the backend ---------------------------------------------------------------------------


class EnvoyBackend:
    """:class:`~promotion.traffic.base.TrafficBackend` over Envoy's watched files and admin API."""

    kind = "envoy"
    apply_timeout_s = 5.0

    def __init__(self, admin: str, route_file: str | Path, replicas: dict[int, list[str]], *,
                 token: str | None = None, canary_header: str = "X-Canary", timeout_s: float = 5.0,
                 name: str = "envoy") -> None:
        import requests

        self.admin = admin.rstrip("/")
        self.route_file = Path(route_file)
        self.clusters_file = self.route_file.parent / CLUSTERS_FILE
        self.replicas = {int(v): list(urls) for v, urls in replicas.items()}
        self.token = token
        self.canary_header = canary_header
        self.timeout_s = timeout_s
        self.name = name
        self._session = requests.Session()
        self._digests: dict[int, str] = {}   # version -> the digest prepare() verified
        self._routers: dict[str, Any] = {}   # replica url -> BentoMLRouter (one session each)
        self._pending: dict[str, int] = {}   # replica url -> routing generation set_weights gave it

    @classmethod
    def from_environment(cls, env) -> "EnvoyBackend":
        """The Envoy of ``env`` (its validated ``serving`` block of kind ``envoy``)."""
        s = env.serving
        return cls(s.get("admin"), s.get("route_file"), {int(v): u for v, u in s.get("replicas").items()},
                   token=env.admin_token(), canary_header=s.get("canary_header", "X-Canary"),
                   name=f"{env.name} envoy")

    # -- admin reads ------------------------------------------------------------------------

    def _admin_get(self, path: str) -> Any:
        import requests

        url = self.admin + path
        try:
            resp = self._session.get(url, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise ServiceError(f"GET {url}: cannot reach envoy's admin interface ({exc.__class__.__name__})") from exc
        if resp.status_code != 200:
            raise ServiceError(f"GET {url}: HTTP {resp.status_code}")
        try:
            return resp.json()
        except ValueError as exc:
            raise ServiceError(f"GET {url}: not JSON") from exc

    def _dumped_route(self) -> tuple[int, dict]:
        """(version_info, route config) of the route configuration Envoy applies now."""
        dump = self._admin_get("/config_dump?resource=dynamic_route_configs")
        for entry in dump.get("configs", ()):
            config = entry.get("route_config") or {}
            if config.get("name") == ROUTE_NAME:
                try:
                    return int(entry.get("version_info", "0")), config
                except ValueError:
                    raise ServiceError(f"envoy applies route version {entry.get('version_info')!r}, "
                                       "which this backend did not write") from None
        raise ServiceError(f"{self.name}: envoy applies no route configuration {ROUTE_NAME!r} "
                           f"(is it started with this environment's bootstrap, watching {self.route_file}?)")

    def _dumped_clusters(self) -> set[str]:
        dump = self._admin_get("/config_dump?resource=dynamic_active_clusters")
        return {(e.get("cluster") or {}).get("name") for e in dump.get("configs", ())}

    # -- the contract -------------------------------------------------------------------------

    def prepare(self, version: int, digest: str) -> None:
        """Every replica of ``version`` answers and serves exactly that version and digest,
        and Envoy has its cluster. A replica with no routing yet is given its version at
        100% (its router verifies the artifact's digest before serving it)."""
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise ServiceError(f"{self.name}: v{version}: {digest!r} is not a sha256 digest; traffic not changed")
        urls = self.replicas.get(int(version))
        if not urls:
            raise ServiceError(f"{self.name}: no replicas for v{version} in serving.replicas; traffic not changed")
        for url in urls:
            replica = self._replica(url)
            live = replica.routing()
            if not live.routes:
                replica.wait_applied(replica.set_routing({version: 100.0}, {version: digest}).generation, 60.0)
                live = replica.routing()
            served = {v: w for v, w in live.routes.items() if w > 0}
            if served != {version: 100.0} or live.digests.get(version) != digest:
                raise ServiceError(f"{self.name}: replica {url} serves "
                                   f"{', '.join(f'v{v}={w:g}%' for v, w in served.items()) or 'nothing'}"
                                   f" ({live.digests.get(version, 'no digest for v%d' % version)}), not v{version}"
                                   f" at 100% with {digest}; traffic not changed")
            if not live.applied:
                raise ServiceError(f"{self.name}: replica {url}: not every worker applies its routing yet")
        self._ensure_clusters()
        self._digests[int(version)] = digest

    def _replica(self, url: str):
        from promotion.traffic.bentoml_router import BentoMLRouter

        if url not in self._routers:
            self._routers[url] = BentoMLRouter(url, self.token, timeout_s=self.timeout_s)
        return self._routers[url]

    def _shadow_for(self, version: int, weights: dict[int, float], mirror: Mirror | None) -> Mirror | None:
        """The shadow the replicas of ``version`` mirror to: ``mirror`` while they serve."""
        if mirror is None or version == mirror.version or weights.get(version, 0.0) <= 0:
            return None
        return mirror

    def _set_replica_shadows(self, weights: dict[int, float], mirror: Mirror | None) -> list[str]:
        """Give every replica of a serving version the shadow (and take it from the others);
        replicas already mirroring what they should are left alone. A replica of a version
        that serves nothing may be down (a rollback must not wait for the canary's
        replicas): it is returned, to be tried again on the next change."""
        unreached: list[str] = []
        for version, urls in sorted(self.replicas.items()):
            want = self._shadow_for(version, weights, mirror)
            for url in urls:
                try:
                    self._set_shadow(url, version, want)
                except ServiceError:
                    if weights.get(version, 0.0) > 0:
                        raise
                    unreached.append(url)
        return unreached

    def _set_shadow(self, url: str, version: int, want: Mirror | None) -> None:
        from promotion.contract.routing import Shadow

        replica = self._replica(url)
        live = replica.routing()
        if _mirror_of(live) == want:
            return
        digest = live.digests.get(version)
        if live.routes.get(version) != 100.0 or digest is None:
            raise ServiceError(f"{self.name}: replica {url} does not serve v{version} at 100%; its shadow not changed")
        digests = {version: digest}
        shadow = None
        if want is not None:
            digests[want.version] = self._digests.get(want.version) or self._served_digest(want.version)
            shadow = Shadow(want.version, want.percent, digests[want.version])
        self._pending[url] = replica.set_routing({version: 100.0}, digests, shadow).generation

    def _served_digest(self, version: int) -> str:
        """The digest ``version``'s own replicas serve (each verified it before serving)."""
        found = {self._replica(u).routing().digests.get(version) for u in self.replicas.get(version, ())}
        if len(found) != 1 or None in found:
            raise ServiceError(f"{self.name}: v{version} was not prepared and its replicas do not agree on one "
                               "digest; shadow not changed")
        return found.pop()

    def _ensure_clusters(self, timeout_s: float = 10.0) -> None:
        want = render_clusters(self.replicas)
        on_disk = _read(self.clusters_file)
        if on_disk is None or on_disk.get("resources") != want["resources"]:
            generation = int((on_disk or {}).get("version_info", "0") or 0) + 1
            _atomic_write(self.clusters_file, render_clusters(self.replicas, generation))
        names = {cluster_name(v) for v in self.replicas}
        deadline = time.monotonic() + timeout_s
        while not names <= self._dumped_clusters():
            if time.monotonic() > deadline:
                missing = sorted(names - self._dumped_clusters())
                raise ServiceError(f"{self.name}: envoy does not show cluster(s) {', '.join(missing)} within "
                                   f"{timeout_s:g}s (watching {self.clusters_file}?)")
            time.sleep(0.02)

    def _lock(self):
        import fcntl

        self.route_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.route_file.parent / ".promotion.lock", "w")
        fcntl.flock(handle, fcntl.LOCK_EX)
        return handle

    def set_weights(self, weights: dict[int, float], mirror: Mirror | None = None, *,
                    canary: int | None = None, based_on: int | None = None) -> Applied:
        """Replace the route file with the new split (one rename); Envoy picks it up itself."""
        weights = check_weights(weights, self.name)
        mirror = check_mirror(mirror, self.name)
        unknown = sorted(set(weights) - set(self.replicas) | ({mirror.version} - set(self.replicas) if mirror else set()))
        if unknown:
            raise ServiceError(f"{self.name}: no replicas for {', '.join(f'v{v}' for v in unknown)} in "
                               "serving.replicas; traffic not changed")
        with self._lock():
            previous = _read(self.route_file)
            generation = int((previous or {}).get("version_info", "0") or 0)
            if based_on is not None and based_on != generation:
                raise ServiceError(f"{self.name}: routing changed since generation {based_on} (now {generation}); "
                                   "traffic not changed: read it again before retrying")
            doc = render_route(weights, generation + 1, canary=canary, canary_header=self.canary_header,
                               shadow=mirror.version if mirror else None)
            _atomic_write(self.route_file, doc)
            # after the split: a rollback has moved every request to the champion before
            # the shadow is taken away; a new shadow starts once its split is in place
            shadow_file = self.route_file.parent / SHADOW_FILE
            given = _read(shadow_file) or {}
            if mirror is not None or given.get("mirror") is not None or given.get("unreached"):
                unreached = self._set_replica_shadows(weights, mirror)
                _atomic_write(shadow_file, {"mirror": mirror.to_json() if mirror else None,
                                            "weights": {str(v): w for v, w in weights.items()},
                                            "unreached": unreached})
        return Applied(generation + 1, weights, mirror, canary)

    def write_initial(self, version: int) -> None:
        """Route and cluster files for a fresh Envoy: ``version`` at 100%; existing files are kept."""
        if _read(self.clusters_file) is None:
            _atomic_write(self.clusters_file, render_clusters(self.replicas))
        if _read(self.route_file) is None:
            if int(version) not in self.replicas:
                raise ServiceError(f"{self.name}: no replicas for v{version} in serving.replicas")
            _atomic_write(self.route_file, render_route({int(version): 100.0}, 1))

    def verify(self, applied: Applied, timeout_s: float) -> float:
        """Seconds until Envoy's ``/config_dump`` shows ``applied``'s route version with its
        weights (a newer version counts: someone changed traffic since), and every worker of
        every replica of a serving version mirrors ``applied``'s shadow (or none)."""
        start = time.monotonic()
        if self._verify_route(applied, timeout_s) == applied.generation:  # else changed since: not ours
            self._verify_shadows(applied, max(timeout_s - (time.monotonic() - start), 0.5))
        return time.monotonic() - start

    def _verify_shadows(self, applied: Applied, timeout_s: float) -> None:
        start = time.monotonic()
        for version, urls in sorted(self.replicas.items()):
            want = self._shadow_for(version, applied.weights, applied.mirror)
            for url in urls:
                if applied.weights.get(version, 0.0) <= 0 and url not in self._pending:
                    continue  # not serving, and set_weights found it mirroring nothing
                replica = self._replica(url)
                if url in self._pending:
                    replica.wait_applied(self._pending[url], max(timeout_s - (time.monotonic() - start), 0.1))
                live = replica.routing()
                if _mirror_of(live) != want or not live.applied:
                    have = _mirror_of(live)
                    raise ServiceError(f"{self.name}: replica {url} of v{version} mirrors "
                                       f"{f'v{have.version} at {have.percent:g}%' if have else 'nothing'}"
                                       f"{'' if live.applied else ' (not every worker applies it)'}, not "
                                       f"{f'v{want.version} at {want.percent:g}%' if want else 'nothing'}")
                self._pending.pop(url, None)

    def _verify_route(self, applied: Applied, timeout_s: float) -> int:
        """The route version Envoy applies once it is ``applied``'s or newer."""
        start = time.monotonic()
        last = "no answer"
        while True:
            try:
                generation, config = self._dumped_route()
                weights, _, _ = parse_route(config)
                if generation > applied.generation:
                    return generation
                if generation == applied.generation:
                    if weights == applied.weights:
                        return generation
                    raise ServiceError(f"{self.name}: envoy applies route version {generation} with other weights "
                                       f"({weights}) than were written ({applied.weights})")
                last = f"envoy still applies route version {generation}"
            except ServiceError as exc:
                if "other weights" in exc.message:
                    raise
                last = exc.message
            if time.monotonic() - start >= timeout_s:
                raise ServiceError(f"{self.name}: route version {applied.generation} not applied by envoy within "
                                   f"{timeout_s:g}s ({last}); check envoy's log for a rejected update")
            time.sleep(0.01)

    def current(self) -> Current:
        """The split Envoy applies (from ``/config_dump``) and the shadow the serving versions'
        replicas mirror to; ``applied`` is False while Envoy still shows an older route
        version than the file holds, or those replicas do not all mirror the same."""
        generation, config = self._dumped_route()
        weights, mirror, _ = parse_route(config)  # a mirror policy written by hand still shows
        on_disk = _read(self.route_file)
        written = int((on_disk or {}).get("version_info", "0") or 0)
        shadows, applied = set(), generation >= written
        for version, w in weights.items():
            if w <= 0:
                continue
            for url in self.replicas.get(version, ()):
                try:
                    live = self._replica(url).routing()
                except ServiceError:  # a serving replica that does not answer: not applied
                    applied = False
                    continue
                shadows.add(_mirror_of(live))
                applied = applied and live.applied
        if len(shadows) > 1:
            applied = False
        replica_mirror = min((m for m in shadows if m is not None), key=lambda m: m.version, default=None)
        return Current(generation=generation, weights=weights, mirror=replica_mirror or mirror, applied=applied)

    def is_online(self) -> bool:
        """Envoy's admin ``/ready`` answers 200 (its listeners and clusters are initialised)."""
        import requests

        try:
            return self._session.get(self.admin + "/ready", timeout=2.0).status_code == 200
        except requests.RequestException:
            return False
