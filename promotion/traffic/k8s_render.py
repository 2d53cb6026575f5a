"""Kubernetes manifests of a traffic split: a Gateway API ``HTTPRoute``, an Istio ``VirtualService``.

The ``gateway-api`` backend (:mod:`promotion.traffic.gateway_api`) writes these into git;
this module only turns a desired split into documents and back, with no I/O::

    spec = RouteSpec(env="prod", route_name="fraud", namespace="ml", parent_ref="ml-gateway",
                     service_pattern="fraud-v{version}", port=3000)
    split = Split(generation=7, weights={1: 95.0, 2: 5.0}, canary=2, digests={1: d1, 2: d2})
    text = dump(render_httproute(spec, split))        # deterministic YAML
    assert parse_httproute(spec, yaml.safe_load(text)) == split

Weights are percentages here and integers in the HTTPRoute: 1 % is ``WEIGHT_SCALE``
(10 000), so 100 % is 1 000 000, the schema's maximum, and steps of 0.0001 % survive the
round trip. Istio's weights are whole percentages: a split it cannot express is refused.
A rule with a header match (``X-Canary: always`` by default) sends testers to the canary
while it has weight; it is left out otherwise, so a rollback leaves no path to the canary.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml

from promotion.errors import ServiceError
from promotion.traffic.base import Mirror

GATEWAY_API_VERSION = "gateway.networking.k8s.io/v1"
ISTIO_API_VERSION = "networking.istio.io/v1"
WEIGHT_SCALE = 10_000  # HTTPRoute weight units per percent: 100 % -> 1_000_000
ANNOTATION = "promotion.dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "promotion"}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class RouteSpec:
    """Where the split goes: the route, its Gateway, and each version's Service."""

    env: str
    route_name: str
    namespace: str
    parent_ref: str
    service_pattern: str = "{route}-v{version}"
    port: int = 3000
    services: dict[int, str] = field(default_factory=dict)  # explicit names, over the pattern
    parent_namespace: str | None = None
    hostnames: tuple[str, ...] = ()
    canary_header: str = "X-Canary"
    istio: bool = False

    def service(self, version: int) -> str:
        """The Service of ``version``; ServiceError if the name is not a DNS label."""
        name = self.services.get(version) or self.service_pattern.replace("{route}", self.route_name).replace(
            "{version}", str(version))
        if not _DNS_LABEL.match(name):
            raise ServiceError(f"{self.env}: service name {name!r} for v{version} is not a Kubernetes DNS label "
                               "(lowercase letters, digits, '-', at most 63); traffic not changed")
        return name

    def version_of(self, service: str) -> int | None:
        """The version whose Service is ``service``, or None."""
        for v, name in self.services.items():
            if name == service:
                return v
        pattern = re.escape(self.service_pattern.replace("{route}", self.route_name)).replace(
            re.escape("{version}"), "([1-9][0-9]{0,9})")
        m = re.fullmatch(pattern, service)
        return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Split:
    """A desired split: weights in percent (summing to 100), mirror, canary, digests."""

    generation: int
    weights: dict[int, float]
    mirror: Mirror | None = None
    canary: int | None = None
    digests: dict[int, str] = field(default_factory=dict)

    def same_traffic(self, other: "Split | None") -> bool:
        """Whether ``other`` routes exactly as this (generation and digests aside)."""
        return (other is not None and other.weights == self.weights and other.mirror == self.mirror
                and other.header_canary == self.header_canary)

    @property
    def header_canary(self) -> int | None:
        """The version the canary header reaches: the canary, only while it has weight."""
        return self.canary if self.canary is not None and self.weights.get(self.canary, 0.0) > 0 else None


def _units(weight: float) -> int:
    return int(round(weight * WEIGHT_SCALE))


def _metadata(spec: RouteSpec, split: Split) -> dict:
    annotations = {f"{ANNOTATION}/environment": spec.env, f"{ANNOTATION}/generation": str(split.generation)}
    if split.header_canary is not None:
        annotations[f"{ANNOTATION}/canary"] = str(split.header_canary)
    for v in sorted(split.digests):
        annotations[f"{ANNOTATION}/digest.v{v}"] = split.digests[v]
    return {"name": spec.route_name, "namespace": spec.namespace, "labels": dict(MANAGED_BY),
            "annotations": annotations}


def render_httproute(spec: RouteSpec, split: Split) -> dict:
    """The Gateway API HTTPRoute of ``split`` (one backendRef per version's Service)."""
    parent: dict = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": spec.parent_ref}
    if spec.parent_namespace:
        parent["namespace"] = spec.parent_namespace
    route_spec: dict = {"parentRefs": [parent]}
    if spec.hostnames:
        route_spec["hostnames"] = list(spec.hostnames)
    rules = []
    if split.header_canary is not None:
        rules.append({
            "matches": [{"headers": [{"type": "Exact", "name": spec.canary_header, "value": "always"}]}],
            "backendRefs": [_backend_ref(spec, split.header_canary)],
        })
    split_rule: dict = {"backendRefs": [{**_backend_ref(spec, v), "weight": _units(w)}
                                        for v, w in sorted(split.weights.items())]}
    if split.mirror is not None:
        mirror: dict = {"backendRef": _backend_ref(spec, split.mirror.version)}
        if split.mirror.percent < 100:
            # `percent` is standard from Gateway API v1.3; without it the whole stream is copied
            mirror["percent"] = _whole_percent(split.mirror.percent, spec, "mirror percent")
        split_rule["filters"] = [{"type": "RequestMirror", "requestMirror": mirror}]
    rules.append(split_rule)
    route_spec["rules"] = rules
    return {"apiVersion": GATEWAY_API_VERSION, "kind": "HTTPRoute", "metadata": _metadata(spec, split),
            "spec": route_spec}


