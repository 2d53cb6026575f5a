"""Request bodies in MLflow's scoring formats, checked against a version's signature.

What a client sees: the same rows in every format give the same columns; anything that
does not fit is one message naming the field, the column and the row.
"""

from __future__ import annotations

import math

import pytest

from services.router.payload import MAX_ROWS, MISSING, InputError, parse
from services.router.signature import Column, InputSchema

ROWS = [{"amount": 12.0, "hour": 3, "merchant": "fuel"}, {"amount": 80.5, "hour": 23, "merchant": "travel"}]
COLUMNS = {"amount": [12.0, 80.5], "hour": [3, 23], "merchant": ["fuel", "travel"]}
SCHEMA = InputSchema((Column("amount", "double"), Column("hour", "long"), Column("merchant", "string"),
                      Column("note", "string", required=False)))


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["amount", "hour", "merchant"], "data": [[12.0, 3, "fuel"], [80.5, 23, "travel"]]}},
    {"dataframe_split": {"columns": ["amount", "hour", "merchant"], "data": [[12.0, 3, "fuel"], [80.5, 23, "travel"]],
                         "index": [7, 8]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"inputs": ROWS},
    {"inputs": COLUMNS},
    {"instances": COLUMNS},
])
def test_every_mlflow_format_gives_the_same_columns(body):
    batch = parse(body)
    assert batch.n == 2 and batch.columns == COLUMNS and not batch.legacy
    assert SCHEMA.check(batch, 1) == {**COLUMNS, "note": [None, None]}


def test_features_is_one_row_and_answered_in_the_legacy_shape():
    batch = parse({"features": ROWS[0]})
    assert batch.n == 1 and batch.legacy and batch.columns == {k: [v] for k, v in ROWS[0].items()}


def test_records_with_different_keys_are_padded_with_missing():
    batch = parse({"dataframe_records": [{"amount": 1.0}, {"hour": 2}]})
    assert batch.columns == {"amount": [1.0, MISSING], "hour": [MISSING, 2]}


def test_rows_without_names_stay_positional():
    batch = parse({"inputs": [[1.0, 2.0], [3.0, 4.0]]})
    assert batch.columns is None and batch.positional == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(InputError, match=r"inputs: rows given as lists carry no column names; version 4 takes "
                                         r"named columns \(amount, hour, merchant, note\)"):
        SCHEMA.check(batch, 4)


@pytest.mark.parametrize("body, message", [
    ([1, 2], "body: must be a JSON object"),
    ({}, "body: must have exactly one of dataframe_split, dataframe_records, instances, inputs, features (got none)"),
    ({"dataframe_records": ROWS, "inputs": ROWS}, "(got dataframe_records, inputs)"),
    ({"rows": ROWS}, "body: unknown field(s) rows"),
    ({"features": [1.0]}, "features: must be an object of name -> value"),
    ({"dataframe_records": {"amount": 1.0}}, "dataframe_records: must be a list of objects"),
    ({"dataframe_records": [ROWS[0], 3]}, "dataframe_records[1]: must be an object of column -> value"),
    ({"dataframe_records": []}, "dataframe_records: holds no rows"),
    ({"dataframe_split": {"columns": ["a"], "rows": []}}, "dataframe_split: must have data and may have columns"),
    ({"dataframe_split": {"columns": ["a", "b"], "data": [[1]]}}, "dataframe_split.data[0]: has 1 values for 2 columns"),
    ({"dataframe_split": {"columns": ["a", "a"], "data": [[1, 2]]}}, "dataframe_split.columns: a column is named twice"),
    ({"inputs": {"a": [1, 2], "b": [1]}}, "inputs.b: has 1 values, other columns have 2"),
    ({"inputs": {"a": [1, 2], "b": 3}}, "inputs.b: must be a list of values"),
    ({"instances": [ROWS[0], [1]]}, "instances: mixes objects and other values"),
    ({"instances": "x"}, "instances: must be a list of rows or an object of columns"),
    ({"features": ROWS[0], "params": [1]}, "params: must be an object"),
    ({"dataframe_records": [ROWS[0]] * (MAX_ROWS + 1)}, f"at most {MAX_ROWS} per request"),
])
def test_a_body_that_is_not_a_request_is_one_message_naming_the_field(body, message):
    with pytest.raises(InputError) as err:
        parse(body)
    assert message in str(err.value)


