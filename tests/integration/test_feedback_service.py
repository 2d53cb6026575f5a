"""Labels through ``POST /feedback`` on a real ``bentoml serve`` with two workers.

What an operator sees: every prediction answers with a request id (the client's when it
sends a sane one); labels posted for those ids, to whichever worker, are counted for the
version that served each row in ``/metrics`` (``promotion_labels_total`` by version,
segment and outcome) and in a metrics provider's snapshot; a batch sent twice counts
once; an id the service never served is reported unknown; labels for a version that no
longer gets traffic still count for it; a call without the feedback token is 401 before
its body is read, an oversize one 413, a malformed one 400 naming the item.
"""

from __future__ import annotations

import json
import random
import time

import pytest
import requests

from promotion.contract import metrics as names
from promotion.metrics.scrape import ScrapeProvider
from services.router.process import free_port, start_service
from tests.support.router_env import FEATURES, TOKEN, fraud_registry

pytestmark = pytest.mark.integration

FEEDBACK_TOKEN = "labels-only-token"


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    return fraud_registry(tmp_path_factory.getbasetemp() / "registry")


@pytest.fixture(scope="module")
def svc(fr, tmp_path_factory):
    state = tmp_path_factory.mktemp("router-feedback")
    service = start_service(free_port(), state, fr.uri, TOKEN, workers=2,
                            initial_routes=json.dumps(fr.body({1: 50, 2: 50})),
                            env_extra={"PROMOTION_FEEDBACK_TOKEN": FEEDBACK_TOKEN,
                                       "PROMOTION_SEGMENT_COLUMN": "segment"})
    yield service
    service.stop()


