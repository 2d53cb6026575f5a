"""Request ids and the feedback endpoint's wire format (``POST /feedback``).

Every prediction carries a request id. A client may send its own in ``X-Request-Id``
(:func:`valid_request_id`: 1-64 characters of ``A-Z a-z 0-9 . _ : -``, starting with a
letter or digit); anything else is replaced by a generated one (a random uuid4 in hex).
The id comes back in the ``X-Request-Id`` header and in the body, one per row
(:func:`row_ids`: the request id itself for one row, ``<id>.<row>`` for a batch)::

    {"version": 7, "predictions": [1, 0], "scores": [0.93, 0.02], "request_ids": ["ab12.0", "ab12.1"]}
    {"version": 7, "score": 0.93, "label": 1, "request_id": "ab12"}

Ground truth comes back later, in batches (a JSON array, at most :data:`MAX_ITEMS`
items and :data:`MAX_BODY_BYTES` bytes), with ``Authorization: Bearer <token>``::

    POST /feedback
    [{"request_id": "ab12.0", "label": 1}, {"request_id": "ab12.1", "label": 0}]   # classifiers
    [{"request_id": "cd34", "value": 41.5}]                                          # regressors

The answer (HTTP 200) counts what happened to each item::

    {"accepted": 2, "duplicate": 0, "unknown": 0, "invalid": 0, "unknown_ids": [], "invalid_items": []}

``duplicate``: the id was labelled before (the first label counts; sending a batch twice
changes nothing). ``unknown``: the service has no record of that id (never served, or
older than the request index keeps). ``invalid``: the label does not fit what served the
request (a ``value`` for a classifier's request, a class the model does not predict).
``unknown_ids`` and ``invalid_items`` list the first :data:`MAX_REPORTED` of each.
Errors as the admin API's: 401 (token, checked before the body is read), 413 (body too
large), 400 (not a batch: the message names the item and field), 503 (disabled).
"""

from __future__ import annotations

import math
import re
from typing import Any

FEEDBACK_PATH = "/feedback"
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_FIELD = "request_id"
REQUEST_IDS_FIELD = "request_ids"

# The service's environment (see docs/service.md)
FEEDBACK_TOKEN_ENV = "PROMOTION_FEEDBACK_TOKEN"      # default: the admin token
SEGMENT_COLUMN_ENV = "PROMOTION_SEGMENT_COLUMN"      # the fairness gate's segment attribute (request column)
REQUEST_INDEX_SIZE_ENV = "PROMOTION_REQUEST_INDEX_SIZE"  # request ids kept for joins; 0 disables feedback

DEFAULT_INDEX_SIZE = 200_000
MAX_BODY_BYTES = 2 << 20
MAX_ITEMS = 10_000
MAX_REPORTED = 100
MAX_ROW_ID = 80  # a client's id (64) plus ".<row>"

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}")
_ROW_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,79}")


class FeedbackInputError(ValueError):
    """A body that is not a feedback batch (HTTP 400); the message names the item and field."""


def valid_request_id(value: str | None) -> bool:
    """Whether a client's ``X-Request-Id`` may be used as the request id."""
    return value is not None and len(value) <= 64 and _CLIENT_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """A random uuid4, as 32 hex digits (``os.urandom`` with the version and variant bits
    set: a quarter of ``uuid.uuid4().hex``'s cost on the request path)."""
    import os

    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


def row_ids(request_id: str, n: int) -> list[str]:
    """The id of each row of a request: the request id for one row, ``<id>.<i>`` for more."""
    if n == 1:
        return [request_id]
    return [f"{request_id}.{i}" for i in range(n)]


def parse_batch(body: Any) -> list[tuple[str, str, Any]]:
    """``[(request_id, "label" | "value", label or value)]`` from a decoded body;
    :class:`FeedbackInputError` naming the first item and field that does not fit."""
    if not isinstance(body, list):
        raise FeedbackInputError("body: must be a JSON array of {request_id, label} or {request_id, value}")
    if not body:
        raise FeedbackInputError("body: holds no items")
    if len(body) > MAX_ITEMS:
        raise FeedbackInputError(f"body: {len(body)} items; at most {MAX_ITEMS} per request")
    out = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise FeedbackInputError(f"[{i}]: must be an object with request_id and label (or value)")
        extra = sorted(str(k) for k in item if k not in (REQUEST_ID_FIELD, "label", "value"))
        if extra:
            raise FeedbackInputError(f"[{i}]: unknown field(s) {', '.join(extra)} (expected request_id and "
                                     "label or value)")
        rid = item.get(REQUEST_ID_FIELD)
        if not isinstance(rid, str) or len(rid) > MAX_ROW_ID or not _ROW_ID.fullmatch(rid):
            raise FeedbackInputError(f"[{i}].request_id: must be a request id as the service returned it "
                                     f"(1-{MAX_ROW_ID} characters of A-Z a-z 0-9 . _ : -)")
        has_label, has_value = "label" in item, "value" in item
        if has_label == has_value:
            raise FeedbackInputError(f"[{i}]: must have exactly one of label (classifiers) or value (regressors)")
        if has_label:
            label = item["label"]
            if not (isinstance(label, (bool, int, str)) or (isinstance(label, float) and label.is_integer())) \
                    or (isinstance(label, str) and len(label) > 200):
                raise FeedbackInputError(f"[{i}].label: must be a class (an integer, a boolean or a short string)")
            out.append((rid, "label", label))
        else:
            value = item["value"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise FeedbackInputError(f"[{i}].value: must be a finite number")
            out.append((rid, "value", float(value)))
    return out


__all__ = ["FEEDBACK_PATH", "REQUEST_ID_HEADER", "REQUEST_ID_FIELD", "REQUEST_IDS_FIELD", "FEEDBACK_TOKEN_ENV",
           "SEGMENT_COLUMN_ENV", "REQUEST_INDEX_SIZE_ENV", "DEFAULT_INDEX_SIZE", "MAX_BODY_BYTES", "MAX_ITEMS",
           "MAX_REPORTED", "FeedbackInputError", "valid_request_id", "new_request_id", "row_ids", "parse_batch"]
