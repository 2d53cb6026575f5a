"""The admin API's defences, in process: the token before the body, a bounded body, a
corrupt routing file that neither stops traffic nor the repair, generations that only grow.

The ASGI app is driven directly, with a ``receive`` that records every body read, over a
worker whose versions are already loaded (no registry is reached).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import CollectorRegistry

from services.router import admin, heartbeats, routing
from services.router.metrics import Metrics
from services.router.routing import RoutingFileError, StaleGeneration
from services.router.worker import Worker
from tests.unit.router.test_worker_metrics import ROW, _model, _unreachable_registry

TOKEN = "s3cret-token"
MODELS = {1: _model(1), 2: _model(2)}


@pytest.fixture
def worker(tmp_path):
    """Versions 1 and 2 at hand (no registry), routing {1: 100} applied at generation 1."""
    w = Worker(tmp_path, "fraud-detector", _unreachable_registry, TOKEN, Metrics(registry=CollectorRegistry()),
               sample=0.0)

    def load_for_admin(needed):  # what the registry would hand over, verified
        w.loaded = {**w.loaded, **{v: MODELS[v] for v in needed}}

    w._load_for_admin = load_for_admin
    status, saved = w.handle_set_routing(json.dumps(body({1: 100}, w)).encode(), f"Bearer {TOKEN}")
    assert status == 200 and w.applied.generation == 1
    yield w
    w.inference_log.close()


def body(routes: dict[int, float], w: Worker | None = None, **extra) -> dict:
    return {"routes": {str(v): p for v, p in routes.items()},
            "digests": {str(v): MODELS[v].digest for v in routes}, "shadow": None, **extra}


class Client:
    """One ASGI request at a time; ``reads`` counts the body messages the app pulled."""

    def __init__(self, app, limit_chunks: int = 10_000):
        self.app = app
        self.reads = 0
        self.limit_chunks = limit_chunks

    def request(self, method: str, headers: dict[str, str], chunks: list[bytes] = ()) -> tuple[int, dict, dict]:
        pending = list(chunks)
        sent: list[dict] = []

        async def receive():
            self.reads += 1
            if self.reads > self.limit_chunks:
                raise AssertionError("the app kept reading")
            if not pending:
                return {"type": "http.request", "body": b"", "more_body": False}
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": "/routing", "raw_path": b"/routing",
                 "root_path": "", "scheme": "http", "query_string": b"", "http_version": "1.1",
                 "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(payload)


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


# -- the token before the body --------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN},
                                     {"authorization": "Bearer " + TOKEN + "x"}])
def test_an_unauthenticated_write_is_refused_without_reading_its_body(worker, headers):
    client = Client(admin.make_app(lambda: worker))
    status, resp_headers, answer = client.request("POST", {**headers, "content-length": str(100 * 2**20)},
                                                  [b"{" * 4096] * 100)
    assert status == 401 and answer["error"]["kind"] == "auth"
    assert client.reads == 0, "the body was read before the token was checked"
    assert resp_headers["connection"] == "close"
    assert routing.load(worker.state_dir).generation == 1


def test_no_configured_token_refuses_every_write_unread(worker):
    worker._admin_token = None
    client = Client(admin.make_app(lambda: worker))
    status, _, answer = client.request("POST", auth(), [json.dumps(body({2: 100}, worker)).encode()])
    assert status == 401 and "no admin token is configured" in answer["error"]["message"]
    assert client.reads == 0


# -- a bounded body -------------------------------------------------------------------

def test_an_announced_oversize_body_is_413_before_it_is_read(worker):
    client = Client(admin.make_app(lambda: worker))
    status, headers, answer = client.request("POST", {**auth(), "content-length": str(admin.MAX_BODY_BYTES + 1)})
    assert status == 413 and answer["error"]["kind"] == "too_large"
    assert client.reads == 0 and headers["connection"] == "close"


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(worker):
    client = Client(admin.make_app(lambda: worker, limit=1000), limit_chunks=20)
    status, _, answer = client.request("POST", auth(), [b" " * 300] * 1000)  # 300 kB, never ending
    assert status == 413 and "1000 bytes" in answer["error"]["message"]
    assert client.reads == 4  # 1,200 bytes: no further
    assert routing.load(worker.state_dir).generation == 1


def test_a_write_within_the_limit_goes_through(worker):
    client = Client(admin.make_app(lambda: worker))
    raw = json.dumps(body({1: 50, 2: 50}, worker)).encode()
    status, _, answer = client.request("POST", auth(), [raw[:10], raw[10:]])
    assert status == 200 and answer["generation"] == 2 and answer["routes"] == {"1": 50.0, "2": 50.0}


def test_a_deeply_nested_body_is_a_400_not_a_crash(worker):
    status, answer = worker.handle_set_routing(b"[" * 60_000, f"Bearer {TOKEN}")
    assert status == 400 and answer["error"]["kind"] == "input"


def test_the_token_compare_is_over_fixed_length_digests(worker, monkeypatch):
    seen = []
    import hmac as hmac_module

    real = hmac_module.compare_digest
    monkeypatch.setattr("services.router.worker.hmac.compare_digest",
                        lambda a, b: seen.append((len(a), len(b))) or real(a, b))
    for given in ("x", TOKEN, TOKEN * 50):
        worker.authorised(f"Bearer {given}")
    assert seen == [(32, 32)] * 3  # the presented token's length does not reach the compare


# -- a corrupt routing file -----------------------------------------------------------

CORRUPT = [b'{"generation": 9, "routes": {"1": 10', b"[]", b"\x00\xff\xfe", b"[" * 100_000,
           b'{"generation": true, "model": "m", "routes": {"1": 100}, "digests": {"1": "sha256:' + b"1" * 64 + b'"}}',
           b'{"generation": "7", "model": "m", "routes": {"1": 100}, "digests": {}}', b'{"model": 5}', b""]


@pytest.mark.parametrize("content", CORRUPT, ids=range(len(CORRUPT)))
def test_a_corrupt_file_is_one_error_naming_it(tmp_path, content):
    routing.routing_path(tmp_path).write_bytes(content)
    with pytest.raises(RoutingFileError, match=str(routing.routing_path(tmp_path)).replace(".", r"\.")):
        routing.load(tmp_path)


@pytest.mark.parametrize("content", CORRUPT, ids=range(len(CORRUPT)))
def test_traffic_keeps_the_last_good_routing_and_get_names_the_file(worker, content):
    worker.handle_set_routing(json.dumps(body({2: 100}, worker)).encode(), f"Bearer {TOKEN}")
    routing.routing_path(worker.state_dir).write_bytes(content)
    worker._next_check = 0.0  # the next request checks the file
    for _ in range(3):
        status, answer, generation = worker.handle_predict(ROW, None)
        assert (status, answer["version"], generation) == (200, 2, 2)
        worker._next_check = 0.0
    status, view = worker.handle_get_routing()
    assert status == 503 and view["error"]["kind"] == "routing_file"
    assert str(routing.routing_path(worker.state_dir)) in view["error"]["message"]


def test_get_over_http_is_503_with_what_the_workers_apply(worker):
    heartbeats.write(worker.state_dir, __import__("os").getpid(), 1, [1, 2], True, {})
    routing.routing_path(worker.state_dir).write_text("{")
    status, _, answer = Client(admin.make_app(lambda: worker)).request("GET", {})
    assert status == 503 and "routing.json" in answer["error"]["message"]
    assert [b["generation"] for b in answer["workers"]] == [1]


def test_a_write_over_a_corrupt_file_replaces_it_and_the_workers_apply_it(worker):
    routing.routing_path(worker.state_dir).write_text("not json")
    status, answer = worker.handle_set_routing(json.dumps(body({2: 100}, worker)).encode(), f"Bearer {TOKEN}")
    assert status == 200 and answer["generation"] == 2
    assert routing.load(worker.state_dir).routes == {2: 100.0}
    assert worker.applied.generation == 2 and worker.handle_predict(ROW, None)[1]["version"] == 2
    assert worker.handle_get_routing()[0] == 200


# -- generations only grow --------------------------------------------------------------

def _state(routes=None):
    routes = routes or {"1": 100}
    return routing.parse_request({"routes": routes, "digests": {"1": "sha256:" + "1" * 64}}, "m")


def test_the_count_survives_a_corrupt_or_deleted_routing_file(tmp_path):
    for _ in range(5):
        routing.commit(tmp_path, _state())
    routing.routing_path(tmp_path).write_text("{")
    assert routing.commit(tmp_path, _state()).generation == 6
    routing.routing_path(tmp_path).unlink()
    assert routing.commit(tmp_path, _state()).generation == 7
    assert json.loads(routing.generation_path(tmp_path).read_text()) == {"generation": 7}


def test_with_both_files_unreadable_the_applied_generation_is_the_floor(tmp_path):
    for _ in range(3):
        routing.commit(tmp_path, _state())
    routing.routing_path(tmp_path).write_text("{")
    routing.generation_path(tmp_path).write_text("[1]")
    with pytest.raises(RoutingFileError, match="the last generation is unknown"):
        routing.commit(tmp_path, _state())  # nothing says where the count was: refuse, naming both
    assert routing.commit(tmp_path, _state(), floor=3).generation == 4


def test_a_write_based_on_an_older_generation_is_refused(tmp_path):
    for _ in range(4):
        routing.commit(tmp_path, _state())
    with pytest.raises(StaleGeneration, match="changed since generation 3: it is at generation 4"):
        routing.commit(tmp_path, _state(), base=3)
    assert routing.load(tmp_path).generation == 4
    assert routing.commit(tmp_path, _state(), base=4).generation == 5
    assert routing.commit(tmp_path, _state(), base=9).generation == 10  # a caller that saw more raises the count


def test_the_worker_answers_409_for_a_stale_generation_and_400_for_a_bad_one(worker):
    worker.handle_set_routing(json.dumps(body({2: 100}, worker)).encode(), f"Bearer {TOKEN}")
    status, answer = worker.handle_set_routing(json.dumps(body({1: 100}, worker, generation=1)).encode(),
                                               f"Bearer {TOKEN}")
    assert status == 409 and answer["error"]["kind"] == "generation"
    assert routing.load(worker.state_dir).routes == {2: 100.0}
    for bad in (True, -1, 1.5, "2", 2**60):
        status, answer = worker.handle_set_routing(json.dumps(body({1: 100}, worker, generation=bad)).encode(),
                                                   f"Bearer {TOKEN}")
        assert status == 400 and "generation" in answer["error"]["message"], bad
    assert routing.load(worker.state_dir).generation == 2


def test_a_generation_below_what_a_worker_applies_is_never_written(worker):
    # another live worker applied generation 40 (its routing.json and record were lost)
    heartbeats.write(worker.state_dir, __import__("os").getpid(), 40, [1], True, {})
    routing.routing_path(worker.state_dir).unlink()
    routing.generation_path(worker.state_dir).unlink()
    status, answer = worker.handle_set_routing(json.dumps(body({2: 100}, worker)).encode(), f"Bearer {TOKEN}")
    assert status == 200 and answer["generation"] == 41
