"""The BentoML service that routes ``/predict`` between model versions by weight.

Run it (environment variables configure it; see ``docs/service.md``)::

    PROMOTION_SERVICE_STATE=/tmp/svc MLFLOW_TRACKING_URI=sqlite:///…/mlflow.db \\
    PROMOTION_ADMIN_TOKEN=… BENTOML_HOME=/tmp/svc/bentoml \\
        bentoml serve services.router.service:Router --host 127.0.0.1 --port 3000

Endpoints: ``POST /predict``, ``GET|POST /admin/routing``, ``GET /healthz``, ``GET /readyz``,
``GET /metrics``. Everything else lives in :class:`services.router.worker.Worker`; this
module only adapts it to HTTP. Heavy imports (MLflow, prometheus_client) happen in the
worker process at start-up, after BentoML has set up multiprocess metrics.
"""

from __future__ import annotations

import json
import os
import typing as t

import bentoml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.router import runtime

runtime.install_request_timeout()  # before BentoML builds the app: see services/router/runtime.py

MODEL_NAME = os.environ.get("PROMOTION_MODEL_NAME", "fraud-detector")
WORKERS = int(os.environ.get("PROMOTION_WORKERS", "2"))
ROUTING_KEY_HEADER = os.environ.get("PROMOTION_ROUTING_KEY_HEADER", "X-Routing-Key").lower()
_ROUTING_KEY = ROUTING_KEY_HEADER.encode("latin-1")

# The worker of this process; the admin app reaches it here (one service instance per process).
_worker = None


def routing_key(scope) -> str | None:
    """The routing key header's value, read from the ASGI scope (whose header names the
    server has lowercased): cheaper than building Starlette's Headers on every request."""
    for name, value in scope["headers"]:
        if name == _ROUTING_KEY:
            return value.decode("latin-1")
    return None


def _unavailable() -> JSONResponse:
    return JSONResponse({"error": {"kind": "unavailable", "message": "worker is starting"}}, status_code=503)


# Admin calls run on the event loop (a few small file reads and one write) unless they must
# reach the registry or load a model: a thread would wait for the GIL at every system call
# while the loop serves predictions, which under load made a routing change take 0.5 s.
async def _get_routing(request: Request) -> Response:
    if _worker is None:
        return _unavailable()
    return JSONResponse(_worker.routing_view())


async def _post_routing(request: Request) -> Response:
    import anyio

    if _worker is None:
        return _unavailable()
    raw = await request.body()
    auth = request.headers.get("authorization")
    result = _worker.handle_set_routing(raw, auth, inline=True)
    if result is None:
        result = await anyio.to_thread.run_sync(_worker.handle_set_routing, raw, auth)
    status, body = result
    return JSONResponse(body, status_code=status)


admin_app = Starlette(routes=[
    Route("/routing", _get_routing, methods=["GET"]),
    Route("/routing", _post_routing, methods=["POST"]),
])


def _make_worker():
    from promotion.registry import Registry
    from services.router import metrics
    from services.router.worker import Worker

    state = os.environ.get("PROMOTION_SERVICE_STATE")
    if not state:
        raise RuntimeError("PROMOTION_SERVICE_STATE is not set: the service needs a state directory")
    return Worker(
        state_dir=state,
        model_name=MODEL_NAME,
        registry_factory=lambda: Registry(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")),
        admin_token=os.environ.get("PROMOTION_ADMIN_TOKEN"),
        metrics=metrics.get(),
        sample=float(os.environ.get("PROMOTION_INFERENCE_SAMPLE", "0.1")),
        initial_routes=os.environ.get("PROMOTION_INITIAL_ROUTES") or None,
    )


@bentoml.service(name="promotion_router", workers=WORKERS, traffic={"timeout": runtime.REQUEST_TIMEOUT_S})
@bentoml.asgi_app(admin_app, path="/admin")
class Router:
    """Champion/canary/shadow router over MLflow model versions."""

    def __init__(self) -> None:
        global _worker
        self.worker = _make_worker()
        self.worker.start()
        _worker = self.worker
        runtime.freeze_startup_heap()

    @bentoml.api(route="/predict")
    async def predict(self, ctx: bentoml.Context, features: t.Optional[t.Dict[str, t.Any]] = None) -> dict:
        """Score one transaction: ``{"features": {...}}`` -> ``{"version", "score", "label"}``."""
        status, body, generation = self.worker.handle_predict(features, routing_key(ctx.request.scope))
        ctx.response.status_code = status
        return Response(json.dumps(body), status_code=status, media_type="application/json",
                        headers={"X-Promotion-Generation": str(generation),
                                 "X-Promotion-Worker": str(self.worker.pid)})

    def __is_ready__(self) -> bool:
        return self.worker.ready()

    def __is_alive__(self) -> bool:
        return self.worker.alive()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.worker.stop()
