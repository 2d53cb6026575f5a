"""Process-level settings shared by the router and the plain baseline service.

Two things a BentoML worker needs so that it never stops answering for a quarter second:

1. A request timeout that lets go of each request when it is answered.

:class:`RequestTimeout` replaces BentoML's ``TimeoutMiddleware`` (``traffic.timeout``),
which never cancels its timer: each request's timer handle stays in the event loop's
heap for the whole timeout, holding the request's future, context and tracing span.
At 1,000 requests/s and the 60 s default that is about 60,000 requests' objects kept
alive per worker; the heap grows by megabytes a second for the first minute and full
garbage collections take 100-400 ms, during which the worker answers nothing. This one
has the same behaviour (504 when no response has started within the timeout) and cancels
its timer as soon as the response starts.

:func:`install_request_timeout` puts it in BentoML's place, so ``traffic={"timeout": ...}``
keeps configuring it; both ``services.router.service`` and ``services.router.plain`` call
it at import.

2. :func:`freeze_startup_heap`: a worker imports MLflow, BentoML, xgboost and pandas, about
a million objects that live as long as the process. Each full garbage collection walks
them all (about 200-300 ms on this machine). Freezing them once start-up is done leaves
full collections only the objects made since.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
from typing import Any, Awaitable, Callable

# seconds before a request that has not started its response gets a 504 (traffic.timeout)
REQUEST_TIMEOUT_S = float(os.environ.get("PROMOTION_REQUEST_TIMEOUT_S", "60"))

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class RequestTimeout:
    """Answer 504 when the app has not started a response within ``timeout`` seconds."""

    def __init__(self, app, timeout: float) -> None:
        self.app = app
        self.timeout = float(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        started = loop.create_future()  # done when the response starts or the app ends
        timer = loop.call_later(self.timeout, _expire, started)

        async def _send(message: dict) -> None:
            _settle(started)
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, _send))
        task.add_done_callback(lambda _: _settle(started))
        try:
            await started
        except asyncio.TimeoutError:
            if task.cancel():
                await _gateway_timeout(send, self.timeout)
            return
        finally:
            timer.cancel()  # the point of this class: the loop lets go of the request now
        await task


def _settle(started: asyncio.Future) -> None:
    if not started.done():
        started.set_result(None)


def _expire(started: asyncio.Future) -> None:
    if not started.done():
        started.set_exception(asyncio.TimeoutError())


async def _gateway_timeout(send: Send, timeout: float) -> None:
    body = json.dumps({"error": {"kind": "timeout",
                                 "message": f"no response within {timeout:g} seconds"}}).encode()
    await send({"type": "http.response.start", "status": 504,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def install_request_timeout() -> None:
    """Make BentoML build :class:`RequestTimeout` where it would build its TimeoutMiddleware."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = RequestTimeout


def freeze_startup_heap() -> None:
    """Collect once, then move every surviving object out of the collector's reach."""
    gc.collect()
    gc.freeze()
