"""The admin API over HTTP: ``GET|POST /admin/routing``, mounted by the service at ``/admin``.

A write is checked in this order, and nothing of its body is read before the token::

    1. Authorization: Bearer <token>    401 (constant-time compare)
    2. Content-Length over the limit    413, before reading
    3. the body, read up to the limit   413 as soon as a chunked body passes it
    4. Worker.handle_set_routing        400 / 409 / 503 / 200

A refusal at 1-3 closes the connection (``Connection: close``), so a body announced but
never read cannot be taken for the next request, and a client that announced 100 MB
gets its answer without sending a byte of it. Only the admin path does this work:
``/predict`` never passes through here.

Usage (the service does this)::

    from services.router import admin
    admin_app = admin.make_app(lambda: worker_or_none)
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# An admin body is a few hundred bytes (two or three versions and digests).
MAX_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The request body is larger than :data:`MAX_BODY_BYTES`."""


def _error(status: int, kind: str, message: str, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status, headers=headers)


def _unavailable() -> JSONResponse:
    return _error(503, "unavailable", "worker is starting")


def _too_large(limit: int) -> JSONResponse:
    return _error(413, "too_large", f"body: larger than {limit} bytes (an admin body is a few hundred)", close=True)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused from its Content-Length or as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def make_app(get_worker: Callable[[], Any], limit: int | None = None) -> Starlette:
    """The admin ASGI app over the worker ``get_worker()`` returns (None while it starts)."""
    max_bytes = MAX_BODY_BYTES if limit is None else limit

    # Admin calls run on the event loop (a few small file reads and one write) unless they
    # must reach the registry or load a model: a thread would wait for the GIL at every
    # system call while the loop serves predictions, which under load made a routing
    # change take 0.5 s.
    async def get_routing(request: Request) -> Response:
        worker = get_worker()
        if worker is None:
            return _unavailable()
        status, body = worker.handle_get_routing()
        return JSONResponse(body, status_code=status)

    async def post_routing(request: Request) -> Response:
        import anyio

        worker = get_worker()
        if worker is None:
            return _unavailable()
        auth = request.headers.get("authorization")
        ok, why = worker.authorised(auth)
        if not ok:
            return _error(401, "auth", why, close=True)
        try:
            raw = await read_body(request, max_bytes)
        except BodyTooLarge:
            return _too_large(max_bytes)
        except ClientDisconnect:
            return _error(400, "input", "body: the client went away before sending all of it", close=True)
        result = worker.handle_set_routing(raw, auth, inline=True)
        if result is None:
            result = await anyio.to_thread.run_sync(worker.handle_set_routing, raw, auth)
        status, body = result
        return JSONResponse(body, status_code=status)

    return Starlette(routes=[
        Route("/routing", get_routing, methods=["GET"]),
        Route("/routing", post_routing, methods=["POST"]),
    ])
