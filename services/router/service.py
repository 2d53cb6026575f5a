"""The BentoML service that routes ``/predict`` between model versions by weight.

Run it (environment variables configure it; see ``docs/service.md``)::

    PROMOTION_SERVICE_STATE=/tmp/svc MLFLOW_TRACKING_URI=sqlite:///…/mlflow.db \\
    PROMOTION_ADMIN_TOKEN=… BENTOML_HOME=/tmp/svc/bentoml \\
        bentoml serve services.router.service:Router --host 127.0.0.1 --port 3000

Endpoints: ``POST /predict`` (MLflow's scoring formats, batches included, or the router's
one-row ``features``; see :mod:`promotion.contract.predict`), ``GET|POST /admin/routing``,
``POST /feedback`` (labels for served request ids, :mod:`promotion.contract.feedback`),
``GET /healthz``, ``GET /readyz``, ``GET /metrics``. Everything else lives in :class:`services.router.worker.Worker`; this
module and :mod:`services.router.admin` (the admin endpoints) only adapt it to HTTP.
Heavy imports (MLflow, prometheus_client) happen in the worker process at start-up, after
BentoML has set up multiprocess metrics.
"""

from __future__ import annotations

import json
import os
import typing as t

import bentoml
from starlette.responses import Response

from promotion.contract import feedback as feedback_wire
from promotion.contract.routing import GENERATION_HEADER, PIN_HEADER, WORKER_HEADER
from promotion.contract.routing import ROUTING_KEY_HEADER as DEFAULT_KEY_HEADER
from services.router import admin, api, feedback, runtime

runtime.install_request_timeout()  # before BentoML builds the app: see services/router/runtime.py

MODEL_NAME = os.environ.get("PROMOTION_MODEL_NAME", "fraud-detector")
WORKERS = int(os.environ.get("PROMOTION_WORKERS", "2"))
ROUTING_KEY_HEADER = os.environ.get("PROMOTION_ROUTING_KEY_HEADER", DEFAULT_KEY_HEADER).lower()
_ROUTING_KEY = ROUTING_KEY_HEADER.encode("latin-1")
_REQUEST_ID = feedback_wire.REQUEST_ID_HEADER.lower().encode("latin-1")

# The worker of this process; the admin app reaches it here (one service instance per process).
_worker = None


def request_keys(scope) -> tuple[str | None, str | None]:
    """The routing key and the client's request id (``None`` unless a sane token), read
    from the ASGI scope (whose header names the server has lowercased): cheaper than
    building Starlette's Headers on every request."""
    key = rid = None
    for name, value in scope["headers"]:
        if name == _ROUTING_KEY:
            key = value.decode("latin-1")
        elif name == _REQUEST_ID:
            rid = value.decode("latin-1")
    return key, (rid if feedback_wire.valid_request_id(rid) else None)


admin_app = admin.make_app(lambda: _worker)
# mounted at the root, passively (BentoML's mounts match only their own routes): POST /feedback
feedback_app = feedback.make_app(lambda: _worker)


def _index_size() -> int:
    raw = os.environ.get(feedback_wire.REQUEST_INDEX_SIZE_ENV, "").strip()
    if not raw:
        return feedback_wire.DEFAULT_INDEX_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise RuntimeError(f"{feedback_wire.REQUEST_INDEX_SIZE_ENV}: must be an integer, not {raw[:40]!r}") from None
    if size < 0:
        raise RuntimeError(f"{feedback_wire.REQUEST_INDEX_SIZE_ENV}: must be >= 0 (0 disables feedback)")
    return size



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
        feedback_token=os.environ.get(feedback_wire.FEEDBACK_TOKEN_ENV),
        segment_column=os.environ.get(feedback_wire.SEGMENT_COLUMN_ENV) or None,
        index_size=_index_size(),
    )


@bentoml.service(name="promotion_router", workers=WORKERS, traffic={"timeout": runtime.REQUEST_TIMEOUT_S})
@bentoml.asgi_app(admin_app, path="/admin")
@bentoml.asgi_app(feedback_app, path="/")
class Router:
    """Champion/canary/shadow router over MLflow model versions."""

    def __init__(self) -> None:
        global _worker
        self.worker = _make_worker()
        self.worker.start()
        _worker = self.worker
        runtime.freeze_startup_heap()

    @bentoml.api(route="/predict", input_spec=api.PredictBody)
    async def predict(self, ctx: bentoml.Context, **fields: t.Any) -> dict:
        """Predict: MLflow's scoring formats or ``{"features": {...}}`` (see
        :mod:`promotion.contract.predict`) -> ``{"version", "predictions", "scores", "request_ids"}``."""
        body = api.request_body(fields)
        pinned = ctx.request.headers.get(PIN_HEADER)
        if pinned is not None:
            status, answer, generation = self.worker.handle_pinned(body, pinned.strip(),
                                                                   ctx.request.headers.get("authorization"))
            ctx.response.status_code = status
            return Response(json.dumps(answer, default=str), status_code=status, media_type="application/json",
                            headers={GENERATION_HEADER: str(generation), WORKER_HEADER: str(self.worker.pid)})
        key, rid = request_keys(ctx.request.scope)
        rid = rid or feedback_wire.new_request_id()
        status, answer, generation = self.worker.handle_predict(body, key, rid)
        ctx.response.status_code = status
        return Response(json.dumps(answer, default=str), status_code=status, media_type="application/json",
                        headers={GENERATION_HEADER: str(generation), WORKER_HEADER: str(self.worker.pid),
                                 feedback_wire.REQUEST_ID_HEADER: rid})

    def __is_ready__(self) -> bool:
        return self.worker.ready()

    def __is_alive__(self) -> bool:
        return self.worker.alive()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.worker.stop()