def predict(svc, i: int, request_id: str | None = None) -> requests.Response:
    rng = random.Random(i)
    features = {**FEATURES, "amount": rng.uniform(1, 3000), "merchant_risk": rng.random(),
                "prior_chargebacks": float(rng.randint(0, 3)), "segment": ("online", "pos")[i % 2]}
    headers = {"X-Request-Id": request_id} if request_id is not None else {}
    # a new connection per request, so that both workers serve some
    r = requests.post(svc.url + "/predict", json={"features": features}, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return r


def post_feedback(svc, items, token: str = FEEDBACK_TOKEN) -> requests.Response:
    return requests.post(svc.url + "/feedback", data=json.dumps(items), timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def outcome(served_label: int, truth: int) -> str:
    return ("tp" if truth else "fp") if served_label == 1 else ("fn" if truth else "tn")


def labelled_counts(svc) -> dict[tuple[str, str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(svc.url + "/metrics", timeout=10).text
    return {(s.labels["version"], s.labels["segment"], s.labels["outcome"]): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == names.LABELS}


def test_labels_join_across_workers_count_once_and_late_labels_still_count(svc, fr):
    served = []  # (request id, version, served label, worker, segment)
    for i in range(60):
        r = predict(svc, i)
        body = r.json()
        assert body["request_id"] == r.headers["X-Request-Id"]
        served.append((body["request_id"], body["version"], body["label"], r.headers["X-Promotion-Worker"],
                       ("online", "pos")[i % 2]))
    assert len({w for *_, w, _ in served}) == 2, "both workers must have served predictions"
    assert {v for _, v, *_ in served} == {1, 2}
    rng = random.Random(7)
    truth = {rid: rng.randint(0, 1) for rid, *_ in served}
    # version 2's labels arrive late: after version 2 stopped getting traffic
    early = [s for s in served if s[1] == 1] + [s for s in served if s[1] == 2][:5]
    late = [s for s in served if s[1] == 2][5:]

    r = post_feedback(svc, [{"request_id": rid, "label": truth[rid]} for rid, *_ in early]
                      + [{"request_id": "never-served-id", "label": 1}])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["accepted"], answer["unknown"], answer["duplicate"]) == (len(early), 1, 0)
    assert answer["unknown_ids"] == ["never-served-id"]
    feedback_worker = r.headers["X-Promotion-Worker"]
    assert any(w != feedback_worker for _, _, _, w, _ in early), "some labels must join across workers"

    again = post_feedback(svc, [{"request_id": rid, "label": truth[rid]} for rid, *_ in early]).json()
    assert (again["accepted"], again["duplicate"]) == (0, len(early))

    admin = requests.post(svc.url + "/admin/routing", json=fr.body({1: 100}), timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert admin.status_code == 200, admin.text
    r = post_feedback(svc, [{"request_id": rid, "label": truth[rid]} for rid, *_ in late])
    assert r.json()["accepted"] == len(late)

    expected: dict[tuple[str, str, str], float] = {}
    for rid, version, label, _, segment in served:
        key = (str(version), segment, outcome(label, truth[rid]))
        expected[key] = expected.get(key, 0) + 1
    assert {k: v for k, v in labelled_counts(svc).items() if v} == expected

    snap = ScrapeProvider(svc.url + "/metrics").snapshot()
    for version in (1, 2):
        rows = [(rid, label) for rid, v, label, *_ in served if v == version]
        q = snap.versions[version].quality
        assert q.labelled == len(rows)
        assert q.confusion()["tp"] == sum(1 for rid, label in rows if label == 1 and truth[rid] == 1)
        assert set(q.segments()) == {"online", "pos"}
        assert q.delay_counts[-1] == len(rows)
    deadline = time.monotonic() + 5  # scores are published in batches
    while time.monotonic() < deadline:
        snap = ScrapeProvider(svc.url + "/metrics").snapshot()
        if all(snap.versions[v].quality.scored >= sum(1 for s in served if s[1] == v) for v in (1, 2)):
            break
        time.sleep(0.2)
    for v in (1, 2):
        assert snap.versions[v].quality.scored == sum(1 for s in served if s[1] == v)
        assert snap.versions[v].quality.score_bounds[-2] == 1.0


def test_a_clients_request_id_is_kept_and_an_unsafe_one_replaced(svc):
    r = predict(svc, 1, request_id="order-12345")
    assert r.headers["X-Request-Id"] == "order-12345" and r.json()["request_id"] == "order-12345"
    for bad in ("../../etc", "x" * 65, "a b", ""):
        r = predict(svc, 2, request_id=bad)
        assert r.headers["X-Request-Id"] != bad and len(r.headers["X-Request-Id"]) == 32
    batch = requests.post(svc.url + "/predict", headers={"X-Request-Id": "batch-1"}, timeout=30,
                          json={"dataframe_records": [FEATURES, FEATURES]}).json()
    assert batch["request_ids"] == ["batch-1.0", "batch-1.1"] and len(batch["predictions"]) == 2


def test_feedback_refuses_without_its_token_oversize_and_malformed(svc):
    rid = predict(svc, 3).json()["request_id"]
    for token in ("wrong", TOKEN):  # the admin token is not a feedback token once one is set
        r = post_feedback(svc, [{"request_id": rid, "label": 1}], token=token)
        assert r.status_code == 401 and r.json()["error"]["kind"] == "auth"
    r = requests.post(svc.url + "/feedback", data=b"[" + b" " * (3 << 20) + b"]", timeout=30,
                      headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"})
    assert r.status_code == 413
    r = post_feedback(svc, [{"request_id": rid, "label": 1, "value": 2.0}])
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("[0]:")
    r = post_feedback(svc, [{"request_id": rid, "value": 2.0}])  # a classifier's request
    assert r.status_code == 200 and r.json()["invalid"] == 1
    assert "send label" in r.json()["invalid_items"][0]["message"]


def test_a_labels_dataset_is_polled_into_feedback(svc, tmp_path, monkeypatch):
    from promotion.labels import LabelsPoller, LabelsSource

    rids = [predict(svc, 100 + i).json()["request_id"] for i in range(6)]
    f = tmp_path / "labels.csv"
    f.write_text("request_id,label\n" + "".join(f"{r},{i % 2}\n" for i, r in enumerate(rids[:4])))
    monkeypatch.setenv("PROMOTION_FEEDBACK_TOKEN", FEEDBACK_TOKEN)
    source = LabelsSource(path=f, display="labels.csv", column="label", kind="label", request_id_column="request_id",
                          feedback_url=svc.url + "/feedback", token_env="PROMOTION_FEEDBACK_TOKEN")
    poller = LabelsPoller(source, tmp_path / "cursor.json")
    before = sum(labelled_counts(svc).values())
    assert poller.poll_once() == {"accepted": 4, "duplicate": 0, "unknown": 0, "invalid": 0, "rows": 4}
    with open(f, "a") as fh:
        fh.write(f"{rids[4]},1\nnot-served,0\n")
    assert poller.poll_once() == {"accepted": 1, "duplicate": 0, "unknown": 1, "invalid": 0, "rows": 2}
    assert sum(labelled_counts(svc).values()) == before + 5
