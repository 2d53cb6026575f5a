"""Models of every kind, saved as MLflow models and loaded the way the router loads them.

Each is loaded through its pyfunc flavour (:func:`services.router.models.load_local`) and
must answer what the model itself predicts: the class (or value) per row and, for binary
classifiers, ``predict_proba`` of the positive class.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from promotion.contract.digest import tree_digest
from services.router import models, payload
from services.router.models import LoadError, PredictError

warnings.filterwarnings("ignore", module="mlflow")
MERCHANTS = ["grocery", "fuel", "travel", "online"]


def _frame(n: int = 600, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"amount": rng.gamma(2.0, 20.0, n), "hour": rng.integers(0, 24, n),
                       "merchant": rng.choice(MERCHANTS, n)})
    df["label"] = ((df["amount"] > 40) ^ (df["merchant"] == "travel")).astype(int)
    return df


DF = _frame()
X = DF[["amount", "hour", "merchant"]]
NUM = DF[["amount", "hour"]]
ROWS = _frame(8, seed=3)


def _save(tmp_path_factory, name: str, save, model, sample, output, **kw):
    from mlflow.models import infer_signature

    path = tmp_path_factory.mktemp("models") / name
    save(model, str(path), signature=infer_signature(sample, output), **kw)
    return models.load_local(path, 1, tree_digest(path))


def _ask(model, frame: pd.DataFrame, fmt: str = "dataframe_records"):
    cols = list(model.features) or list(frame.columns)
    body = {fmt: frame[cols].to_dict("records")} if fmt != "features" else {fmt: frame[cols].iloc[0].to_dict()}
    batch = payload.parse(body)
    return model.predict(model.inputs(batch), batch)


@pytest.fixture(scope="module")
def pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer([("num", StandardScaler(), ["amount", "hour"]), ("cat", OneHotEncoder(), ["merchant"])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression())]).fit(X, DF["label"])


def test_a_sklearn_pipeline_with_a_string_column(tmp_path_factory, pipeline):
    import mlflow.sklearn

    m = _save(tmp_path_factory, "sk", mlflow.sklearn.save_model, pipeline, X.head(), pipeline.predict(X.head()),
              pip_requirements=["scikit-learn"])
    p = _ask(m, ROWS)
    assert type(m.predictor).__name__ == "Estimator"
    assert p.predictions == pipeline.predict(ROWS[list(X.columns)]).tolist() == p.labels
    assert p.scores == pytest.approx(pipeline.predict_proba(ROWS[list(X.columns)])[:, 1].tolist())


def test_a_decision_threshold_in_the_metadata_decides_the_class(tmp_path_factory, pipeline):
    import mlflow.sklearn

    m = _save(tmp_path_factory, "sk-threshold", mlflow.sklearn.save_model, pipeline, X.head(),
              pipeline.predict(X.head()), pip_requirements=["scikit-learn"], metadata={"decision_threshold": 0.9})
    p = _ask(m, ROWS)
    assert p.predictions == [int(s >= 0.9) for s in p.scores]
    assert m.answer(payload.parse({"features": {}}), p) == {"version": 1, "score": p.scores[0],
                                                            "label": p.predictions[0]}


def test_a_threshold_that_is_not_a_number_refuses_the_version(tmp_path_factory, pipeline):
    import mlflow.sklearn
    from mlflow.models import infer_signature

    path = tmp_path_factory.mktemp("models") / "bad-threshold"
    mlflow.sklearn.save_model(pipeline, str(path), signature=infer_signature(X.head(), pipeline.predict(X.head())),
                              pip_requirements=["scikit-learn"], metadata={"decision_threshold": "high"})
    with pytest.raises(LoadError, match=r"version 4: MLmodel metadata decision_threshold: must be a number"):
        models.load_local(path, 4, tree_digest(path))


def test_lightgbm_numeric_and_categorical(tmp_path_factory):
    import lightgbm
    import mlflow.lightgbm

    num = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(NUM, DF["label"])
    m = _save(tmp_path_factory, "lgb", mlflow.lightgbm.save_model, num, NUM.head(), num.predict(NUM.head()),
              pip_requirements=["lightgbm"])
    assert type(m.predictor).__name__ == "LightGBMBooster"
    p = _ask(m, ROWS)
    assert p.predictions == num.predict(ROWS[["amount", "hour"]]).tolist()
    assert p.scores == pytest.approx(num.predict_proba(ROWS[["amount", "hour"]])[:, 1].tolist())

    Xc = X.assign(merchant=X["merchant"].astype(pd.CategoricalDtype(MERCHANTS)))
    cat = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(Xc, DF["label"])
    m = _save(tmp_path_factory, "lgb-cat", mlflow.lightgbm.save_model, cat, Xc.head(), cat.predict(Xc.head()),
              pip_requirements=["lightgbm"])
    assert type(m.predictor).__name__ == "Estimator"
    rows = ROWS[list(X.columns)].assign(merchant=ROWS["merchant"].astype(pd.CategoricalDtype(MERCHANTS)))
    p = _ask(m, ROWS)  # strings on the wire; the training categories come back for the model
    assert p.predictions == cat.predict(rows).tolist()
    assert p.scores == pytest.approx(cat.predict_proba(rows)[:, 1].tolist())


def test_xgboost_numeric_categorical_and_a_bare_booster(tmp_path_factory):
    import mlflow.xgboost
    import xgboost

    clf = xgboost.XGBClassifier(n_estimators=15, max_depth=3).fit(NUM, DF["label"])
    m = _save(tmp_path_factory, "xgb", mlflow.xgboost.save_model, clf, NUM.head(), clf.predict(NUM.head()),
              pip_requirements=["xgboost"])
    assert type(m.predictor).__name__ == "XGBoostBooster"
    p = _ask(m, ROWS, "inputs")
    assert p.predictions == clf.predict(ROWS[["amount", "hour"]]).tolist()
    assert p.scores == pytest.approx(clf.predict_proba(ROWS[["amount", "hour"]])[:, 1].tolist(), rel=1e-6)

    Xc = X.assign(merchant=X["merchant"].astype("category"))
    cat = xgboost.XGBClassifier(n_estimators=15, max_depth=3, enable_categorical=True).fit(Xc, DF["label"])
    m = _save(tmp_path_factory, "xgb-cat", mlflow.xgboost.save_model, cat, Xc.head(), cat.predict(Xc.head()),
              pip_requirements=["xgboost"])
    assert type(m.predictor).__name__ == "Estimator"
    few = ROWS.head(3)  # fewer categories than in training: xgboost re-codes them by name
    want = cat.predict_proba(few[list(X.columns)].assign(merchant=few["merchant"].astype("category")))[:, 1]
    assert _ask(m, few).scores == pytest.approx(want.tolist(), rel=1e-6)

    booster = xgboost.train({"objective": "binary:logistic", "max_depth": 2}, xgboost.DMatrix(NUM, DF["label"]), 5)
    m = _save(tmp_path_factory, "booster", mlflow.xgboost.save_model, booster, NUM.head(),
              booster.predict(xgboost.DMatrix(NUM.head())), pip_requirements=["xgboost"])
    p = _ask(m, ROWS)
    want = booster.predict(xgboost.DMatrix(ROWS[["amount", "hour"]]))
    assert p.scores == pytest.approx(want.tolist(), rel=1e-6) and p.predictions == (want > 0.5).astype(int).tolist()


def test_a_multiclass_classifier_answers_its_class_names_without_a_score(tmp_path_factory):
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=500).fit(NUM, DF["merchant"])
    m = _save(tmp_path_factory, "multi", mlflow.sklearn.save_model, clf, NUM.head(), clf.predict(NUM.head()),
              pip_requirements=["scikit-learn"])
    p = _ask(m, ROWS)
    assert p.predictions == clf.predict(ROWS[["amount", "hour"]]).tolist() and p.scores is None
    assert set(p.predictions) <= set(MERCHANTS)


def test_a_regression_answers_values_only(tmp_path_factory):
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    ridge = Ridge().fit(NUM, DF["amount"] * 2)
    m = _save(tmp_path_factory, "ridge", mlflow.sklearn.save_model, ridge, NUM.head(), ridge.predict(NUM.head()),
              pip_requirements=["scikit-learn"])
    p = _ask(m, ROWS)
    assert p.predictions == pytest.approx(ridge.predict(ROWS[["amount", "hour"]]).tolist())
    assert p.scores is None and p.labels is None
    assert m.answer(payload.parse({"features": {}}), p) == {"version": 1, "prediction": p.predictions[0]}


class _Scorer:
    """A custom model: scores from the amount; ``params`` may scale them."""

    @staticmethod
    def build():
        import mlflow.pyfunc

        class Scorer(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                scale = (params or {}).get("scale", 1.0)
                score = (model_input["amount"] / 200.0 * scale).clip(0, 1)
                return pd.DataFrame({"prediction": (score >= 0.5).astype(int), "score": score})

        class Doubler(mlflow.pyfunc.PythonModel):
            def predict(self, context, model_input, params=None):
                return model_input["amount"] * 2

        return Scorer(), Doubler()


def test_custom_python_models_through_pyfunc(tmp_path_factory):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    scorer, doubler = _Scorer.build()
    path = tmp_path_factory.mktemp("models") / "scorer"
    out = pd.DataFrame({"prediction": [0], "score": [0.1]})
    mlflow.pyfunc.save_model(str(path), python_model=scorer, pip_requirements=["mlflow"],
                             signature=infer_signature(X.head(), out, params={"scale": 1.0}))
    m = models.load_local(path, 1, tree_digest(path))
    assert type(m.predictor).__name__ == "PyFunc" and m.takes_params
    want = (ROWS["amount"] / 200.0).clip(0, 1)
    p = _ask(m, ROWS)
    assert p.scores == pytest.approx(want.tolist()) and p.predictions == (want >= 0.5).astype(int).tolist()
    body = {"dataframe_records": ROWS[list(X.columns)].to_dict("records"), "params": {"scale": 3.0}}
    batch = payload.parse(body)
    assert m.predict(m.inputs(batch), batch).scores == pytest.approx((ROWS["amount"] / 200.0 * 3).clip(0, 1).tolist())

    path = tmp_path_factory.mktemp("models") / "doubler"
    mlflow.pyfunc.save_model(str(path), python_model=doubler, pip_requirements=["mlflow"],
                             signature=infer_signature(X.head(), X["amount"].head() * 2))
    m = models.load_local(path, 2, tree_digest(path))
    p = _ask(m, ROWS)
    assert p.predictions == pytest.approx((ROWS["amount"] * 2).tolist()) and p.scores is None
    batch = payload.parse({**body})
    with pytest.raises(payload.InputError, match="params: version 2 declares no parameters"):
        m.predict(m.inputs(batch), batch)


def test_output_that_cannot_be_an_answer_is_a_predict_error(tmp_path_factory):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class Broken(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            n = len(model_input)
            return np.full(1, np.nan) if n == 1 else np.ones(n + 1)

    path = tmp_path_factory.mktemp("models") / "broken"
    mlflow.pyfunc.save_model(str(path), python_model=Broken(), pip_requirements=["mlflow"],
                             signature=infer_signature(NUM.head()))
    m = models.load_local(path, 5, tree_digest(path))
    with pytest.raises(PredictError, match="version 5 returned a non-finite prediction"):
        _ask(m, ROWS.head(1))
    with pytest.raises(PredictError, match="version 5 returned 3 predictions for 2 rows"):
        _ask(m, ROWS.head(2))
