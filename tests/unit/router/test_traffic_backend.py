"""The HTTP traffic backend against a small local server that records what it received."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from promotion.errors import ServiceError
from promotion.traffic import backend_for
from promotion.traffic.bentoml_router import BentoMLRouter

D = "sha256:" + "a" * 64


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, status, body):
        if isinstance(body, dict):
            return self._send(status, body)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        srv = self.server
        srv.gets += 1
        if srv.answer is not None:
            return self._answer(*srv.answer)
        gen = 2 if srv.gets > 2 else 1
        self._send(200, {"generation": 2, "model": "m", "routes": {"1": 100.0}, "digests": {"1": D},
                         "shadow": None, "refused": {},
                         "workers": [{"pid": 10, "generation": gen, "loaded": ["1"], "seen_at": 0},
                                     {"pid": 11, "generation": 2, "loaded": ["1"], "seen_at": 0}]})

    def do_POST(self):
        srv = self.server
        srv.posted.append((self.headers.get("Authorization"),
                           json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        if srv.answer is not None:
            self._answer(*srv.answer)
        elif srv.reject:
            self._send(409, {"error": {"kind": "digest", "message": "digest mismatch: version 1"}})
        else:
            self._send(200, {"generation": 2, "model": "m", "routes": {"1": 100.0}, "digests": {"1": D},
                             "shadow": None})


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.gets, srv.posted, srv.reject, srv.answer = 0, [], False, None
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(srv):
    return f"http://127.0.0.1:{srv.server_address[1]}"


def test_set_routing_sends_token_and_body(server):
    r = BentoMLRouter(url(server), "tok").set_routing({1: 100}, {1: D})
    assert r.generation == 2 and r.routes == {1: 100.0}
    auth, body = server.posted[0]
    assert auth == "Bearer tok"
    assert body == {"routes": {"1": 100.0}, "digests": {"1": D}, "shadow": None}


def test_refusal_is_a_one_line_service_error(server):
    server.reject = True
    with pytest.raises(ServiceError, match="HTTP 409: digest: digest mismatch: version 1"):
        BentoMLRouter(url(server), "tok").set_routing({1: 100}, {1: D})


def test_based_on_travels_as_the_bodys_generation(server):
    BentoMLRouter(url(server), "tok").set_routing({1: 100}, {1: D}, based_on=6)
    assert server.posted[0][1]["generation"] == 6


def _error(kind, message):
    return {"error": {"kind": kind, "message": message}}


@pytest.mark.parametrize("status, body, expected", [
    (409, _error("generation", "routing changed since generation 6: it is at generation 7 now"),
     r"HTTP 409: generation: routing changed since generation 6: it is at generation 7 now "
     r"\(routing not changed: someone else changed it meanwhile"),
    (413, _error("too_large", "body: larger than 65536 bytes"),
     r"HTTP 413: too_large: body: larger than 65536 bytes \(routing not changed"),
    (413, "<html><body>\n<h1>413 Request Entity Too Large</h1></body></html>",
     r"HTTP 413: <html><body> \(routing not changed: the request is larger than the router accepts\)$"),
    (503, _error("routing_file", "/srv/state/routing.json: is not valid JSON (Expecting value)"),
     r"HTTP 503: routing_file: /srv/state/routing.json: is not valid JSON \(Expecting value\) "
     r"\(the router keeps serving what it applied; a routing write \(rollout, rollback\) replaces the file\)"),
    (401, _error("auth", "invalid token"), r"HTTP 401: auth: invalid token \(check the admin token"),
])
def test_refusals_say_what_was_refused_and_that_routing_did_not_change(server, status, body, expected):
    server.answer = (status, body)
    with pytest.raises(ServiceError, match=expected) as err:
        BentoMLRouter(url(server), "tok").set_routing({1: 100}, {1: D})
    assert "\n" not in str(err.value)


def test_get_over_a_corrupt_routing_file_names_the_file(server):
    server.answer = (503, _error("routing_file", "/srv/state/routing.json: is not valid JSON"))
    backend = BentoMLRouter(url(server), "tok")
    with pytest.raises(ServiceError, match="HTTP 503: routing_file: /srv/state/routing.json"):
        backend.routing()
    with pytest.raises(ServiceError, match=r"not applied .* \(last answer: .*routing.json: is not valid JSON"):
        backend.wait_applied(2, timeout_s=0.2)


def test_wait_applied_waits_for_every_worker(server):
    took = BentoMLRouter(url(server), "tok").wait_applied(2, timeout_s=5)
    assert server.gets >= 3 and took >= 0


def test_wait_applied_times_out(server):
    with pytest.raises(ServiceError, match="generation 3 not applied"):
        BentoMLRouter(url(server), "tok").wait_applied(3, timeout_s=0.3)


def test_unreachable_service():
    backend = BentoMLRouter("http://127.0.0.1:9", "tok", timeout_s=1)
    assert backend.is_online() is False
    with pytest.raises(ServiceError, match="cannot reach the service"):
        backend.routing()


def test_no_token_refuses_before_calling(server):
    with pytest.raises(ServiceError, match="no admin token"):
        BentoMLRouter(url(server), None).set_routing({1: 100}, {1: D})
    assert server.posted == []


def test_registry_fails_closed_on_unknown_kind(monkeypatch):
    monkeypatch.setenv("X_TOKEN", "t")
    from promotion.config import Serving

    env = SimpleNamespace(name="prod", endpoint="http://h:1", admin_token=lambda: "t", serving=Serving("bentoml"))
    assert isinstance(backend_for(env), BentoMLRouter)
    env.serving = Serving("istio")  # a kind no backend registered (the schema refuses it first)
    with pytest.raises(ServiceError, match="unknown traffic backend kind 'istio'"):
        backend_for(env)
