"""Prediction request bodies, in MLflow's scoring formats or the router's ``features``, as columns.

:func:`parse` turns a request body into a :class:`Batch`: the raw JSON values of each
named column, one per row, not yet checked against any model (each version checks the
columns its signature names; a shadow version may name others)::

    batch = parse({"dataframe_split": {"columns": ["amount", "merchant"], "data": [[12.0, "fuel"]]}})
    batch.columns, batch.n      # {"amount": [12.0], "merchant": ["fuel"]}, 1

The formats are MLflow's (``mlflow.pyfunc.scoring_server``): ``dataframe_split``
(``columns``, ``data``, optional ``index``), ``dataframe_records`` (a list of objects),
``instances`` and ``inputs`` (a list of objects, an object of columns, or, for models
without named columns, a list of rows or a tensor). ``params`` may accompany any of
them. Anything else is an :class:`InputError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promotion.contract.predict import (DF_RECORDS, DF_SPLIT, FEATURES, INPUT_FIELDS, INPUTS, INSTANCES,
                                        PARAMS)

MAX_ROWS = 10_000  # rows per request: a bound on the memory and time one request can take


class InputError(ValueError):
    """A request that does not fit the format or the model's signature (HTTP 400)."""


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # a record without that column (unlike null, which the client sent)


@dataclass(frozen=True, slots=True)
class Batch:
    """One request's rows.

    ``columns`` maps a column name to one raw value per row (:data:`MISSING` where a
    record lacks it); ``None`` when the rows came without names, in ``positional`` (a
    list of rows, or a tensor's nested lists).
    """

    columns: dict[str, list] | None
    n: int
    fmt: str
    params: dict | None = None
    positional: list | None = None

    @property
    def legacy(self) -> bool:
        """The router's own one-row ``features`` form (answered with score and label)."""
        return self.fmt == FEATURES

    def column_label(self, name: str, row: int) -> str:
        """How an error names a column (and the row, when there are several)."""
        if self.fmt == FEATURES:
            return f"features.{name}"
        return f"column {name}" + (f" (row {row})" if self.n > 1 else "")


def parse(body: Any) -> Batch:
    """The body's rows; InputError naming the field for anything that is not a request."""
    if not isinstance(body, dict):
        raise InputError("body: must be a JSON object with one of " + ", ".join(INPUT_FIELDS))
    given = [k for k in INPUT_FIELDS if body.get(k) is not None]
    unknown = sorted(str(k) for k in body if k not in INPUT_FIELDS and k != PARAMS)
    if unknown:
        raise InputError(f"body: unknown field(s) {', '.join(unknown)} (expected one of {', '.join(INPUT_FIELDS)})")
    if len(given) != 1:
        what = "none" if not given else ", ".join(given)
        raise InputError(f"body: must have exactly one of {', '.join(INPUT_FIELDS)} (got {what})")
    fmt = given[0]
    data = body[fmt]
    params = body.get(PARAMS)
    if params is not None and not isinstance(params, dict):
        raise InputError("params: must be an object of name -> value")
    if fmt == FEATURES:
        if not isinstance(data, dict):
            raise InputError("features: must be an object of name -> value")
        return Batch({k: [v] for k, v in data.items()}, 1, fmt, params)
    if fmt == DF_RECORDS:
        columns, n = _records(data, fmt)
        return _bounded(Batch(columns, n, fmt, params))
    if fmt == DF_SPLIT:
        return _bounded(_split(data, params))
    return _bounded(_tensor_or_columns(data, fmt, params))


def _bounded(batch: Batch) -> Batch:
    if batch.n > MAX_ROWS:
        raise InputError(f"{batch.fmt}: {batch.n} rows; at most {MAX_ROWS} per request")
    if batch.n == 0:
        raise InputError(f"{batch.fmt}: holds no rows")
    return batch


