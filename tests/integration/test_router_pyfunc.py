"""Any MLflow model behind the real router (``bentoml serve``, 2 workers, real MLflow sqlite store).

Five flavours as their teams log them (``tests/support/flavours.py``): a scikit-learn
pipeline with a string column, LightGBM with a categorical column, XGBoost, a custom
``PythonModel`` and a scikit-learn regression. One router serves them all, version by
version, and answers in MLflow's scoring formats exactly what each model predicts itself.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests

from promotion.contract.inference_log import read_inference_log
from promotion.contract.launch import free_port, start_service
from promotion.traffic.bentoml_router import BentoMLRouter
from tests.support.flavours import COLUMNS, NAME, flavour_registry, frame, payloads

pytestmark = pytest.mark.integration
TOKEN = "pyfunc-token"
SERVED = ("sklearn", "lightgbm", "xgboost", "custom", "regression")


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    return flavour_registry(tmp_path_factory.getbasetemp() / "flavours")


@pytest.fixture(scope="module")
def svc(fr, tmp_path_factory):
    state = tmp_path_factory.mktemp("router-pyfunc")
    sk = fr.flavours["sklearn"].version
    service = start_service(free_port(), state, fr.uri, TOKEN, workers=2, model_name=NAME,
                            initial_routes=json.dumps(fr.body({sk: 100})),
                            env_extra={"PROMOTION_INFERENCE_SAMPLE": "1.0"})
    yield service
    service.stop()


@pytest.fixture(scope="module")
def rows():
    return frame(6, seed=77)


def route(svc, fr, routes: dict[int, float], shadow: dict | None = None):
    backend = BentoMLRouter(svc.url, TOKEN)
    r = backend.set_routing(routes, {v: fr.digests[v] for v in routes}, shadow)
    backend.wait_applied(r.generation, timeout_s=30)
    return r


def post(svc, body, key: str | None = None):
    headers = {"X-Routing-Key": key} if key else {}
    return requests.post(svc.url + "/predict", json=body, headers=headers, timeout=30)


def metric(svc, name, **labels) -> float:
    total = 0.0
    for line in requests.get(svc.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("kind", SERVED)
def test_each_flavour_answers_what_the_model_itself_predicts_in_every_format(svc, fr, rows, kind):
    f = fr.flavours[kind]
    route(svc, fr, {f.version: 100})
    want_preds, want_scores = f.expected(rows)
    for fmt, body in payloads(rows, f.columns).items():
        r = post(svc, body)
        assert r.status_code == 200, (fmt, r.text)
        answer = r.json()
        assert answer["version"] == f.version
        assert answer["predictions"] == pytest.approx(want_preds), fmt
        if want_scores is None:
            assert "scores" not in answer, fmt
        else:
            assert answer["scores"] == pytest.approx(want_scores, rel=1e-6, abs=1e-9), fmt
    # one row in the router's own form: score and label (or the prediction of a regression)
    one = post(svc, {"features": rows[list(f.columns)].iloc[0].to_dict()}).json()
    assert one.pop("request_id")  # the id its label is posted back with (POST /feedback)
    if want_scores is None:
        assert one == {"version": f.version, "prediction": pytest.approx(want_preds[0])}
    else:
        assert one == {"version": f.version, "score": pytest.approx(want_scores[0], rel=1e-6),
                       "label": want_preds[0]}


def test_input_that_does_not_fit_the_signature_is_a_400_naming_the_column(svc, fr, rows):
    f = fr.flavours["sklearn"]
    route(svc, fr, {f.version: 100})
    before = metric(svc, "promotion_request_errors_total", version=f.version, kind="input")
    good = rows[list(COLUMNS)].head(3).to_dict("records")
    cases = [
        ({"dataframe_records": [good[0], {**good[1], "merchant": 7}, good[2]]},
         "column merchant (row 1): must be a string, not 7"),
        ({"dataframe_split": {"columns": ["amount", "merchant"], "data": [[1.0, "fuel"]]}},
         "column hour: missing (version %d needs it)" % f.version),
        ({"inputs": {"amount": ["12"], "hour": [3], "merchant": ["fuel"]}}, "column amount: must be a number, not '12'"),
        ({"features": {**good[0], "hour": 3.5}}, "features.hour: must be an integer, not 3.5"),
        ({"rows": good}, "body: unknown field(s) rows"),
        ({"dataframe_records": good, "inputs": good}, "body: must have exactly one of"),
    ]
    for body, message in cases:
        r = post(svc, body)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["kind"] == "input"
        assert message in r.json()["error"]["message"]
    after = metric(svc, "promotion_request_errors_total", version=f.version, kind="input")
    assert after - before == len(cases)  # each one an input error of the version it was routed to
    # a body that is not a JSON object never reaches the router: BentoML refuses it, also with a 400
    assert post(svc, good).status_code == 400
    garbled = requests.post(svc.url + "/predict", data=b"{not json", headers={"Content-Type": "application/json"},
                            timeout=30)
    assert garbled.status_code == 400, garbled.text


def test_a_tampered_artifact_is_refused_and_never_served(svc, fr, rows):
    sk, bad = fr.flavours["sklearn"].version, fr.flavours["tampered"].version
    before = route(svc, fr, {sk: 100})
    r = requests.post(svc.url + "/admin/routing", json=fr.body({sk: 50, bad: 50}),
                      headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
    assert r.status_code == 409 and r.json()["error"]["kind"] == "digest"
    assert "digest mismatch" in r.json()["error"]["message"]
    view = requests.get(svc.url + "/admin/routing", timeout=10).json()
    assert view["generation"] == before.generation and view["routes"] == {str(sk): 100.0}
    body = payloads(rows, COLUMNS)["dataframe_records"]
    assert {post(svc, body).json()["version"] for _ in range(20)} == {sk}


def test_sticky_keys_metrics_and_inference_log_hold_across_flavours(svc, fr, rows):
    sk, lg = fr.flavours["sklearn"].version, fr.flavours["lightgbm"].version
    route(svc, fr, {sk: 50, lg: 50})
    body = {"dataframe_records": rows[list(COLUMNS)].head(2).to_dict("records")}
    before = {v: metric(svc, "promotion_requests_total", version=v) for v in (sk, lg)}
    keys = [f"customer-{i}" for i in range(40)]
    first = {k: post(svc, body, k).json()["version"] for k in keys}
    again = {k: post(svc, body, k).json()["version"] for k in keys}
    assert first == again and set(first.values()) == {sk, lg}
    served = Counter(list(first.values()) + list(again.values()))
    time.sleep(0.5)  # latencies are published in batches
    for v in (sk, lg):
        assert metric(svc, "promotion_requests_total", version=v) - before[v] == served[v]
        assert metric(svc, "promotion_request_latency_seconds_count", version=v) >= served[v]
    time.sleep(1.5)  # the log is flushed about once a second
    log = read_inference_log(svc.state_dir, version=lg, include_shadow=False)
    assert len(log) >= 2 * served[lg]
    assert set(log["merchant"]) <= set(rows["merchant"]) and log["merchant"].map(type).eq(str).all()
    assert log["hour"].map(type).eq(int).all() and log["score"].between(0, 1).all()
    assert set(log["prediction"]) <= {0, 1}


def test_a_shadow_pipeline_scores_mirrored_batches_with_string_columns(svc, fr, rows):
    sk, sh = fr.flavours["sklearn"].version, fr.flavours["shadow"].version
    route(svc, fr, {sk: 100}, shadow={"version": sh, "percent": 100, "digest": fr.digests[sh]})
    body = payloads(rows, COLUMNS)["dataframe_split"]  # 6 rows a request
    for _ in range(10):
        assert post(svc, body).json()["version"] == sk
    deadline = time.monotonic() + 90  # the shadow process loads MLflow at idle priority
    while time.monotonic() < deadline and metric(svc, "promotion_shadow_requests_total", version=sh) < 60:
        time.sleep(0.5)
    assert metric(svc, "promotion_shadow_requests_total", version=sh) == 60  # rows, not requests
    agree = metric(svc, "promotion_shadow_agreement_total", version=sh, agree="true")
    assert agree + metric(svc, "promotion_shadow_agreement_total", version=sh, agree="false") == 60
    time.sleep(1.5)
    shadow_log = read_inference_log(svc.state_dir, version=sh)
    assert len(shadow_log) == 60 and shadow_log["shadow"].all()
    assert set(shadow_log["merchant"]) == set(rows["merchant"])
    want, _ = fr.flavours["shadow"].expected(rows)
    assert Counter(shadow_log["prediction"]) == Counter(want * 10)
