"""Drift on categorical and string features: PSI over categories with an unseen bucket, chi-square."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _gate_helpers import checks, gate, log_version, propose, registry, write_policy
from promotion.gates._stats import categorical_drift, category_labels

MERCHANTS = ["grocery", "fuel", "travel", "online"]


def _frame(n: int, seed: int, weights=(0.4, 0.3, 0.2, 0.1), merchants=MERCHANTS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"amount": rng.gamma(2.0, 20.0, n), "merchant": rng.choice(merchants, n, p=list(weights)),
                          "card_present": rng.random(n) < 0.7})
    frame["label"] = ((frame["amount"] > 60) | (frame["merchant"] == "travel")).astype(int)
    return frame


# -- the statistics ----------------------------------------------------------------------

def test_chi_square_is_pearsons_test_of_homogeneity():
    from scipy.stats import chi2_contingency

    ref, cur = _frame(4000, 1)["merchant"], _frame(3000, 2, weights=(0.3, 0.3, 0.25, 0.15))["merchant"]
    got = categorical_drift([ref], [cur])
    table = pd.crosstab(np.r_[np.zeros(len(ref)), np.ones(len(cur))], np.r_[ref.to_numpy(), cur.to_numpy()])
    stat, p, dof, _ = chi2_contingency(table.to_numpy(), correction=False)
    assert got.chi2[0] == pytest.approx(stat) and got.chi2_p[0] == pytest.approx(p)
    assert got.n_categories[0] == 4 and got.unseen[0] == 0.0


def test_same_categories_do_not_drift_and_a_new_one_does():
    ref = _frame(5000, 1)["merchant"]
    steady = categorical_drift([ref], [_frame(5000, 2)["merchant"]])
    assert steady.psi[0] < 0.01 and steady.chi2_p[0] > 0.01
    new = _frame(5000, 3, weights=(0.3, 0.2, 0.1, 0.1, 0.3), merchants=[*MERCHANTS, "crypto"])["merchant"]
    moved = categorical_drift([ref], [new])
    assert moved.unseen[0] == pytest.approx((new == "crypto").mean())
    assert moved.psi[0] > 1.0 and moved.chi2_p[0] < 1e-10


def test_rare_categories_share_one_bucket():
    ref = pd.Series([f"m{i}" for i in range(200)] * 5 + ["common"] * 1000)
    got = categorical_drift([ref], [ref.sample(frac=1.0, random_state=0)], max_categories=10)
    assert got.psi[0] < 1e-9 and got.n_categories[0] == 201


def test_labels_are_text_so_numbers_and_booleans_from_json_compare_equal():
    assert list(category_labels(pd.Series([3, 4, None]))) == ["3", "4"]
    assert list(category_labels(pd.Series([3.0, "4", True, np.nan], dtype=object))) == ["3", "4", "True"]
    assert list(category_labels(pd.Series([True, False]))) == ["True", "False"]
    same = categorical_drift([pd.Series([1, 2, 3] * 100)], [pd.Series(["1", "2", 3.0] * 100, dtype=object)])
    assert same.psi[0] == pytest.approx(0.0) and same.unseen[0] == 0.0


# -- the gate on a scikit-learn pipeline with a string column ----------------------------

def _pipeline(seed: int, frame: pd.DataFrame):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), ["amount"]),
                             ("cat", OneHotEncoder(handle_unknown="ignore"), ["merchant", "card_present"])])
    sample = frame.sample(frac=0.8, random_state=seed)
    return Pipeline([("pre", pre), ("clf", LogisticRegression(C=1.0 + seed))]).fit(
        sample[["amount", "merchant", "card_present"]], sample["label"])


@pytest.fixture
def pipelines(repo, tmp_path):
    reg = registry(repo)
    train = _frame(3000, 10)
    X = train[["amount", "merchant", "card_present"]]
    versions = [log_version(reg, _pipeline(seed, train), reference=X.sample(1000, random_state=seed),
                            example=X.head(20), serialization_format="skops") for seed in (1, 2)]
    reg.set_alias("fraud-detector", "prod", versions[0][0])
    write_policy(repo, "  drift: {min_rows: 500}\n")
    propose(repo, *versions[1], window="window.parquet")
    return repo


def test_steady_categorical_traffic_passes(pipelines, capsys):
    _frame(2000, 11).to_parquet(pipelines / "window.parquet")
    code, doc = gate(pipelines, capsys, "drift")
    found = checks(doc)
    assert code == 0, doc
    assert [found[n]["verdict"] for n in ("drift.psi", "drift.ks_p", "drift.chi2_p", "drift.prediction_psi")] == ["PASS"] * 4
    kinds = {row["feature"]: row["kind"] for row in doc["gates"][0]["details"]["features"]}
    # merchant is a string and card_present a boolean in the signature: categories, not numbers
    assert kinds == {"amount": "numeric", "merchant": "categorical", "card_present": "categorical"}
    assert "equal-width score bins" in found["drift.prediction_psi"]["message"]


def test_a_new_merchant_blocks_and_is_named(pipelines, capsys):
    shifted = _frame(2000, 12, weights=(0.3, 0.2, 0.1, 0.1, 0.3), merchants=[*MERCHANTS, "crypto"])
    shifted.to_parquet(pipelines / "window.parquet")
    code, doc = gate(pipelines, capsys, "drift")
    found = checks(doc)
    assert code == 1
    assert found["drift.chi2_p"]["verdict"] == "BLOCK" and "chi-square p < 0.01 for merchant" in found["drift.chi2_p"]["message"]
    assert found["drift.psi"]["verdict"] == "BLOCK" and "PSI >= 0.2 for merchant;" in found["drift.psi"]["message"]
    assert "unseen)" in found["drift.psi"]["message"]
    assert found["drift.ks_p"]["verdict"] == "PASS"  # amount did not move
    assert doc["gates"][0]["details"]["blocking_features"] == ["merchant"]
