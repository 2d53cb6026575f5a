"""Traffic backends: how a rollout moves traffic between model versions.

Usage::

    from promotion.traffic import backend_for
    backend = backend_for(project.environment("prod"))
    r = backend.set_routing({1: 95, 2: 5}, {1: d1, 2: d2})
    backend.wait_applied(r.generation, timeout_s=5)

:func:`backend_for` is an explicit registry that fails closed: an unknown kind is an
error, never a silent fallback.
"""

from __future__ import annotations

from promotion.errors import ServiceError
from promotion.traffic.base import Routing, TrafficBackend, WorkerStatus

DEFAULT_KIND = "bentoml"
KINDS = ("bentoml",)

__all__ = ["backend_for", "Routing", "TrafficBackend", "WorkerStatus", "KINDS"]


def backend_for(env) -> TrafficBackend:
    """The traffic backend serving ``env`` (a :class:`promotion.config.Environment`).

    The kind comes from ``env.serving_kind`` when the environment file names one,
    otherwise it is the BentoML router.
    """
    kind = getattr(env, "serving_kind", None) or DEFAULT_KIND
    if kind == "bentoml":
        from promotion.traffic.bentoml_router import BentoMLRouter

        return BentoMLRouter(env.endpoint, env.admin_token())
    raise ServiceError(f"environment {getattr(env, 'name', '?')}: unknown traffic backend kind {kind!r} "
                       f"(known: {', '.join(KINDS)})")
