"""A model version's input signature, compiled once at load and checked per request.

:class:`InputSchema` holds the columns an MLflow signature names, with their types;
:meth:`InputSchema.check` takes a :class:`~services.router.payload.Batch` and returns the
validated values of those columns (extra columns are ignored, as MLflow does), or raises
:class:`~services.router.payload.InputError` naming the column (and the row)::

    schema = InputSchema.from_mlflow(pyfunc_model.metadata.get_input_schema())
    values = schema.check(parse({"features": {"amount": 12.0, "merchant": "fuel"}}), version=3)
    frame = schema.frame(values)      # a pandas DataFrame with the signature's dtypes

The check is a few type comparisons per value, so a one-row request costs microseconds;
arrays and frames are built only by the predictors that need them.

Types: ``double``/``float`` take JSON numbers; ``long``/``integer`` take integers (and
integral numbers); ``boolean`` takes true/false; ``string`` takes strings (categorical
columns are strings in MLflow signatures); ``binary`` takes base64 strings; ``datetime``
takes ISO 8601 strings. MLflow's array, object and map types are passed through as sent.
A column the signature marks optional may be missing or null.
"""

from __future__ import annotations

import base64
import binascii
import math
import reprlib
from dataclasses import dataclass
from typing import Any

from services.router.payload import MISSING, Batch, InputError

_NUMPY = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32", "boolean": "bool",
          "string": "object", "binary": "object", "datetime": "datetime64[ns]"}
_INT_RANGE = {"long": 2**63, "integer": 2**31}
_FLOAT_MAX = 2**1023  # ints beyond it do not convert to a float64 (float32 columns take inf)
NUMERIC = frozenset({"double", "float", "long", "integer", "boolean"})
_NUMBERS, _INTS = (float, int), (int,)
# the types a column takes as they are; anything else goes through the value-by-value check
_FAST = {"double": _NUMBERS, "float": _NUMBERS, "long": _INTS, "integer": _INTS, "boolean": (bool,),
         "string": (str,)}


@dataclass(frozen=True, slots=True)
class Column:
    """One input column: its name, MLflow type name (``any`` for composite types) and whether required."""

    name: str
    type: str
    required: bool = True

    @property
    def dtype(self) -> str:
        return _NUMPY.get(self.type, "object")


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict, _REPR.maxlevel = 40, 40, 4, 4, 2


def _describe(v: Any) -> str:
    """A short rendering of a client's value (a huge or deeply nested one costs no more)."""
    text = _REPR.repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


