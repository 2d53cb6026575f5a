"""The router's admin API under a real ``bentoml serve`` with two workers, as an attacker
and an operator meet it.

What they notice: a write without the token is refused before any of its body is read
(a client that announces 100 MB and sends nothing still gets 401 at once); an oversize
write is 413; a corrupt ``routing.json`` keeps traffic on the last good routing, GET
answers 503 naming the file, and a rollback write replaces it and moves traffic on both
workers; a write carrying an older generation than the current one is 409.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests

from promotion.errors import ServiceError
from promotion.traffic.bentoml_router import BentoMLRouter
from services.router.process import free_port, start_service
from tests.support.router_env import FEATURES, TOKEN, fraud_registry

pytestmark = pytest.mark.integration

HUGE = 100 * 1024 * 1024


@pytest.fixture(scope="module")
def fr(tmp_path_factory):
    return fraud_registry(tmp_path_factory.getbasetemp() / "registry")


@pytest.fixture(scope="module")
def svc(fr, tmp_path_factory):
    state = tmp_path_factory.mktemp("router-admin")
    service = start_service(free_port(), state, fr.uri, TOKEN, workers=2,
                            initial_routes=json.dumps(fr.body({1: 100})))
    yield service
    service.stop()


def raw(svc, head: str, chunks: list[bytes] = (), timeout_s: float = 10.0) -> tuple[int, dict, dict | None, float]:
    """Send exactly these bytes; (status, headers, JSON body or None, seconds to the answer)."""
    url = urlsplit(svc.url)
    with socket.create_connection((url.hostname, url.port), timeout=timeout_s) as s:
        t0 = time.monotonic()
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for chunk in chunks:
            s.sendall(chunk)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                got = s.recv(65536)
                if not got:
                    break
                data += got
        except socket.timeout:
            pytest.fail(f"no answer within {timeout_s:g} s (the server is waiting for the body)")
        took = time.monotonic() - t0
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
        length = int(headers.get("content-length", "0"))
        try:
            while len(rest) < length:
                got = s.recv(65536)
                if not got:
                    break
                rest += got
        except socket.timeout:
            pass
    body = json.loads(rest[:length]) if length else None
    return int(lines[0].split()[1]), headers, body, took


def post_head(length: int | None, token: str | None = None, chunked: bool = False) -> str:
    lines = ["POST /admin/routing HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    else:
        lines.append(f"Content-Length: {length}")
    return "\n".join(lines) + "\n"


def view(svc) -> requests.Response:
    return requests.get(svc.url + "/admin/routing", timeout=10)


def predict_many(svc, n: int) -> list[requests.Response]:
    # a fresh connection per request, so the kernel spreads requests over both workers
    return [requests.post(svc.url + "/predict", json={"features": FEATURES}, timeout=10) for _ in range(n)]


def served_by_worker(responses) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for r in responses:
        assert r.status_code == 200, r.text
        out.setdefault(r.headers["X-Promotion-Worker"], set()).add(r.json()["version"])
    return out


@pytest.mark.parametrize("token", [None, "wrong"], ids=["no-token", "wrong-token"])
def test_an_unauthenticated_write_is_refused_before_its_body_is_read(svc, token):
    before = view(svc).json()
    status, headers, body, took = raw(svc, post_head(HUGE, token))  # 100 MB announced, nothing sent
    assert status == 401 and body["error"]["kind"] == "auth"
    assert took < 5.0
    assert headers.get("connection") == "close"  # the announced body is never read from this connection
    after = view(svc).json()
    assert (after["generation"], after["routes"]) == (before["generation"], before["routes"])


def test_an_authenticated_write_over_the_limit_is_413_from_its_content_length(svc):
    status, headers, body, took = raw(svc, post_head(HUGE, TOKEN))
    assert status == 413 and body["error"]["kind"] == "too_large"
    assert "65536" in body["error"]["message"] and took < 5.0


def test_a_chunked_body_is_cut_off_at_the_limit(svc, fr):
    before = view(svc).json()["generation"]
    # a valid routing padded past 64 KiB with whitespace, sent chunked and never terminated:
    # a server that read it all would wait forever
    payload = json.dumps(fr.body({1: 100})).encode() + b" " * (66 * 1024)
    chunks = [b"%x\r\n%s\r\n" % (len(payload[i:i + 8192]), payload[i:i + 8192])
              for i in range(0, len(payload), 8192)]
    status, _, body, _ = raw(svc, post_head(None, TOKEN, chunked=True), chunks)
    assert status == 413 and body["error"]["kind"] == "too_large"
    assert view(svc).json()["generation"] == before


def test_a_corrupt_routing_file_keeps_traffic_and_a_rollback_write_replaces_it(svc, fr):
    backend = BentoMLRouter(svc.url, TOKEN)
    good = backend.set_routing({1: 0, 2: 100}, {1: fr.digests[1], 2: fr.digests[2]})
    backend.wait_applied(good.generation, timeout_s=10)
    path = svc.state_dir / "routing.json"
    path.write_text('{"generation": 99, "routes": {"1": 100')  # a hand edit cut short

    # the data path keeps the last good routing on both workers
    time.sleep(0.3)
    during = served_by_worker(predict_many(svc, 80))
    assert len(during) == 2 and all(v == {2} for v in during.values()), during

    # GET names the file instead of answering 500
    r = view(svc)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["kind"] == "routing_file" and str(path) in r.json()["error"]["message"]
    with pytest.raises(ServiceError, match="routing.json"):
        backend.routing()

    # the rollback: an authenticated write replaces the file, with a later generation
    rolled = backend.set_routing({1: 100}, {1: fr.digests[1]})
    assert rolled.generation == good.generation + 1
    backend.wait_applied(rolled.generation, timeout_s=10)
    assert json.loads(path.read_text())["generation"] == rolled.generation
    after = predict_many(svc, 80)
    by_worker = served_by_worker(after)
    assert len(by_worker) == 2 and all(v == {1} for v in by_worker.values()), by_worker
    assert {int(r.headers["X-Promotion-Generation"]) for r in after} == {rolled.generation}
    assert view(svc).status_code == 200


def test_with_its_generation_record_gone_too_the_count_continues_from_the_workers(svc, fr):
    backend = BentoMLRouter(svc.url, TOKEN)
    current = backend.routing().generation
    (svc.state_dir / "routing.json").write_bytes(b"\x00\xff" * 100)
    (svc.state_dir / "routing.generation").write_text("garbage")
    r = backend.set_routing({1: 50, 2: 50}, {1: fr.digests[1], 2: fr.digests[2]})
    assert r.generation == current + 1  # the workers' applied generation is the floor
    backend.wait_applied(r.generation, timeout_s=10)
    versions = Counter(x.json()["version"] for x in predict_many(svc, 60))
    assert versions[1] > 5 and versions[2] > 5


def test_a_write_carrying_an_older_generation_is_409_and_changes_nothing(svc, fr):
    backend = BentoMLRouter(svc.url, TOKEN)
    backend.set_routing({1: 100}, {1: fr.digests[1]})
    before = backend.routing()
    stale = {**fr.body({2: 100}), "generation": before.generation - 1}
    r = requests.post(svc.url + "/admin/routing", json=stale, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=60)
    assert r.status_code == 409 and r.json()["error"]["kind"] == "generation", r.text
    assert f"generation {before.generation}" in r.json()["error"]["message"]
    with pytest.raises(ServiceError, match="changed since generation"):
        backend.set_routing({2: 100}, {2: fr.digests[2]}, based_on=before.generation - 1)
    after = backend.routing()
    assert (after.generation, after.routes) == (before.generation, before.routes)
    assert {x.json()["version"] for x in predict_many(svc, 30)} == {1}
    # based on the current generation, the same write goes through
    assert backend.set_routing({2: 100}, {2: fr.digests[2]}, based_on=before.generation).generation == (
        before.generation + 1)