@pytest.mark.parametrize("rows, message", [
    ([{"hour": 3, "merchant": "fuel"}], "column amount: missing (version 2 needs it)"),
    ([ROWS[0], {**ROWS[1], "merchant": 7}], "column merchant (row 1): must be a string, not 7"),
    ([{**ROWS[0], "amount": "12"}], "column amount: must be a number, not '12'"),
    ([{**ROWS[0], "amount": True}], "column amount: must be a number, not True"),
    ([{**ROWS[0], "hour": 3.5}], "column hour: must be an integer, not 3.5"),
    ([{**ROWS[0], "hour": 2**70}], f"column hour: must be an integer that fits a long, not {2**70}"),
    ([ROWS[0], {**ROWS[1], "amount": None}], "column amount (row 1): null (version 2 needs it)"),
    ([{**ROWS[0], "note": 5}], "column note: must be a string, not 5"),
    ([{**ROWS[0], "amount": 10**400}], "column amount: must be a number that fits a double, not 1000"),
    ([{**ROWS[0], "merchant": ["x" * 10**6] * 10**4}], "column merchant: must be a string, not ['xxxxxxxx"),
])
def test_a_value_that_does_not_fit_the_signature_names_the_column_and_row(rows, message):
    with pytest.raises(InputError) as err:
        SCHEMA.check(parse({"dataframe_records": rows}), 2)
    assert str(err.value).startswith(message) and len(str(err.value)) < 120


def test_the_legacy_form_names_the_feature():
    with pytest.raises(InputError, match=r"^features\.hour: missing \(version 3 needs it\)$"):
        SCHEMA.check(parse({"features": {"amount": 1.0, "merchant": "x"}}), 3)


def test_integral_numbers_fit_integer_columns_and_optional_columns_may_be_absent():
    values = SCHEMA.check(parse({"dataframe_records": [{"amount": 1, "hour": 4.0, "merchant": "x"}]}), 1)
    assert values == {"amount": [1], "hour": [4.0], "merchant": ["x"], "note": [None]}
    frame = SCHEMA.frame(values)
    assert [str(t) for t in frame.dtypes[:2]] == ["float64", "int64"]
    assert frame.iloc[0].tolist() == [1.0, 4, "x", None]


def test_other_types_are_checked_too():
    schema = InputSchema((Column("flag", "boolean"), Column("when", "datetime"), Column("blob", "binary"),
                          Column("n", "integer", required=False)))
    ok = {"flag": True, "when": "2026-01-31T12:00:00", "blob": "aGk="}
    values = schema.check(parse({"features": ok}), 1)
    frame = schema.frame(values)
    assert frame["blob"].iloc[0] == b"hi" and str(frame["when"].dtype).startswith("datetime64")
    assert math.isnan(frame["n"].iloc[0])  # a missing optional integer is NaN, as pandas has it
    for bad, message in (({"flag": 1}, "features.flag: must be true or false"),
                         ({"when": "yesterday"}, "features.when: must be an ISO 8601 date or time string"),
                         ({"blob": "***"}, "features.blob: must be a base64 string")):
        with pytest.raises(InputError, match=message):
            schema.check(parse({"features": {**ok, **bad}}), 1)


def test_a_model_without_a_signature_takes_the_columns_as_sent():
    schema = InputSchema(None)
    values = schema.check(parse({"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2}]}), 1)
    assert values == {"a": [1, 2], "b": ["x", None]}


def test_a_numeric_matrix_keeps_the_model_column_order():
    values = SCHEMA.check(parse({"inputs": COLUMNS}), 1)
    m = SCHEMA.matrix(values, ("hour", "amount"))
    assert m.tolist() == [[3.0, 12.0], [23.0, 80.5]] and m.flags["C_CONTIGUOUS"]
    assert SCHEMA.matrix(SCHEMA.check(parse({"features": ROWS[0]}), 1), ("amount",)).shape == (1, 1)
