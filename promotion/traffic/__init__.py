"""Traffic backends: how a rollout moves traffic between model versions.

Usage::

    from promotion.traffic import backend_for
    backend = backend_for(project.environment("prod"))     # serving.kind picks it
    backend.prepare(2, digest)
    backend.verify(backend.set_weights({1: 95.0, 2: 5.0}, canary=2), timeout_s=5)

:data:`KINDS` is an explicit registry that fails closed: an unknown kind is an error,
never a silent fallback. Adding a backend is one file under ``promotion/traffic/``
whose class has a ``from_environment(env)`` constructor, one ``$defs`` block in
``promotion/config/schemas/environment.schema.json``, and one line here (see
docs/extending.md).
"""

from __future__ import annotations

from importlib import import_module

from promotion.errors import ServiceError
from promotion.traffic.base import Applied, Current, Mirror, TrafficBackend

DEFAULT_KIND = "bentoml"

# serving.kind -> "module:class"; the class has a `from_environment(env)` classmethod
KINDS: dict[str, str] = {
    "bentoml": "promotion.traffic.bentoml_router:BentoMLRouter",
    "envoy": "promotion.traffic.envoy:EnvoyBackend",
    "gateway-api": "promotion.traffic.gateway_api:GatewayApiBackend",
}

__all__ = ["backend_for", "backend_class", "Applied", "Current", "Mirror", "TrafficBackend", "KINDS", "DEFAULT_KIND"]


def backend_class(kind: str) -> type:
    """The class registered for ``kind``; ServiceError for a kind nobody registered."""
    target = KINDS.get(kind)
    if target is None:
        raise ServiceError(f"unknown traffic backend kind {kind!r} (known: {', '.join(sorted(KINDS))})")
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)


def backend_for(env) -> TrafficBackend:
    """The traffic backend serving ``env`` (a :class:`promotion.config.Environment`),
    chosen by its validated ``serving.kind``."""
    try:
        cls = backend_class(env.serving.kind)
    except ServiceError as exc:
        raise ServiceError(f"environment {env.name}: {exc.message}") from None
    return cls.from_environment(env)
