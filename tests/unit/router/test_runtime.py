"""The request timeout that replaces BentoML's, driven as a plain ASGI app."""

from __future__ import annotations

import asyncio
import json

from bentoml._internal.server.http.traffic import TimeoutMiddleware as BentoMLTimeout

from services.router.runtime import RequestTimeout


def _app(delay_s: float = 0.0, fail: bool = False):
    async def app(scope, receive, send):
        await asyncio.sleep(delay_s)
        if fail:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


async def _call(middleware) -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    await middleware({"type": "http", "path": "/predict"}, receive, send)
    return sent


def _live_timers(loop) -> int:
    # asyncio keeps scheduled timers in loop._scheduled (CPython); cancelled ones are purged lazily
    return sum(1 for h in loop._scheduled if not h.cancelled())


def test_a_quick_answer_passes_and_leaves_no_timer_behind():
    async def main():
        loop = asyncio.get_running_loop()
        ours = RequestTimeout(_app(), timeout=60)
        for _ in range(100):
            sent = await _call(ours)
            assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
        ours_left = _live_timers(loop)
        theirs = BentoMLTimeout(_app(), timeout=60)
        for _ in range(100):
            await _call(theirs)
        return ours_left, _live_timers(loop) - ours_left

    ours_left, bentoml_left = asyncio.run(main())
    assert ours_left == 0
    # why this class exists: BentoML's keeps every request's timer (and what it holds) for 60 s
    assert bentoml_left == 100


def test_no_response_within_the_timeout_is_a_504():
    sent = asyncio.run(_call(RequestTimeout(_app(delay_s=1.0), timeout=0.05)))
    assert sent[0]["status"] == 504
    assert json.loads(sent[1]["body"])["error"]["kind"] == "timeout"


def test_an_app_that_fails_before_answering_raises_at_once_not_after_the_timeout():
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            await _call(RequestTimeout(_app(fail=True), timeout=30))
        except RuntimeError:
            return loop.time() - t0
        return None

    elapsed = asyncio.run(main())
    assert elapsed is not None and elapsed < 5


def test_install_makes_bentoml_build_it():
    from bentoml._internal.server.http import traffic

    from services.router import runtime

    original = traffic.TimeoutMiddleware
    try:
        runtime.install_request_timeout()
        assert traffic.TimeoutMiddleware is RequestTimeout
    finally:
        traffic.TimeoutMiddleware = original
