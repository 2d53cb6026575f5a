"""Request ids and ``POST /feedback`` in process: two workers over one state folder (as
BentoML's worker processes share it), each with its own memory and metrics registry.

What is checked is what an operator would see: the id on every answer and in the
journal, a label joined to the version that served it whichever worker receives it,
counted once however often it is sent, late labels counted for their version, the token
checked before the body, and 400/401/413 answers naming the problem.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from promotion.contract import feedback as wire
from services.router import feedback
from services.router.metrics import Metrics
from services.router.request_index import RequestIndex, RequestJournal
from services.router.worker import Worker
from tests.unit.router.test_admin import Client, body
from tests.unit.router.test_worker_metrics import ROW, _model, _sample, _unreachable_registry

ADMIN = "admin-token"
LABELS = "labels-token"
MODELS = {1: _model(1), 2: _model(2)}


def _worker(state, pid: int, registry: CollectorRegistry, **kw) -> Worker:
    w = Worker(state, "fraud-detector", _unreachable_registry, ADMIN, Metrics(registry=registry), sample=0.0,
               feedback_token=LABELS, segment_column="segment", **kw)
    w.pid = pid
    w.journal = RequestJournal(state, pid=pid)  # one journal per process, as in the service
    w.loaded = dict(MODELS)
    w._load_for_admin = lambda needed: None
    return w


@pytest.fixture
def pair(tmp_path):
    """Two workers, routing {1: 50, 2: 50} applied in both; (w1, reg1, w2, reg2)."""
    r1, r2 = CollectorRegistry(), CollectorRegistry()
    w1, w2 = _worker(tmp_path, 101, r1), _worker(tmp_path, 102, r2)
    status, _ = w1.handle_set_routing(json.dumps(body({1: 50, 2: 50})).encode(), f"Bearer {ADMIN}")
    assert status == 200
    w2.refresh(allow_load=False)
    assert w2.applied is not None
    yield w1, r1, w2, r2
    for w in (w1, w2):
        w.journal.close()
        w.inference_log.close()


def row(segment: str = "online", amount: float = 1.0) -> dict:
    return {"features": {**ROW["features"], "amount": amount, "segment": segment}}


def labelled(registries, **labels) -> float:
    return sum(_sample(r, "promotion_labels_total", **labels) for r in registries)


# -- request ids ----------------------------------------------------------------------

def test_every_answer_carries_its_request_id_and_the_journal_names_what_served_it(pair):
    w1, *_ = pair
    status, answer, _ = w1.handle_predict(row(), None, "client-7")
    assert status == 200 and answer["request_id"] == "client-7"
    status, answer, _ = w1.handle_predict({"dataframe_records": [ROW["features"]] * 3}, None)
    assert len(answer["request_ids"]) == 3 and answer["request_ids"][0].endswith(".0")
    assert len(answer["request_ids"][0].split(".")[0]) == 32
    index = RequestIndex(w1.state_dir, 100)
    index.catch_up()
    served = index.get("client-7")
    assert served.version in (1, 2) and served.segment == "online" and served.classes == [1]
    assert 0.0 <= served.score <= 1.0


@pytest.mark.parametrize("value,ok", [("abc-123", True), ("a" * 64, True), ("a" * 65, False), ("../x", False),
                                      ("a b", False), ("", False), (None, False), ("-lead", False),
                                      ("order:1.2_x", True), ("é", False)])
def test_only_a_sane_client_request_id_is_used(value, ok):
    assert wire.valid_request_id(value) is ok


def test_generated_ids_are_uuid4():
    import uuid

    ids = {wire.new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(uuid.UUID(hex=i).version == 4 for i in ids)


# -- joins, idempotence, late labels -----------------------------------------------------

def _serve(w, n: int, start: int = 0) -> list[tuple[str, int, int]]:
    out = []
    for i in range(n):
        _, answer, _ = w.handle_predict(row(("online", "pos")[i % 2], float(start + i) * 0.37 - 3), None)
        out.append((answer["request_id"], answer["version"], answer["label"]))
    return out


def test_a_label_joins_whichever_worker_served_it_and_counts_once(pair):
    w1, r1, w2, r2 = pair
    served = _serve(w1, 20) + _serve(w2, 20, 20)
    items = [{"request_id": rid, "label": 1} for rid, _, _ in served]
    status, answer = w1.handle_feedback(json.dumps(items).encode())  # half served by w2
    assert status == 200 and answer["accepted"] == 40 and answer["unknown"] == 0
    status, again = w2.handle_feedback(json.dumps(items).encode())  # the same batch, to the other worker
    assert again["accepted"] == 0 and again["duplicate"] == 40
    for version in (1, 2):
        tp = sum(1 for _, v, label in served if v == version and label == 1)
        assert labelled((r1, r2), version=str(version), outcome="tp") == tp
        assert labelled((r1, r2), version=str(version), outcome="fn") == \
            sum(1 for _, v, _ in served if v == version) - tp
    assert labelled((r1, r2), segment="pos") == 20
    assert _sample(r2, "promotion_feedback_total", result="duplicate") == 40


def test_late_labels_count_for_a_version_no_longer_served_and_unknown_ids_are_reported(pair):
    w1, r1, w2, r2 = pair
    served = _serve(w1, 30)
    v2 = [rid for rid, v, _ in served if v == 2]
    assert v2
    status, _ = w1.handle_set_routing(json.dumps(body({1: 100})).encode(), f"Bearer {ADMIN}")
    assert status == 200
    items = [{"request_id": rid, "label": 0} for rid in v2] + [{"request_id": "nobody", "label": 1}]
    _, answer = w2.handle_feedback(json.dumps(items).encode())
    assert answer["accepted"] == len(v2) and answer["unknown"] == 1 and answer["unknown_ids"] == ["nobody"]
    assert labelled((r1, r2), version="2") == len(v2)
    assert _sample(r2, "promotion_label_delay_seconds_count", version="2") == len(v2)


def test_a_restarted_worker_still_knows_what_was_labelled(pair, tmp_path):
    w1, *_ = pair
    served = _serve(w1, 4)
    items = json.dumps([{"request_id": rid, "label": 1} for rid, _, _ in served]).encode()
    assert w1.handle_feedback(items)[1]["accepted"] == 4
    fresh = _worker(tmp_path, 103, CollectorRegistry())
    assert fresh.handle_feedback(items)[1]["duplicate"] == 4
    fresh.journal.close()


def test_regression_labels_sum_their_errors(tmp_path):
    journal = RequestJournal(tmp_path, pid=5)
    journal.record(3, ["r1", "r2"], None, [10.0, 4.0], None, ["eu", None])
    journal.close()
    registry = CollectorRegistry()
    fb = feedback.Feedback(tmp_path, Metrics(registry=registry), 100)
    answer = fb.handle([("r1", "value", 12.5), ("r2", "value", 4.0), ("r1", "label", 1)])
    assert answer["accepted"] == 2 and answer["duplicate"] == 1
    assert _sample(registry, "promotion_label_values_total", version="3") == 2
    assert _sample(registry, "promotion_label_abs_error_total", version="3") == pytest.approx(2.5)
    assert _sample(registry, "promotion_label_squared_error_total", version="3", segment="eu") == pytest.approx(6.25)
    assert fb.handle([("r9", "label", 1)])["unknown"] == 1


def test_a_label_that_does_not_fit_the_request_is_invalid_not_counted(pair):
    w1, r1, *_ = pair
    (rid, _, _), = _serve(w1, 1)
    _, answer = w1.handle_feedback(json.dumps([{"request_id": rid, "value": 3.0},
                                               {"request_id": rid, "label": "fraud"}]).encode())
    assert answer["invalid"] == 2 and answer["accepted"] == 0
    assert "send label" in answer["invalid_items"][0]["message"]
    assert "not a class" in answer["invalid_items"][1]["message"]
    assert labelled((r1,)) == 0


def test_segment_values_are_bounded_the_same_for_every_worker(pair):
    from promotion.contract.metrics import OTHER_SEGMENT, SEGMENT_VALUES_MAX

    w1, r1, w2, r2 = pair
    rids = []
    for i in range(SEGMENT_VALUES_MAX + 5):
        _, answer, _ = (w1 if i % 2 else w2).handle_predict(row(f"s{i}"), None)
        rids.append(answer["request_id"])
    w1.handle_feedback(json.dumps([{"request_id": r, "label": 1} for r in rids[:10]]).encode())
    w2.handle_feedback(json.dumps([{"request_id": r, "label": 1} for r in rids[10:]]).encode())
    segments = {s.labels["segment"] for r in (r1, r2) for f in r.collect() for s in f.samples
                if s.name == "promotion_labels_total"}
    assert len(segments - {OTHER_SEGMENT}) == SEGMENT_VALUES_MAX and OTHER_SEGMENT in segments
    assert labelled((r1, r2), segment=OTHER_SEGMENT) == 5


def test_the_index_follows_a_rotated_journal_and_stays_bounded(tmp_path):
    journal = RequestJournal(tmp_path, max_bytes=400, pid=9)
    index = RequestIndex(tmp_path, size=25)
    for i in range(40):
        journal.record(1, [f"id{i}"], [0.5], [1], [1], None)
        if i % 7 == 0:
            index.catch_up()
    index.catch_up()
    journal.close()
    assert (tmp_path / "requests" / "9.jsonl.1").exists()
    assert len(index) == 25 and index.get("id39") is not None and index.get("id0") is None


# -- HTTP: token first, bounded body, shape ----------------------------------------------

class _Client(Client):
    """The admin tests' ASGI client, sending to ``/feedback``."""

    def request(self, method, headers, chunks=()):
        import asyncio

        sent, pending = [], list(chunks)

        async def receive():
            self.reads += 1
            if not pending:
                return {"type": "http.request", "body": b"", "more_body": False}
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": "/feedback", "raw_path": b"/feedback", "root_path": "",
                 "scheme": "http", "query_string": b"", "http_version": "1.1",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(payload)


