"""Signatures compared with their column types: strings, booleans, widened and narrowed numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from promotion.gates.schema import compare, input_kinds


def col(name, type_, required=True):
    return name, {"type": type_, "name": name, "required": required}


def sig(*cols, out=(("score", "double"),)):
    return dict(cols), {n: {"type": t, "name": n} for n, t in out}


def judged(old, new, **kw):
    return {c.name: c for c in compare(old, new, 1, 2, kw.pop("allow_added_optional", True), **kw)}


def test_string_to_double_is_a_type_change():
    got = judged(sig(col("merchant", "string"), col("amount", "double")),
                 sig(col("merchant", "double"), col("amount", "double")))
    assert not got["schema.changed_types"].passed
    assert got["schema.changed_types"].message == "type changed: merchant string->double"


@pytest.mark.parametrize("old, new", [("integer", "long"), ("integer", "double"), ("long", "double"), ("float", "double")])
def test_a_widened_number_passes_and_is_named(old, new):
    got = judged(sig(col("hour", old)), sig(col("hour", new)))
    assert got["schema.changed_types"].passed
    assert got["schema.changed_types"].message == f"no input changed type; widened (every old value still accepted): hour {old}->{new}"


@pytest.mark.parametrize("old, new", [("long", "integer"), ("double", "long"), ("double", "float"), ("boolean", "long"),
                                      ("long", "string")])
def test_a_narrowed_or_other_number_change_blocks(old, new):
    assert not judged(sig(col("x", old)), sig(col("x", new)))["schema.changed_types"].passed


def test_widening_can_be_refused():
    got = judged(sig(col("hour", "long")), sig(col("hour", "double")), allow_widening=False)
    assert not got["schema.changed_types"].passed and "hour long->double" in got["schema.changed_types"].message


def test_new_optional_column_passes_and_a_column_made_required_blocks():
    got = judged(sig(col("amount", "double"), col("note", "string", required=False)),
                 sig(col("amount", "double"), col("note", "string"), col("channel", "string", required=False)))
    assert got["schema.added_features"].passed and got["schema.added_features"].message == "added optional: channel"
    assert not got["schema.now_required"].passed
    assert got["schema.now_required"].message == "optional in v1, required in v2 (callers may omit it): note"


def test_an_output_widening_still_changes_the_output():
    got = judged(sig(col("x", "double"), out=(("prediction", "long"),)),
                 sig(col("x", "double"), out=(("prediction", "double"),)))
    assert not got["schema.outputs"].passed


def test_kinds_come_from_a_saved_signature(tmp_path):
    from mlflow.models import Model, infer_signature

    frame = pd.DataFrame({"amount": [1.5, 2.0], "hour": [1, 2], "merchant": ["a", "b"], "card_present": [True, False]})
    Model(signature=infer_signature(frame, pd.Series([0.1, 0.2]))).save(str(tmp_path / "MLmodel"))
    assert input_kinds(tmp_path) == {"amount": "numeric", "hour": "numeric", "merchant": "categorical",
                                     "card_present": "categorical"}
