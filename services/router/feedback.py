"""Labels for served requests: ``POST /feedback``, joined to what served each request.

A label is joined, through the request index (:mod:`services.router.request_index`:
every worker's journal of served rows), to the version, score, prediction and segment
that answered its request, and counted for that version whenever it arrives, also when
the version is no longer served (wire format: :mod:`promotion.contract.feedback`;
metrics: :mod:`promotion.contract.metrics`).

Idempotence across workers: the ids already labelled are in a log shared by every
worker, ``<state>/feedback/labelled.jsonl``, read and appended under an exclusive
``flock`` of ``<state>/feedback/.lock`` (one feedback call at a time per service, so a
batch sent twice, to two workers at once, counts once). The segment values that get
their own series (at most ``SEGMENT_VALUES_MAX``, the first ones labelled; later ones
count as ``__other__``) are kept in ``<state>/feedback/segments.json`` under the same
lock, so every worker exports the same ones. A label is written to the shared log before
it is counted: a crash in between loses that label rather than counting it twice.

The HTTP side checks as the admin API does (:mod:`services.router.admin`): the token
first (nothing of the body is read without it), then the body's size, then its shape::

    from services.router import feedback
    app = feedback.make_app(lambda: worker_or_none)     # mounted by the service: POST /feedback
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promotion.contract import feedback as wire
from promotion.contract.routing import WORKER_HEADER
from promotion.contract.metrics import FEEDBACK_RESULTS, OTHER_SEGMENT, SEGMENT_VALUES_MAX
from services.router.request_index import AMBIGUOUS, RequestIndex, Served, Tail

MAX_LOG_BYTES = 16 << 20


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, bool)) or (isinstance(v, float) and v.is_integer())


def _same_class(a: Any, b: Any) -> bool:
    if _is_int(a) and _is_int(b):
        return int(a) == int(b)
    return type(a) is type(b) and a == b


def judge(served: Served, kind: str, value: Any) -> tuple[str, Any] | str:
    """``("outcome", "tp"|"fp"|"fn"|"tn")`` or ``("error", prediction - value)`` for a
    label that fits what served the request; otherwise why not (a message)."""
    v = served.version
    classes = served.classes
    if kind == "value":
        if classes is not None or isinstance(served.prediction, bool) or \
                not isinstance(served.prediction, (int, float)):
            return f"served by version {v} as a classification: send label, not value"
        return "error", float(served.prediction) - value
    if classes is None:
        return f"served by version {v} as a regression: send value, not label"
    if not classes:
        return f"served by version {v}, which is not a binary classifier (no positive class)"
    positive = classes[0]
    if _same_class(value, positive):
        truth = True
    elif _is_int(value) == _is_int(positive):
        truth = False
    else:
        return f"label {value!r} is not a class of version {v} (its positive class is {positive!r})"
    predicted = _same_class(served.prediction, positive)
    return "outcome", ("tp" if truth else "fp") if predicted else ("fn" if truth else "tn")


class Feedback:
    """One worker's join of labels to served requests (every worker of a service shares
    the state on disk; calls of one worker are serialised by a lock)."""

    def __init__(self, state_dir: str | Path, metrics, index_size: int, max_log_bytes: int = MAX_LOG_BYTES) -> None:
        self.dir = Path(state_dir) / "feedback"
        self.metrics = metrics
        self.index = RequestIndex(state_dir, index_size)
        self.max_log_bytes = max_log_bytes
        self._labelled: OrderedDict[str, None] = OrderedDict()
        self._labelled_max = max(index_size, 1)
        self._tail = Tail(self.dir, ("labelled.jsonl.1", "labelled.jsonl"))
        self._lock = threading.Lock()

    def handle(self, items: list[tuple[str, str, Any]]) -> dict[str, Any]:
        """Join and count a parsed batch (:func:`promotion.contract.feedback.parse_batch`)."""
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return self._handle_locked(items)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _handle_locked(self, items: list[tuple[str, str, Any]]) -> dict[str, Any]:
        self._read_labelled()
        self.index.catch_up()
        segments = self._segments()
        known_segments = len(segments)
        now = time.time()
        counts = dict.fromkeys(FEEDBACK_RESULTS, 0)
        unknown_ids: list[str] = []
        invalid_items: list[dict] = []
        accepted: list[tuple[str, Served, str, tuple[str, Any]]] = []
        seen: set[str] = set()
        for i, (rid, kind, value) in enumerate(items):
            if rid in self._labelled or rid in seen:
                counts["duplicate"] += 1
                continue
            served = self.index.get(rid)
            if served is None:
                counts["unknown"] += 1
                if len(unknown_ids) < wire.MAX_REPORTED:
                    unknown_ids.append(rid)
                continue
            verdict = "the request id was served more than once; it names no single row" \
                if served is AMBIGUOUS else judge(served, kind, value)
            if isinstance(verdict, str):
                counts["invalid"] += 1
                if len(invalid_items) < wire.MAX_REPORTED:
                    invalid_items.append({"index": i, "request_id": rid, "message": verdict})
                continue
            seen.add(rid)
            segment = self._segment_label(served.segment, segments)
            accepted.append((rid, served, segment, verdict))
        if accepted:
            self._append([[rid, s.version, seg] for rid, s, seg, _ in accepted])
            for rid, *_ in accepted:
                self._remember(rid)
            if len(segments) != known_segments:
                self._save_segments(segments)
            self._count(accepted, now)
        counts["accepted"] = len(accepted)
        m = self.metrics
        for result, n in counts.items():
            if n:
                m.child(m.feedback, result).inc(n)
        return {**counts, "unknown_ids": unknown_ids, "invalid_items": invalid_items}

    # -- shared state ------------------------------------------------------------------

    def _remember(self, rid: str) -> None:
        self._labelled[rid] = None
        if len(self._labelled) > self._labelled_max:
            self._labelled.popitem(last=False)

    def _read_labelled(self) -> None:
        for line in self._tail.lines():
            try:
                self._remember(str(json.loads(line)[0]))
            except (ValueError, TypeError, IndexError):
                continue

    def _append(self, rows: list[list]) -> None:
        path = self.dir / "labelled.jsonl"
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, data)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size > self.max_log_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
        self._read_labelled()  # our own lines: move this reader past them

    def _segments(self) -> list[str]:
        try:
            data = json.loads((self.dir / "segments.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(s) for s in data][:SEGMENT_VALUES_MAX] if isinstance(data, list) else []

    def _save_segments(self, segments: list[str]) -> None:
        tmp = self.dir / f".segments.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(segments), encoding="utf-8")
        os.replace(tmp, self.dir / "segments.json")

    @staticmethod
    def _segment_label(value: str | None, segments: list[str]) -> str:
        if value is None:
            return ""
        if value in segments:
            return value
        if len(segments) < SEGMENT_VALUES_MAX and value != OTHER_SEGMENT:
            segments.append(value)
            return value
        return OTHER_SEGMENT

    # -- metrics -----------------------------------------------------------------------

    def _count(self, accepted: list, now: float) -> None:
        m = self.metrics
        delays: dict[str, list[float]] = {}
        for _, served, segment, (what, x) in accepted:
            v = str(served.version)
            if what == "outcome":
                m.child(m.labels, v, segment, x).inc()
            else:
                m.child(m.label_values, v, segment).inc()
                m.child(m.label_abs_error, v, segment).inc(abs(x))
                m.child(m.label_squared_error, v, segment).inc(x * x)
            delays.setdefault(v, []).append(max(0.0, now - served.ts))
        for v, xs in delays.items():
            m.observe_many(m.child(m.label_delay, v), xs)


# -- HTTP ------------------------------------------------------------------------------

def _error(status: int, kind: str, message: str, close: bool = False) -> JSONResponse:
    headers = {"Connection": "close"} if close else None
    return JSONResponse({"error": {"kind": kind, "message": message}}, status_code=status, headers=headers)


def make_app(get_worker: Callable[[], Any], limit: int | None = None) -> Starlette:
    """The ``POST /feedback`` ASGI app over the worker ``get_worker()`` returns."""
    from services.router.admin import BodyTooLarge, read_body

    max_bytes = wire.MAX_BODY_BYTES if limit is None else limit

    async def post_feedback(request: Request) -> Response:
        import anyio

        worker = get_worker()
        if worker is None:
            return _error(503, "unavailable", "worker is starting")
        ok, why = worker.feedback_authorised(request.headers.get("authorization"))
        if not ok:
            return _error(401, "auth", why, close=True)
        if worker.feedback is None:
            return _error(503, "disabled", f"feedback is disabled ({wire.REQUEST_INDEX_SIZE_ENV}=0)", close=True)
        try:
            raw = await read_body(request, max_bytes)
        except BodyTooLarge:
            return _error(413, "too_large", f"body: larger than {max_bytes} bytes (send smaller batches)", close=True)
        except ClientDisconnect:
            return _error(400, "input", "body: the client went away before sending all of it", close=True)
        status, body = await anyio.to_thread.run_sync(worker.handle_feedback, raw)
        return JSONResponse(body, status_code=status, headers={WORKER_HEADER: str(worker.pid)})

    return Starlette(routes=[Route(wire.FEEDBACK_PATH, post_feedback, methods=["POST"])])


def parse(raw: bytes) -> list[tuple[str, str, Any]] | tuple[int, dict]:
    """The batch in ``raw``, or a 400 answer naming what is wrong."""
    try:
        return wire.parse_batch(json.loads(raw or b"null"))
    except RecursionError:
        return 400, {"error": {"kind": "input", "message": "body: not valid JSON (nested too deeply)"}}
    except wire.FeedbackInputError as exc:
        return 400, {"error": {"kind": "input", "message": str(exc)}}
    except ValueError as exc:
        return 400, {"error": {"kind": "input", "message": f"body: not valid JSON ({exc})"}}
