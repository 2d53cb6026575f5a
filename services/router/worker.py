"""One serving worker's routing, independent of the HTTP framework.

A :class:`Worker` lives in each BentoML worker process. It applies the shared routing
state (``<state>/routing.json``) as soon as it changes: a request re-checks the file with
one ``stat`` (mtime, inode, size) when ``CHECK_S`` has passed since the last check (so a
busy worker applies a change within about 20 ms, for one clock read per request), and a
background thread does the same every ``poll_s`` so idle workers apply too (every
``BUSY_POLL_S`` while requests flow: they check, and wake it when it has work). A state
that names a version this worker has not loaded is applied only after that version is
fetched, its digest verified and the model loaded (in the background); until then the
previous routing keeps serving.

Request and error counters are written as each request finishes (the canary analysis
reads them). The latency histogram is published in batches: a request appends
``(version, seconds)`` to a queue, and the queue is moved into the histogram by the
request that does the routing check (so at most ``CHECK_S`` after a request while
requests flow, and at once for a request after a quiet spell), by the background thread
(within ``BUSY_POLL_S`` of the last request), and before a new routing generation is
applied (so the latencies queued under the previous weights are in before the new ones
apply; a request still in flight on another thread at that instant joins the next
batch). In a loaded server a histogram observation costs two multiprocess metric writes,
about 15 µs with cold caches between requests; batched, one write per bucket touched per
batch.

Every served row gets a request id (the client's ``X-Request-Id`` when it is a sane
token, else a generated one; :mod:`promotion.contract.feedback`), returned in the answer
and appended, with the version, score, prediction and segment value, to this worker's
request journal (one ``write`` per request, so a label posted to any worker joins it:
:mod:`services.router.feedback`). Scores go into the per-version score histogram in the
same batches as latencies.

``handle_predict``, ``handle_set_routing`` and ``handle_feedback`` return ``(status,
body)`` pairs that the service turns into HTTP responses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from promotion.contract import feedback as feedback_wire
from promotion.contract.inference_log import InferenceLog
from promotion.registry import RegistryError
from services.router import feedback, heartbeats, payload, routing, shadow
from services.router.request_index import RequestJournal, segment_value
from services.router import models as model_loading
from services.router.models import DigestMismatch, InputError, LoadedModel, LoadError, PredictError
from services.router.routing import RouteTable, RoutingFileError, RoutingInputError, RoutingState, StaleGeneration

# A child of "bentoml" so that lines reach the server log under BentoML's logging config.
log = logging.getLogger("bentoml.promotion_router")

RETRY_S = 5.0  # how long a version that failed to load is left alone before retrying
CHECK_S = 0.02  # a request re-reads the routing file's stat (and publishes metrics) at most this often
BUSY_POLL_S = 0.5  # the background thread's poll while requests are checking the file


@dataclass(frozen=True)
class Applied:
    """What the worker serves right now: immutable, swapped as a whole."""

    state: RoutingState
    table: RouteTable
    models: dict[int, LoadedModel]
    shadow: LoadedModel | None
    shadow_fraction: float

    @property
    def generation(self) -> int:
        return self.state.generation


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"kind": kind, "message": message}}


def _bearer(token: str, authorization: str | None) -> tuple[bool, str]:
    """Whether ``authorization`` is ``Bearer <token>``, compared as fixed-length digests."""
    given = (authorization or "").strip()
    if not given.lower().startswith("bearer "):
        return False, "missing bearer token"
    presented = hashlib.sha256(given[7:].strip().encode("utf-8", "surrogateescape")).digest()
    if not hmac.compare_digest(presented, hashlib.sha256(token.encode()).digest()):
        return False, "invalid token"
    return True, ""


class Worker:
    """Routing, model loading and admin handling for one worker process."""

    def __init__(self, state_dir: str | Path, model_name: str, registry_factory: Callable[[], Any],
                 admin_token: str | None, metrics, sample: float = 0.1, initial_routes: str | None = None,
                 poll_s: float = 0.05, heartbeat_s: float = 1.0, feedback_token: str | None = None,
                 segment_column: str | None = None,
                 index_size: int = feedback_wire.DEFAULT_INDEX_SIZE) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = routing.routing_path(self.state_dir)
        self.cache = self.state_dir / "artifacts"
        self.model_name = model_name
        self._registry_factory = registry_factory
        self._registry = None
        self._admin_token = admin_token or None
        self._feedback_token = feedback_token or None
        self.segment_column = segment_column or None
        # index_size 0: no journal, and POST /feedback answers 503
        self.journal = RequestJournal(self.state_dir) if index_size > 0 else None
        self.feedback = feedback.Feedback(self.state_dir, metrics, index_size) if index_size > 0 else None
        self._journal_failed_at = 0.0
        self.metrics = metrics
        self.sample = sample
        self.initial_routes = initial_routes
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self.pid = os.getpid()
        self.applied: Applied | None = None
        self.loaded: dict[int, LoadedModel] = {}
        self.refused: dict[int, str] = {}
        self.inference_log = InferenceLog(self.state_dir)
        self._sig: tuple | None | str = "unread"  # None would mean "file absent, already handled"
        self._next_check = 0.0
        self._latencies: deque[tuple[str, float]] = deque()  # observed, not yet in the histogram
        self._scores: deque[tuple[str, list]] = deque()  # served scores, not yet in the score histogram
        self._pending_sig: tuple | None = None
        self._failed: tuple[tuple | None, float] = (None, 0.0)
        self._apply_lock = threading.Lock()
        self._load_lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._beat_due = True
        self._thread: threading.Thread | None = None
        self._shadow = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def registry(self):
        if self._registry is None:
            self._registry = self._registry_factory()
        return self._registry

    def start(self) -> None:
        """Apply the persisted routing (loading its models), then watch for changes."""
        self._shadow = shadow.ShadowMirror(self.state_dir, self.metrics, self.sample)
        try:
            self._shadow.ensure_running()
        except OSError:  # the watcher retries; until then mirrors are dropped and counted
            log.exception("cannot start the shadow process")
        try:
            self.refresh(allow_load=True)
        except Exception:  # the thread retries; a worker without routing answers 503
            log.exception("initial routing could not be applied")
        self._write_heartbeat()
        self._thread = threading.Thread(target=self._watch, name="promotion-routing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.publish_metrics()
        if self._shadow is not None:
            self._shadow.stop()
        self.inference_log.close()
        if self.journal is not None:
            self.journal.close()
        heartbeats.remove(self.state_dir, self.pid)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def ready(self) -> bool:
        """Serving: a routing is applied and every version it names is loaded."""
        return self.applied is not None

    def _watch(self) -> None:
        last_beat = last_flush = time.monotonic()
        while not self._stop.is_set():
            # While requests flow they check the file themselves (and wake this thread for
            # a load or a heartbeat), so polling then would only cost GIL hand-offs and
            # context switches on the serving thread: wait longer.
            busy = time.monotonic() - self._next_check < self.poll_s
            self._wake.wait(BUSY_POLL_S if busy else self.poll_s)
            self._wake.clear()
            self.publish_metrics()
            try:
                self.refresh(allow_load=True)
            except Exception:
                log.exception("routing refresh failed")
            try:
                self._shadow.ensure_running()
            except OSError:
                log.exception("cannot start the shadow process")
            now = time.monotonic()
            if self._beat_due or now - last_beat >= self.heartbeat_s:
                self._write_heartbeat()
                last_beat = now
            if now - last_flush >= 1.0:
                self.inference_log.flush()
                last_flush = now

    def _write_heartbeat(self) -> None:
        self._beat_due = False
        applied = self.applied
        try:
            heartbeats.write(self.state_dir, self.pid, applied.generation if applied else 0,
                             list(self.loaded), applied is not None, dict(self.refused),
                             self._shadow.pid if self._shadow is not None else None)
        except OSError:
            log.exception("cannot write heartbeat")

    # -- applying routing --------------------------------------------------------------

    def maybe_refresh(self) -> bool:
        """The per-request check: one stat at most every ``CHECK_S``; re-read and apply
        only when the file changed. True when it checked (the request then publishes)."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + CHECK_S
        sig = routing.signature(self.path)
        if sig != self._sig and sig != self._pending_sig:
            self.refresh(allow_load=False)
        return True

    def publish_metrics(self) -> None:
        """Move queued latencies into the histogram (from any thread: each is taken
        exactly once)."""
        m = self.metrics
        scores = self._scores
        if scores:
            by_score: dict[str, list[float]] = {}
            while True:
                try:
                    v, xs = scores.popleft()
                except IndexError:
                    break
                by_score.setdefault(v, []).extend(xs)
            for v, xs in by_score.items():
                m.observe_many(m.child(m.score, v), xs)
        queued = self._latencies
        if not queued:
            return
        by_version: dict[str, list[float]] = {}
        while True:
            try:
                v, seconds = queued.popleft()
            except IndexError:
                break
            by_version.setdefault(v, []).append(seconds)
        for v, xs in by_version.items():
            m.observe_many(m.child(m.latency, v), xs)

    def refresh(self, allow_load: bool) -> None:
        sig = routing.signature(self.path)
        if sig == self._sig:
            return
        if sig is None:
            if allow_load and self.initial_routes:
                self._initialise()
            return
        if not allow_load and sig == self._pending_sig:
            return
        failed_sig, failed_at = self._failed
        if allow_load and sig == failed_sig and time.monotonic() - failed_at < RETRY_S:
            return
        try:
            state = routing.load(self.state_dir)
        except (OSError, ValueError) as exc:  # RoutingFileError: a hand-broken file; keep serving
            log.error("routing file unreadable, keeping current routing: %s", exc)
            self._sig = sig
            return
        if state is None:
            return
        missing = {v: d for v, d in state.versions().items()
                   if v not in self.loaded or self.loaded[v].digest != d}
        if missing:
            if not allow_load:
                self._pending_sig = sig
                self._wake.set()
                return
            try:
                for v, d in sorted(missing.items()):
                    self.load_version(v, d)
            except LoadError as exc:
                log.error("routing generation %s not applied: %s", state.generation, exc)
                self._failed = (sig, time.monotonic())
                self._beat_due = True
                return
        self._apply(state, sig, blocking=allow_load)

    def _apply(self, state: RoutingState, sig: tuple, blocking: bool) -> None:
        if not self._apply_lock.acquire(blocking=blocking):
            return  # another thread is applying; the next request re-checks
        try:
            current = self.applied
            if current is not None and current.generation >= state.generation:
                self._sig = sig
                return
            loaded = dict(self.loaded)
            needed = state.versions()
            if any(v not in loaded or loaded[v].digest != d for v, d in needed.items()):
                return  # evicted meanwhile; the background thread reloads
            applied = Applied(
                state=state, table=RouteTable(state.routes),
                models={v: loaded[v] for v in state.routes},
                shadow=loaded[state.shadow.version] if state.shadow else None,
                shadow_fraction=(state.shadow.percent / 100.0) if state.shadow else 0.0,
            )
            # latencies queued under the previous weights are in before these apply
            self.publish_metrics()
            self.applied = applied
            self._sig = sig
            self._pending_sig = None
            if applied.shadow is not None and self._shadow is not None and \
                    (current is None or current.shadow is not applied.shadow):
                self._shadow.preload(applied.shadow)  # loaded before the first mirrored request
            keep = set(needed) | (set(current.state.versions()) if current else set())
            # never wait here for a model load in progress (this may be the event loop):
            # the next apply prunes instead
            if self._load_lock.acquire(blocking=False):
                try:
                    self.loaded = {v: m for v, m in self.loaded.items() if v in keep}
                finally:
                    self._load_lock.release()
            self._beat_due = True
            self._wake.set()
            log.info("applied routing generation %s: %s shadow=%s", state.generation, state.routes,
                     state.shadow.version if state.shadow else None)
        finally:
            self._apply_lock.release()

    def load_version(self, version: int, digest: str) -> LoadedModel:
        """Fetch, verify and load one version (no-op if loaded with that digest)."""
        with self._load_lock:
            m = self.loaded.get(version)
            if m is not None and m.digest == digest:
                return m
            try:
                m = model_loading.load(self.registry, self.model_name, version, digest, self.cache)
            except DigestMismatch as exc:
                self.refused[version] = str(exc)
                self._beat_due = True
                raise
            self.refused.pop(version, None)
            try:
                shadow.export(self.state_dir, m)
            except OSError:  # serving does not need it; a shadow of this version counts errors
                log.exception("cannot export version %s for shadow processes", version)
            self.loaded = {**self.loaded, version: m}
            return m

    def _initialise(self) -> None:
        """First start without routing.json: verify PROMOTION_INITIAL_ROUTES, then persist it."""
        try:
            state = routing.parse_request(json.loads(self.initial_routes), model=self.model_name)
        except (ValueError, RoutingInputError) as exc:
            log.error("PROMOTION_INITIAL_ROUTES is invalid, not serving: %s", exc)
            self.initial_routes = None
            return
        try:
            for v, d in sorted(state.versions().items()):
                self.load_version(v, d)
        except LoadError as exc:
            log.error("initial routes not applied: %s", exc)
            if isinstance(exc, DigestMismatch):
                self.initial_routes = None  # refused for good; an admin call must set routing
            return
        routing.commit(self.state_dir, state, if_absent=True)

    # -- request handling ---------------------------------------------------------------

    def handle_predict(self, body: Any, key: str | None, request_id: str | None = None) -> tuple[int, dict, int]:
        """Route and predict one request body (any format of :mod:`promotion.contract.predict`):
        ``(status, answer, generation)``. ``request_id``: the request's id, already checked
        (:func:`promotion.contract.feedback.valid_request_id`); one is generated without it."""
        t0 = time.perf_counter()
        publish = self.maybe_refresh()
        applied = self.applied
        m = self.metrics
        if applied is None:
            m.child(m.errors, "none", "unavailable").inc()
            return 503, _error("unavailable", "no routing applied yet (see GET /admin/routing)"), 0
        version = applied.table.pick(routing.bucket(key) if key else random.random() * 100.0)
        model = applied.models[version]
        v = str(version)
        try:
            batch = payload.parse(body)
            values = model.inputs(batch)
            prediction = model.predict(values, batch)
        except InputError as exc:
            return self._failed_request(v, "input", 400, str(exc), t0, applied.generation, publish)
        except PredictError as exc:
            log.error("%s", exc)
            return self._failed_request(v, "predict", 500, str(exc), t0, applied.generation, publish)
        except Exception as exc:
            log.exception("version %s failed to predict", version)
            return self._failed_request(v, "predict", 500, f"version {version} failed to predict: "
                                        f"{exc.__class__.__name__}", t0, applied.generation, publish)
        m.child(m.requests, v).inc()
        ids = feedback_wire.row_ids(request_id or feedback_wire.new_request_id(), batch.n)
        segments = self._segments(batch)
        if prediction.scores is not None:
            self._scores.append((v, prediction.scores))
        if self.journal is not None:
            self._journal(version, ids, prediction, segments)
        self._latencies.append((v, time.perf_counter() - t0))
        if applied.shadow is not None and (applied.shadow_fraction >= 1.0 or random.random() < applied.shadow_fraction):
            self._shadow.offer(applied.shadow, batch, prediction.decisions())
        if self.sample > 0:
            self.inference_log.write_sampled(version, values, prediction.predictions, prediction.scores,
                                             prediction.labels, self.sample, request_ids=ids, segments=segments)
        if publish:
            self.publish_metrics()
        answer = model.answer(batch, prediction)
        if batch.legacy:
            answer[feedback_wire.REQUEST_ID_FIELD] = ids[0]
        else:
            answer[feedback_wire.REQUEST_IDS_FIELD] = ids
        return 200, answer, applied.generation

    def handle_pinned(self, body: Any, version: str, authorization: str | None) -> tuple[int, dict, int]:
        """One request served by ``version`` only (a smoke test of a canary at weight 0):
        ``(status, answer, generation)``. Needs the admin token (a user must never choose a
        version the rollout has not given traffic), and the version must be loaded by the
        applied routing. Not counted in metrics, logs or feedback: it is not user traffic."""
        self.maybe_refresh()
        applied = self.applied
        ok, why = self.authorised(authorization)
        if not ok:
            return 401, _error("unauthorised", f"{why}: a pinned request needs the admin token"), 0
        if applied is None:
            return 503, _error("unavailable", "no routing applied yet (see GET /admin/routing)"), 0
        model = applied.models.get(int(version)) if version.isdigit() and len(version) < 12 else None
        if model is None:
            return 404, _error("unknown_version", f"version {version[:12]!r} is not loaded here"), applied.generation
        try:
            batch = payload.parse(body)
            prediction = model.predict(model.inputs(batch), batch)
        except InputError as exc:
            return 400, _error("input", str(exc)), applied.generation
        except Exception as exc:  # noqa: BLE001 - the smoke test's answer, not a crash of the worker
            return 500, _error("predict", f"version {version} failed to predict: {exc.__class__.__name__}"), \
                applied.generation
        return 200, model.answer(batch, prediction), applied.generation

    def _segments(self, batch) -> list | None:
        """The segment column's value per row (None without one configured or sent)."""
        if self.segment_column is None or batch.columns is None:
            return None
        raw = batch.columns.get(self.segment_column)
        return None if raw is None else [segment_value(x) for x in raw]

    def _journal(self, version: int, ids: list[str], prediction, segments: list | None) -> None:
        try:
            self.journal.record(version, ids, prediction.scores, prediction.predictions, prediction.classes(),
                                segments)
        except OSError as exc:  # a full disk must not fail predictions; labels for these go unknown
            now = time.monotonic()
            if now - self._journal_failed_at > 60:
                self._journal_failed_at = now
                log.error("request journal not written (labels for these requests will be unknown): %s", exc)

    def _failed_request(self, v: str, kind: str, status: int, message: str, t0: float, generation: int,
                        publish: bool):
        m = self.metrics
        m.child(m.requests, v).inc()
        m.child(m.errors, v, kind).inc()
        self._latencies.append((v, time.perf_counter() - t0))
        if publish:
            self.publish_metrics()
        return status, _error(kind, message), generation

    # -- admin --------------------------------------------------------------------------

    def authorised(self, authorization: str | None) -> tuple[bool, str]:
        """``(True, "")`` for ``Bearer <the admin token>``, else ``(False, why)``.

        Compares digests of equal length in constant time, so neither the token's content
        nor its length shows in the time a refusal takes.
        """
        if not self._admin_token:
            return False, "admin writes are refused: no admin token is configured (PROMOTION_ADMIN_TOKEN)"
        return _bearer(self._admin_token, authorization)

    def feedback_authorised(self, authorization: str | None) -> tuple[bool, str]:
        """``(True, "")`` for ``Bearer <the feedback token>`` (``PROMOTION_FEEDBACK_TOKEN``;
        the admin token when none is set), else ``(False, why)``. With a feedback token set,
        the admin token is refused: a labelling job needs no power over routing, nor the
        reverse."""
        token = self._feedback_token or self._admin_token
        if not token:
            return False, (f"feedback is refused: no token is configured ({feedback_wire.FEEDBACK_TOKEN_ENV} "
                           "or PROMOTION_ADMIN_TOKEN)")
        return _bearer(token, authorization)

    def handle_feedback(self, raw: bytes) -> tuple[int, dict]:
        """``POST /feedback`` after the token and size checks: join and count a batch."""
        if self.feedback is None:
            return 503, _error("disabled", f"feedback is disabled ({feedback_wire.REQUEST_INDEX_SIZE_ENV}=0)")
        items = feedback.parse(raw)
        if isinstance(items, tuple):
            return items
        try:
            return 200, self.feedback.handle(items)
        except OSError as exc:
            return 503, _error("feedback_state", f"{self.state_dir / 'feedback'}: {exc.strerror or exc}")

    def handle_set_routing(self, raw: bytes, authorization: str | None,
                           inline: bool = False) -> tuple[int, dict] | None:
        """Validate, verify, persist and apply a routing change; routing is unchanged on any error.

        ``inline`` is for the event loop: it answers only calls that need no registry or
        model loading (every version named is loaded with its digest, or the call is
        refused before that) and returns None for the rest, which the caller hands to a
        thread. Under load that saves the admin call many GIL hand-offs to a thread.
        """
        ok, why = self.authorised(authorization)
        if not ok:
            return 401, _error("auth", why)
        try:
            body = json.loads(raw or b"null")
            state = routing.parse_request(body, model=self.model_name)
            base = routing.based_on(body)
        except RecursionError:
            return 400, _error("input", "body: not valid JSON (nested too deeply)")
        except ValueError as exc:  # JSONDecodeError and RoutingInputError
            msg = str(exc) if isinstance(exc, RoutingInputError) else f"body: not valid JSON ({exc})"
            return 400, _error("input", msg)
        needed = state.versions()
        if inline:
            if any(v not in self.loaded or self.loaded[v].digest != d for v, d in needed.items()):
                return None
        else:
            error = self._load_for_admin(needed)
            if error is not None:
                return error
        try:
            saved = routing.commit(self.state_dir, state, floor=self.applied_floor, base=base)
        except StaleGeneration as exc:
            return 409, _error("generation", str(exc))
        except RoutingFileError as exc:
            return 503, _error("routing_file", str(exc))
        except OSError as exc:  # the state folder itself: full disk, permissions
            return 503, _error("routing_file", f"{self.path}: cannot be written ({exc.strerror or exc})")
        if any(str(v) in routing.load_refused(self.state_dir) for v in needed):
            routing.record_refused(self.state_dir, {}, accepted=needed)
        # inline: a generation committed meanwhile by another worker may need a model
        # loaded; the watcher thread does that, never the event loop
        self.refresh(allow_load=not inline)
        return 200, saved.to_json()

    def _load_for_admin(self, needed: dict[int, str]) -> tuple[int, dict] | None:
        """Check that every version exists, then fetch, verify and load it; an error answer or None."""
        for v, d in sorted(needed.items()):
            if v in self.loaded and self.loaded[v].digest == d:
                continue  # loaded, hence known and verified
            try:
                self.registry.version(self.model_name, v)
            except RegistryError as exc:
                if "does not exist" in exc.message:
                    return 400, _error("input", f"unknown version {v} of {self.model_name}")
                return 503, _error("registry", exc.message)
        try:
            for v, d in sorted(needed.items()):
                self.load_version(v, d)
        except DigestMismatch as exc:
            routing.record_refused(self.state_dir, {v: str(exc)})
            return 409, _error("digest", str(exc))
        except LoadError as exc:
            return 503, _error("load", str(exc))
        return None

    def applied_floor(self) -> int:
        """The highest generation this worker or any live one applies: a new one must be above it."""
        generations = [self.applied.generation if self.applied else 0]
        for beat in heartbeats.live(self.state_dir):
            g = beat.get("generation")
            if isinstance(g, int) and not isinstance(g, bool) and 0 <= g <= routing.MAX_GENERATION:
                generations.append(g)
        return max(generations)

    def routing_view(self) -> dict[str, Any]:
        """The persisted routing plus what every live worker applies and has loaded
        (RoutingFileError when ``routing.json`` cannot be read)."""
        state = routing.load(self.state_dir)
        view = state.to_json() if state else {"generation": 0, "model": self.model_name, "routes": {},
                                              "digests": {}, "shadow": None, "updated_at": None}
        view.update(self._workers_view())
        return view

    def handle_get_routing(self) -> tuple[int, dict]:
        """``GET /admin/routing``: 200 with :meth:`routing_view`, or 503 naming an unreadable file
        (with what the workers apply, which they keep serving)."""
        try:
            return 200, self.routing_view()
        except RoutingFileError as exc:
            body = _error("routing_file", f"{exc}; the workers keep serving the routing they applied, "
                                          "and an authenticated POST replaces the file")
            body.update(self._workers_view())
            return 503, body

    def _workers_view(self) -> dict[str, Any]:
        workers = heartbeats.live(self.state_dir)
        refused = routing.load_refused(self.state_dir)
        for beat in workers:
            extra = beat.pop("refused", {})
            refused.update({str(k): str(v) for k, v in extra.items()} if isinstance(extra, dict) else {})
        return {"workers": workers, "refused": refused}
