"""The prediction endpoint's wire format (``POST /predict``).

Requests: one JSON object with exactly one input field, as MLflow's scoring server takes
them, or the router's own single-row form::

    {"dataframe_split": {"columns": ["amount", "merchant"], "data": [[12.0, "grocery"], [3.5, "fuel"]]}}
    {"dataframe_records": [{"amount": 12.0, "merchant": "grocery"}, ...]}
    {"instances": [{"amount": 12.0, "merchant": "grocery"}, ...]}     # or columns: {"amount": [...], ...}
    {"inputs": {"amount": [12.0, 3.5], "merchant": ["grocery", "fuel"]}}   # or a list of records
    {"features": {"amount": 12.0, "merchant": "grocery"}}             # one row

``params`` may sit beside the input field for models whose signature declares parameters.

Answers: for the MLflow formats, one entry per row, in order::

    {"version": 7, "predictions": [1, 0], "scores": [0.93, 0.02]}

(``scores`` only for classifiers that have one: the positive class's probability of a
binary classifier, or a custom model's ``score`` output column). For ``features``::

    {"version": 7, "score": 0.93, "label": 1}      # a model with a score
    {"version": 7, "prediction": 41.2}             # any other model

Errors: ``{"error": {"kind": "input" | "predict" | "unavailable", "message": "..."}}`` with
HTTP 400 (the input does not fit the version's signature; the message names the column),
500 or 503.
"""

from __future__ import annotations

PREDICT_PATH = "/predict"
DF_SPLIT = "dataframe_split"
DF_RECORDS = "dataframe_records"
INSTANCES = "instances"
INPUTS = "inputs"
FEATURES = "features"
PARAMS = "params"
MLFLOW_FORMATS = (DF_SPLIT, DF_RECORDS, INSTANCES, INPUTS)
INPUT_FIELDS = (*MLFLOW_FORMATS, FEATURES)