def _records(records: Any, where: str) -> tuple[dict[str, list], int]:
    if not isinstance(records, list):
        raise InputError(f"{where}: must be a list of objects (one per row)")
    if len(records) > MAX_ROWS:
        raise InputError(f"{where}: {len(records)} rows; at most {MAX_ROWS} per request")
    if len(records) == 1:  # the common case, without the padding below
        only = records[0]
        if not isinstance(only, dict):
            raise InputError(f"{where}[0]: must be an object of column -> value")
        return {k: [v] for k, v in only.items()}, 1
    columns: dict[str, list] = {}
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"{where}[{i}]: must be an object of column -> value")
        for k, v in record.items():
            col = columns.get(k)
            if col is None:
                col = columns[k] = [MISSING] * i
            col.append(v)
        for col in columns.values():
            if len(col) <= i:
                col.append(MISSING)
    return columns, len(records)


def _split(data: Any, params: dict | None) -> Batch:
    if not isinstance(data, dict):
        raise InputError(f"{DF_SPLIT}: must be an object with data (and columns, index)")
    extra = sorted(set(map(str, data)) - {"columns", "data", "index"})
    if extra or "data" not in data:
        got = ", ".join(sorted(map(str, data)))
        raise InputError(f"{DF_SPLIT}: must have data and may have columns and index (got {got})")
    rows, names = data["data"], data.get("columns")
    if not isinstance(rows, list):
        raise InputError(f"{DF_SPLIT}.data: must be a list of rows")
    if len(rows) > MAX_ROWS:
        raise InputError(f"{DF_SPLIT}: {len(rows)} rows; at most {MAX_ROWS} per request")
    if names is None:
        return Batch(None, len(rows), DF_SPLIT, params, positional=rows)
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise InputError(f"{DF_SPLIT}.columns: must be a list of column names")
    if len(set(names)) != len(names):
        raise InputError(f"{DF_SPLIT}.columns: a column is named twice")
    width = len(names)
    columns: dict[str, list] = {c: [] for c in names}
    lists = list(columns.values())
    for i, r in enumerate(rows):
        if not isinstance(r, list):
            if width != 1:
                raise InputError(f"{DF_SPLIT}.data[{i}]: must be a list of {width} values")
            r = [r]
        if len(r) != width:
            raise InputError(f"{DF_SPLIT}.data[{i}]: has {len(r)} values for {width} columns")
        for col, v in zip(lists, r):
            col.append(v)
    return Batch(columns, len(rows), DF_SPLIT, params)


def _tensor_or_columns(data: Any, fmt: str, params: dict | None) -> Batch:
    if isinstance(data, dict):  # columns: {"amount": [1.0, 2.0], ...} (or one row of scalars)
        if not data:
            raise InputError(f"{fmt}: holds no columns")
        lengths = {k: len(v) for k, v in data.items() if isinstance(v, list)}
        if not lengths:
            return Batch({k: [v] for k, v in data.items()}, 1, fmt, params)
        if len(lengths) != len(data):
            scalar = next(k for k in data if k not in lengths)
            raise InputError(f"{fmt}.{scalar}: must be a list of values, one per row, like the other columns")
        n = next(iter(lengths.values()))
        for k, m in lengths.items():
            if m != n:
                raise InputError(f"{fmt}.{k}: has {m} values, other columns have {n}")
        return Batch({k: list(v) for k, v in data.items()}, n, fmt, params)
    if isinstance(data, list):
        if data and all(isinstance(r, dict) for r in data):
            columns, n = _records(data, fmt)
            return Batch(columns, n, fmt, params)
        if any(isinstance(r, dict) for r in data):
            raise InputError(f"{fmt}: mixes objects and other values; send a list of objects, one per row")
        return Batch(None, len(data), fmt, params, positional=data)
    raise InputError(f"{fmt}: must be a list of rows or an object of columns")


__all__ = ["Batch", "InputError", "MISSING", "MAX_ROWS", "parse", "DF_RECORDS", "DF_SPLIT", "INPUTS", "INSTANCES",
           "FEATURES"]