def _client(w, **kw) -> _Client:
    return _Client(feedback.make_app(lambda: w, **kw))


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Bearer {ADMIN}", LABELS])
def test_feedback_without_its_token_is_refused_before_the_body_is_read(pair, auth):
    w1, *_ = pair
    client = _client(w1)
    headers = {"content-length": str(100 << 20)} | ({"authorization": auth} if auth else {})
    status, resp_headers, answer = client.request("POST", headers, [b"[" * 4096] * 10)
    assert status == 401 and answer["error"]["kind"] == "auth" and client.reads == 0
    assert resp_headers["connection"] == "close"


def test_the_admin_token_is_the_feedback_token_when_none_is_set(tmp_path):
    w = Worker(tmp_path, "m", _unreachable_registry, ADMIN, Metrics(registry=CollectorRegistry()), sample=0.0)
    assert w.feedback_authorised(f"Bearer {ADMIN}") == (True, "")
    w._admin_token = None
    ok, why = w.feedback_authorised(f"Bearer {ADMIN}")
    assert not ok and "PROMOTION_FEEDBACK_TOKEN" in why
    w.inference_log.close()


def test_an_oversize_body_is_413_and_a_malformed_one_400_naming_the_item(pair):
    w1, *_ = pair
    client = _client(w1, limit=1000)
    auth = {"authorization": f"Bearer {LABELS}"}
    status, _, answer = client.request("POST", {**auth, "content-length": "1001"})
    assert status == 413 and client.reads == 0
    status, _, answer = client.request("POST", auth, [b" " * 300] * 10)
    assert status == 413 and client.reads == 4
    for raw, message in [(b"{", "body: not valid JSON"), (b'{"request_id": "a"}', "body: must be a JSON array"),
                         (b"[]", "body: holds no items"),
                         (b'[{"request_id": "a", "label": 1}, {"request_id": "a/b", "label": 1}]', "[1].request_id"),
                         (b'[{"request_id": "a"}]', "[0]: must have exactly one"),
                         (b'[{"request_id": "a", "value": "x"}]', "[0].value"),
                         (b'[{"request_id": "a", "label": [1]}]', "[0].label"),
                         (b'[{"request_id": "a", "label": 1, "ts": 3}]', "[0]: unknown field(s) ts")]:
        status, _, answer = _client(w1).request("POST", auth, [raw])
        assert status == 400 and answer["error"]["message"].startswith(message), (raw, answer)