def _backend_ref(spec: RouteSpec, version: int) -> dict:
    return {"group": "", "kind": "Service", "name": spec.service(version), "port": spec.port}


def _whole_percent(value: float, spec: RouteSpec, what: str) -> int:
    if abs(value - round(value)) > 1e-9:
        raise ServiceError(f"{spec.env}: {what} {value:g} is not a whole percent, which the manifest "
                           "cannot express; traffic not changed")
    return int(round(value))


def render_virtualservice(spec: RouteSpec, split: Split) -> dict:
    """The Istio VirtualService of ``split`` (whole-percent weights)."""
    host = lambda v: {"host": spec.service(v), "port": {"number": spec.port}}  # noqa: E731
    http = []
    if split.header_canary is not None:
        http.append({"name": "canary-header",
                     "match": [{"headers": {spec.canary_header.lower(): {"exact": "always"}}}],
                     "route": [{"destination": host(split.header_canary)}]})
    route: dict = {"name": "split", "route": [
        {"destination": host(v), "weight": _whole_percent(w, spec, f"istio weight of v{v}")}
        for v, w in sorted(split.weights.items())]}
    if split.mirror is not None:
        route["mirror"] = host(split.mirror.version)
        route["mirrorPercentage"] = {"value": float(split.mirror.percent)}
    http.append(route)
    gateway = f"{spec.parent_namespace}/{spec.parent_ref}" if spec.parent_namespace else spec.parent_ref
    return {"apiVersion": ISTIO_API_VERSION, "kind": "VirtualService", "metadata": _metadata(spec, split),
            "spec": {"hosts": list(spec.hostnames) or [spec.route_name], "gateways": [gateway], "http": http}}


def dump(doc: dict, header: str = "") -> str:
    """Deterministic YAML: the documents' own key order, block style, no aliases."""

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data):  # noqa: D401 - PyYAML hook
            return True

    body = yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, default_flow_style=False, width=120,
                     allow_unicode=False)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def parse_httproute(spec: RouteSpec, doc: object, where: str = "HTTPRoute") -> Split:
    """The split an HTTPRoute in git holds; ServiceError naming ``where`` if it is not one
    this environment's backend could have written (another route, an unknown Service)."""
    def bad(msg: str) -> ServiceError:
        return ServiceError(f"{where}: {msg}")

    if not isinstance(doc, dict) or doc.get("apiVersion") != GATEWAY_API_VERSION or doc.get("kind") != "HTTPRoute":
        raise bad(f"not a {GATEWAY_API_VERSION} HTTPRoute")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict) or meta.get("name") != spec.route_name:
        raise bad(f"metadata.name is not {spec.route_name!r}")
    annotations = meta.get("annotations") or {}
    try:
        generation = int(annotations.get(f"{ANNOTATION}/generation", 0))
        rules = doc["spec"]["rules"]
        split_rules = [r for r in rules if isinstance(r, dict) and not r.get("matches")]
        header_rules = [r for r in rules if isinstance(r, dict) and r.get("matches")]
        if len(split_rules) != 1:
            raise bad(f"expected one rule without matches (the split), found {len(split_rules)}")
        units: dict[int, int] = {}
        for ref in split_rules[0].get("backendRefs") or []:
            units[_version(spec, ref, bad)] = int(ref.get("weight", 1))
        mirror = None
        for f in split_rules[0].get("filters") or []:
            if isinstance(f, dict) and f.get("type") == "RequestMirror":
                m = f["requestMirror"]
                mirror = Mirror(_version(spec, m["backendRef"], bad), float(m.get("percent", 100)))
        canary = None
        for r in header_rules:
            refs = r.get("backendRefs") or []
            if len(refs) != 1:
                raise bad("the canary header rule must name one backend")
            canary = _version(spec, refs[0], bad)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise bad(f"malformed ({type(exc).__name__}: {exc})") from None
    total = sum(units.values())
    if total <= 0 or any(u < 0 for u in units.values()):
        raise bad("backendRefs weights must be >= 0 and not all 0")
    weights = {v: round(u * 100.0 / total, 6) for v, u in sorted(units.items())}
    digests = {}
    for key, value in annotations.items():
        m = re.fullmatch(re.escape(ANNOTATION) + r"/digest\.v([1-9][0-9]{0,9})", str(key))
        if m:
            digests[int(m.group(1))] = str(value)
    return Split(generation, weights, mirror, canary, digests)


def _version(spec: RouteSpec, ref: object, bad) -> int:
    if not isinstance(ref, dict) or ref.get("kind", "Service") != "Service" or ref.get("namespace") not in (None, spec.namespace):
        raise bad(f"backendRef {ref!r} is not a Service of namespace {spec.namespace!r}")
    version = spec.version_of(str(ref.get("name")))
    if version is None:
        raise bad(f"backendRef {ref.get('name')!r} is no version's Service ({spec.service_pattern})")
    return version
