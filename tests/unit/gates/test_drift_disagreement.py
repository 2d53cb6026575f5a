"""The drift gate measures how often the challenger's decisions differ from the champion's
on the window it scores: the rate a shadow of the challenger is judged against."""

from __future__ import annotations

import numpy as np

from _gate_helpers import gate
from test_drift_categorical import _frame, _pipeline, pipelines  # noqa: F401 - the fixture


def test_the_drift_gate_reports_the_two_versions_disagreement_rate(pipelines, capsys):  # noqa: F811
    window = _frame(2000, 11)
    window.to_parquet(pipelines / "window.parquet")
    code, doc = gate(pipelines, capsys, "drift")
    assert code == 0, doc
    measured = doc["gates"][0]["details"]["prediction_disagreement"]
    # the same two pipelines, decided as the router decides (positive class above 0.5)
    train = _frame(3000, 10)
    X = window[["amount", "merchant", "card_present"]]
    champion, challenger = (_pipeline(seed, train).predict_proba(X)[:, 1] > 0.5 for seed in (1, 2))
    assert measured["rows"] == 2000 and 0 < measured["rate"] < 0.2
    assert measured["rate"] == round(float(np.mean(champion != challenger)), 6)
    assert measured["challenger"] != measured["champion"]


def test_judging_the_same_versions_on_the_same_window_again_reads_the_scores_back(pipelines, capsys,  # noqa: F811
                                                                                  monkeypatch):
    """The gate after an approval and the rollout's re-run judge the same two artifacts on
    the same window: the second run needs neither model loaded, and says the same."""
    from promotion.gates import _scoring

    _frame(2000, 11).to_parquet(pipelines / "window.parquet")
    code, first = gate(pipelines, capsys, "drift")
    assert code == 0, first
    calls = []
    real = _scoring.run_isolated
    monkeypatch.setattr(_scoring, "run_isolated", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    code, again = gate(pipelines, capsys, "drift")
    assert code == 0 and calls == [] and again["gates"] == first["gates"]

    # another window (one row changed) is scored afresh
    window = _frame(2000, 11)
    window.loc[0, "amount"] += 1.0
    window.to_parquet(pipelines / "window.parquet")
    code, changed = gate(pipelines, capsys, "drift")
    assert code == 0 and len(calls) == 1