class InputSchema:
    """The named columns a version takes (or none known: every column passes as sent)."""

    def __init__(self, columns: tuple[Column, ...] | None, tensor: tuple[str, tuple[int, ...]] | None = None) -> None:
        self.columns = columns
        self.tensor = tensor  # (numpy dtype, shape) of a tensor-spec signature
        self.names: tuple[str, ...] = tuple(c.name for c in columns or ())
        self.numeric = bool(columns) and all(c.type in NUMERIC for c in columns)
        self._checks = tuple((c.name, c.type, c.required) for c in columns or ())

    @classmethod
    def from_mlflow(cls, schema, fallback_features: list[str] | None = None) -> "InputSchema":
        """From an ``mlflow.types.Schema`` (or None: the legacy ``features`` metadata, else anything)."""
        if schema is None:
            if fallback_features:
                return cls(tuple(Column(str(n), "double") for n in fallback_features))
            return cls(None)
        if schema.is_tensor_spec():
            spec = schema.inputs[0]
            if len(schema.inputs) == 1 and spec.name is None:
                return cls(None, tensor=(str(spec.type), tuple(spec.shape)))
            return cls(None)  # named tensors: MLflow's own checks, through pyfunc
        if not schema.has_input_names():
            return cls(None)
        columns = []
        for spec in schema.inputs:
            t = getattr(spec.type, "name", None)
            columns.append(Column(spec.name, t if t in _NUMPY else "any", bool(getattr(spec, "required", True))))
        return cls(tuple(columns))

    # -- the per-request check ---------------------------------------------------------

    def check(self, batch: Batch, version: int) -> dict[str, list]:
        """The validated values of each signature column, in signature order (missing
        optional values as None); InputError naming the first column that does not fit."""
        if self.columns is None:
            return self._unchecked(batch)
        columns = batch.columns
        if columns is None:
            raise InputError(f"{batch.fmt}: rows given as lists carry no column names; version {version} takes "
                             f"named columns ({', '.join(self.names)}): send objects, or dataframe_split with columns")
        out: dict[str, list] = {}
        n = batch.n
        for name, kind, required in self._checks:
            values = columns.get(name)
            if values is None:
                if required:
                    raise InputError(f"{batch.column_label(name, 0)}: missing (version {version} needs it)")
                out[name] = [None] * n
                continue
            fast = _FAST.get(kind)
            if fast is None:
                values = self._fix(batch, name, kind, required, values, version)
            else:
                # an int must also fit the column (an integer type's range, a float's for numbers)
                bound = _INT_RANGE.get(kind, _FLOAT_MAX)
                for v in values:
                    t = type(v)
                    if t not in fast or (t is int and not -bound <= v < bound):
                        values = self._fix(batch, name, kind, required, values, version)
                        break
            out[name] = values
        return out

    def _fix(self, batch: Batch, name: str, kind: str, required: bool, values: list, version: int) -> list:
        """The slow path: check each value, replace missing optional ones with None."""
        fixed = []
        for i, v in enumerate(values):
            if v is MISSING or v is None:
                if required:
                    what = "missing" if v is MISSING else "null"
                    raise InputError(f"{batch.column_label(name, i)}: {what} (version {version} needs it)")
                fixed.append(None)
                continue
            problem = _problem(kind, v)
            if problem:
                raise InputError(f"{batch.column_label(name, i)}: {problem}, not {_describe(v)}")
            fixed.append(v)
        return fixed

    def _unchecked(self, batch: Batch) -> dict[str, list]:
        if batch.columns is None:
            return {}
        return {k: [None if v is MISSING else v for v in vs] for k, vs in batch.columns.items()}

    # -- building model inputs ---------------------------------------------------------

    def arrays(self, values: dict[str, list], names: tuple[str, ...] | None = None) -> dict[str, Any]:
        """One numpy array per column, in the signature's dtypes."""
        import numpy as np

        types = {c.name: c for c in self.columns or ()}
        out = {}
        for name in names or tuple(values):
            col = types.get(name)
            vals = values[name]
            if col is None or col.type == "any":
                out[name] = _objects(vals)
            elif col.type == "binary":
                out[name] = _objects([None if v is None else base64.b64decode(v) for v in vals])
            elif col.type in ("long", "integer", "boolean") and any(v is None for v in vals):
                out[name] = np.array([math.nan if v is None else v for v in vals], dtype="float64")
            else:
                out[name] = np.array(vals, dtype=col.dtype) if col.dtype != "object" else _objects(vals)
        return out

    def frame(self, values: dict[str, list], names: tuple[str, ...] | None = None, categories: dict | None = None):
        """A DataFrame of ``values`` (``names``: these columns, in this order); string
        columns in ``categories`` become pandas categoricals with those categories."""
        import pandas as pd

        arrays = self.arrays(values, names)
        for name, cats in (categories or {}).items():
            if name in arrays:
                arrays[name] = pd.Categorical(arrays[name], categories=cats)
        return pd.DataFrame(arrays, copy=False)

    def matrix(self, values: dict[str, list], names: tuple[str, ...], dtype: str = "float32"):
        """The numeric columns ``names`` as one C-ordered 2-D array (None as NaN)."""
        import numpy as np

        if len(values[names[0]]) == 1:  # one row: no transpose, no copy
            return np.array([[values[n][0] for n in names]], dtype=dtype)
        return np.ascontiguousarray(np.array([values[n] for n in names], dtype=dtype).T)

    def tensor_input(self, batch: Batch, version: int):
        """A tensor-spec model's input array from positional rows; InputError on a bad shape."""
        import numpy as np

        dtype, shape = self.tensor
        data = batch.positional
        if data is None:
            raise InputError(f"{batch.fmt}: version {version} takes a tensor of shape {list(shape)}: send "
                             "inputs (or instances) as nested lists")
        try:
            arr = np.asarray(data, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{batch.fmt}: not a {dtype} tensor ({str(exc)[:100]})") from None
        if arr.ndim != len(shape) or any(s not in (-1, None) and s != a for s, a in zip(shape, arr.shape)):
            raise InputError(f"{batch.fmt}: shape {list(arr.shape)} does not fit {list(shape)}")
        return arr


def _objects(vals: list):
    import numpy as np

    arr = np.empty(len(vals), dtype=object)
    arr[:] = vals
    return arr


def _problem(kind: str, v: Any) -> str | None:
    """Why ``v`` does not fit a column of MLflow type ``kind`` (None when it fits)."""
    t = type(v)
    if kind in ("double", "float"):
        if t is int:
            return None if -_FLOAT_MAX <= v < _FLOAT_MAX else f"must be a number that fits a {kind}"
        return None if t is float else "must be a number"
    if kind in ("long", "integer"):
        if t is float and math.isfinite(v) and v.is_integer():
            v = int(v)
        elif t is not int:
            return "must be an integer"
        return None if -_INT_RANGE[kind] <= v < _INT_RANGE[kind] else f"must be an integer that fits a {kind}"
    if kind == "boolean":
        return None if t is bool else "must be true or false"
    if kind == "string":
        return None if t is str else "must be a string"
    if kind == "binary":
        if t is not str:
            return "must be a base64 string"
        try:
            base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            return "must be a base64 string"
        return None
    if kind == "datetime":
        if t is not str:
            return "must be an ISO 8601 date or time string"
        import numpy as np

        try:
            np.datetime64(v)
        except ValueError:
            return "must be an ISO 8601 date or time string"
        return None
    return None  # "any": MLflow's composite types, passed through
