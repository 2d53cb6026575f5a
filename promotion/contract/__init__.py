"""The contract between the ``promotion`` package and the serving side (``services/``).

Both sides import these modules; neither imports the other's code (the package names
the service only by module path, to start it). Each wire format is defined once:

- :mod:`promotion.contract.routing` - the routing document (:class:`Routing`): admin
  request body, persisted ``routing.json``, ``GET /admin/routing`` view; sticky buckets
- :mod:`promotion.contract.predict` - ``POST /predict`` request and answer formats
- :mod:`promotion.contract.metrics` - Prometheus metric names, labels and latency buckets
- :mod:`promotion.contract.inference_log` - the sampled inference-log rows, writer and reader
- :mod:`promotion.contract.digest` - artifact digests (``sha256:<hex>`` of an artifact tree)
- :mod:`promotion.contract.launch` - how the service is started (target, environment)

Usage::

    from promotion.contract import Routing, read_inference_log, metrics
    view = Routing.from_json(requests.get(url + ROUTING_PATH).json(), view=True)
"""

from __future__ import annotations

from promotion.contract import metrics, predict
from promotion.contract.digest import DIGEST_RE, tree_digest
from promotion.contract.inference_log import InferenceLog, read_inference_log
from promotion.contract.routing import (ROUTING_KEY_HEADER, ROUTING_PATH, Routing, RoutingInputError, Shadow,
                                        WorkerStatus, bucket, parse_request)

__all__ = ["Routing", "Shadow", "WorkerStatus", "RoutingInputError", "parse_request", "bucket", "ROUTING_PATH",
           "ROUTING_KEY_HEADER", "InferenceLog", "read_inference_log", "DIGEST_RE", "tree_digest", "metrics",
           "predict"]
