"""A plain single-model BentoML service: the yardstick for the router's overhead.

Same HTTP contract, input handling and model code as :mod:`services.router.service` (the
version is loaded through its pyfunc flavour by :func:`services.router.models.load`, the
body parsed and checked against the signature the same way), but one fixed version and
no routing, metrics, shadow or inference log. ``bench/router_overhead.py`` runs it side
by side with the router. Configured by ``PROMOTION_SERVICE_STATE``,
``MLFLOW_TRACKING_URI``, ``PROMOTION_MODEL_NAME``, ``PROMOTION_PLAIN_VERSION`` and
``PROMOTION_PLAIN_DIGEST``.
"""

from __future__ import annotations

import json
import os
import typing as t
from pathlib import Path

import bentoml
from starlette.responses import Response

from services.router import api, payload, runtime

runtime.install_request_timeout()  # before BentoML builds the app: see services/router/runtime.py

WORKERS = int(os.environ.get("PROMOTION_WORKERS", "2"))


@bentoml.service(name="promotion_plain", workers=WORKERS, traffic={"timeout": runtime.REQUEST_TIMEOUT_S})
class Plain:
    def __init__(self) -> None:
        from promotion.registry import Registry
        from services.router import models

        self.model = models.load(Registry(tracking_uri=os.environ.get("MLFLOW_TRACKING_URI")),
                                 os.environ.get("PROMOTION_MODEL_NAME", "fraud-detector"),
                                 int(os.environ["PROMOTION_PLAIN_VERSION"]), os.environ["PROMOTION_PLAIN_DIGEST"],
                                 Path(os.environ["PROMOTION_SERVICE_STATE"]) / "artifacts")
        self.pid = os.getpid()
        runtime.freeze_startup_heap()

    @bentoml.api(route="/predict", input_spec=api.PredictBody)
    async def predict(self, ctx: bentoml.Context, **fields: t.Any) -> dict:
        try:
            batch = payload.parse(api.request_body(fields))
            answer = self.model.answer(batch, self.model.predict(self.model.inputs(batch), batch))
        except payload.InputError as exc:
            ctx.response.status_code = 400
            return Response(json.dumps({"error": {"kind": "input", "message": str(exc)}}), status_code=400,
                            media_type="application/json")
        return Response(json.dumps(answer, default=str), media_type="application/json",
                        headers={"X-Promotion-Worker": str(self.pid)})
