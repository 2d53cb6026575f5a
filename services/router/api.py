"""The ``/predict`` input as BentoML parses it: every field of the JSON body, known or not.

BentoML builds the body into a pydantic model and hands the method only the fields that
model declares. :class:`PredictBody` declares the input fields of
:mod:`promotion.contract.predict`, so they are validated in pydantic's compiled parser (a
whole-body root model would recompute its JSON schema on every request, about 70 µs),
and gathers any other top-level field under ``kwargs``, which BentoML passes on as keyword
arguments; the router then names them in its 400 instead of silently ignoring them::

    @bentoml.api(route="/predict", input_spec=PredictBody)
    async def predict(self, ctx, **fields):
        body = request_body(fields)       # {"dataframe_split": {...}} as sent
"""

from __future__ import annotations

import typing as t

from _bentoml_sdk.io_models import KWARGS, IODescriptor
from pydantic import model_validator

from promotion.contract.predict import INPUT_FIELDS, PARAMS

_KNOWN = frozenset((*INPUT_FIELDS, PARAMS))


class PredictBody(IODescriptor):
    """MLflow's scoring fields, ``features``, ``params`` and (``kwargs``) whatever else was sent."""

    features: t.Any = None
    dataframe_split: t.Any = None
    dataframe_records: t.Any = None
    instances: t.Any = None
    inputs: t.Any = None
    params: t.Any = None
    kwargs: t.Dict[str, t.Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _gather_unknown(cls, data: t.Any) -> t.Any:
        if isinstance(data, dict) and not _KNOWN.issuperset(data):
            data = dict(data)
            data[KWARGS] = {k: data.pop(k) for k in list(data) if k not in _KNOWN}
        return data


def request_body(fields: dict[str, t.Any]) -> dict[str, t.Any]:
    """The body as the client sent it (fields it left out are absent, not null)."""
    return {k: v for k, v in fields.items() if v is not None}
