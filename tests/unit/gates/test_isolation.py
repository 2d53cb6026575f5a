"""The gates run a model's code only in an isolated process that holds none of the job's tokens."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy


def test_drift_and_cost_run_the_model_without_the_jobs_tokens(repo, tmp_path, monkeypatch, capsys):
    import mlflow.pyfunc

    spy = tmp_path / "seen.jsonl"

    class EnvSpy(mlflow.pyfunc.PythonModel):  # a custom model: its code runs wherever it is loaded
        def predict(self, context, model_input, params=None):
            with open(spy, "a") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "env": sorted(os.environ)}) + "\n")
            return model_input["amount"] / 1000.0

    frame = pd.DataFrame({"amount": np.random.default_rng(0).gamma(2, 20, 600)})
    version, digest = log_version(registry(repo), EnvSpy(), flavor="pyfunc", pip_requirements=["mlflow"],
                                  reference=frame.assign(score=frame["amount"] / 1000.0), example=frame.head(5))
    frame.to_parquet(repo / "window.parquet")
    propose(repo, version, digest, window="window.parquet")
    write_policy(repo, "  drift: {min_rows: 100}\n  cost: {predictions: 10, rounds: 1}\n")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_secret")
    monkeypatch.setenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "oidc_secret")

    code, doc = gate(repo, capsys)
    found = checks(doc)
    assert found["cost.cpu_ms_per_prediction"]["verdict"] == "PASS", doc
    assert found["drift.prediction_psi"]["value"] is not None, doc  # the window was scored
    seen = [json.loads(line) for line in spy.read_text().splitlines()]
    assert seen and all(s["pid"] != os.getpid() for s in seen)
    for s in seen:
        assert not {"GITHUB_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "PROMOTION_STATE"} & set(s["env"]), s["env"]