def test_feedback_is_503_when_the_index_is_disabled(tmp_path):
    w = Worker(tmp_path, "m", _unreachable_registry, ADMIN, Metrics(registry=CollectorRegistry()), sample=0.0,
               index_size=0)
    status, answer = w.handle_feedback(b'[{"request_id": "a", "label": 1}]')
    assert status == 503 and "PROMOTION_REQUEST_INDEX_SIZE=0" in answer["error"]["message"]
    assert not (tmp_path / "requests").exists()
    w.inference_log.close()


def test_a_request_id_served_twice_joins_no_label(pair):
    w1, r1, w2, r2 = pair
    w1.handle_predict(row(), None, "reused-id")
    w2.handle_predict(row(), None, "reused-id")  # another client, or a retry
    _, answer = w1.handle_feedback(b'[{"request_id": "reused-id", "label": 1}]')
    assert answer["invalid"] == 1 and "more than once" in answer["invalid_items"][0]["message"]
    assert labelled((r1, r2)) == 0


def test_journals_of_exited_workers_are_pruned_to_the_newest(tmp_path):
    import os
    import subprocess
    import time

    folder = tmp_path / "requests"
    folder.mkdir()
    gone = []
    for i in range(12):  # pids of processes that have exited
        p = subprocess.Popen(["true"])
        p.wait()
        path = folder / f"{p.pid}.jsonl"
        path.write_text("[]\n")
        os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
        gone.append(path)
    journal = RequestJournal(tmp_path, pid=os.getpid())
    journal.record(1, ["x"], None, [1.0], None, None)
    journal.close()
    left = sorted(p.name for p in folder.iterdir())
    assert f"{os.getpid()}.jsonl" in left and len(left) == 9
    assert all(p.exists() for p in gone[-8:]) and not any(p.exists() for p in gone[:4])
