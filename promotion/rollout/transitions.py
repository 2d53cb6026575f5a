"""The controller's transitions: apply a phase's weights, begin a step's window, roll back,
and turn a failed tick into a safe state.

Kept apart from :mod:`promotion.rollout.controller` (the tick and its phases) so each
transition says in one place what it saves before it acts. Two rules hold throughout:

- A step is judged only on traffic served at its own weight. Entering a step (or the
  shadow phase) clears its window and clock and marks its weights as not applied; only
  once the endpoint has applied them, and reads them back, do the window and the clock
  begin. Applying may fail and be retried on later ticks; the step still starts then.
- A failed tick leaves a state that is safe to resume: still undecided (nothing moved,
  or a measuring/acting failure within the step's deadline), or rolling back when the
  canary had traffic and the failure is not one that waiting can cure.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING

from promotion.errors import Error, MetricsError, ServiceError
from promotion.rollout.phases import Phase
from promotion.rollout.state import RolloutState

if TYPE_CHECKING:  # pragma: no cover
    from promotion.metrics.base import Snapshot, Window
    from promotion.rollout.controller import Context

APPLY_TIMEOUT_S = 60.0  # a worker may have to download and verify a model first
REASON_MAX = 500


# -- weights -----------------------------------------------------------------------------


def step_routes(st: RolloutState) -> dict[int, float]:
    """The split of the current step; the champion stays loaded at weight 0 after the last
    step, for an instant rollback."""
    return {st.champion: 100.0 - st.weight, st.canary: st.weight}


def desired_routes(ctx: "Context", st: RolloutState) -> tuple[dict[int, float], dict | None] | None:
    """What the endpoint must serve in ``st``'s phase (routes, shadow), or None for nothing."""
    if st.phase is Phase.PROGRESSING:
        return step_routes(st), None
    if st.phase is Phase.SHADOW:
        shadow = ctx.settings.shadow
        return {st.champion: 100.0}, {"version": st.canary, "percent": shadow.percent, "digest": st.canary_digest}
    if st.phase in (Phase.PROMOTING, Phase.PROBATION):  # probation: the old champion stays loaded
        return ({st.canary: 100.0} if st.champion is None else {st.champion: 0.0, st.canary: 100.0}), None
    if st.phase is Phase.ROLLING_BACK and st.champion is not None:
        return {st.champion: 100.0}, None
    return None


def set_routes(ctx: "Context", st: RolloutState, routes: dict[int, float], shadow: dict | None = None) -> float:
    """Prepare every version ``routes`` (and the shadow) name, set the weights, and wait
    until the data plane is seen to apply them; seconds it took."""
    from promotion.traffic.base import Mirror

    for v in routes:
        ctx.traffic.prepare(v, st.canary_digest if v == st.canary else st.champion_digest)
    mirror = None
    if shadow:
        ctx.traffic.prepare(int(shadow["version"]), shadow["digest"])
        mirror = Mirror(int(shadow["version"]), float(shadow["percent"]))
    applied = ctx.traffic.set_weights(routes, mirror, canary=st.canary)
    st.generation = applied.generation
    seconds = ctx.traffic.verify(applied, max(APPLY_TIMEOUT_S, ctx.traffic.apply_timeout_s))
    ctx.emit(st, "routing", routes={str(k): v for k, v in routes.items()}, shadow=shadow, generation=applied.generation,
             applied_s=round(seconds, 3))
    return seconds


def live_matches(ctx: "Context", routes: dict[int, float], shadow_version: int | None) -> bool:
    """Whether the data plane serves ``routes`` (and that shadow) now; False if unknown."""
    try:
        live = ctx.traffic.current()
        served = live.serving()
        live_shadow = live.mirror.version if live.mirror is not None else None
    except (Error, TypeError, ValueError, AttributeError):
        return False
    return served == {v: float(w) for v, w in routes.items() if w > 0} and live_shadow == shadow_version


def apply(ctx: "Context", st: RolloutState) -> float:
    """Make the endpoint serve what ``st``'s phase asks for, and read it back.

    ServiceError when the endpoint refuses, times out, or reads back anything else (an
    operator's change that came in between); ``st.routes_applied`` stays False then.
    """
    want = desired_routes(ctx, st)
    if want is None:
        st.routes_applied = True
        return 0.0
    routes, shadow = want
    st.routes_applied = False
    seconds = set_routes(ctx, st, routes, shadow)
    if not live_matches(ctx, routes, shadow["version"] if shadow else None):
        raise ServiceError("the endpoint does not read back the routing just applied ("
                           + ", ".join(f"v{v}={w:g}%" for v, w in routes.items()) + ")")
    st.routes_applied = True
    return seconds


def enter(ctx: "Context", st: RolloutState, phase: Phase, step: int, weight: float) -> None:
    """Enter a phase that moves traffic: intent saved first, window and clock cleared, then
    the weights applied and the window begun (a failure leaves both to later ticks)."""
    st.phase, st.step, st.weight = phase, step, float(weight)
    st.routes_applied = False
    st.step_started_at = st.step_baseline = st.last_snapshot = st.window_after = None
    ctx.store.save(st)  # intent before action: a crash from here re-applies these weights
    apply(ctx, st)
    begin_window(ctx, st)


# -- the step's window ---------------------------------------------------------------------


def begin_window(ctx: "Context", st: RolloutState, *, keep_step: bool = False) -> None:
    """Start measuring from now: the analysis window always, the step's clock and counts
    unless ``keep_step`` (a resume that found traffic as the saved step left it).

    A provider may answer with counts gathered before the routing change that was just
    applied (Prometheus returns its last scrape, up to a scrape interval old). Those
    counts hold traffic served at the previous weights, and measuring from them would
    skew the comparison (a false sample-ratio mismatch). So the window starts only from
    a snapshot taken at or after the provider's ``now()`` of this moment: if the first
    one is older, ``window_after`` holds that time and later ticks wait for it.
    """
    if keep_step and st.step_baseline is not None and st.step_started_at is not None:
        # traffic is as the saved step left it: older counts are this step's too
        st.last_snapshot = ctx.metrics.snapshot().to_dict()
        st.window_after = None
        return
    mark = ctx.metrics.now()
    snap = ctx.metrics.snapshot()
    st.step_started_at = ctx.clock()
    if snap.taken_at < mark:
        st.window_after, st.last_snapshot, st.step_baseline = mark, None, None
        ctx.emit(st, "window_pending", behind_s=round(mark - snap.taken_at, 3))
        return
    st.window_after = None
    st.last_snapshot = st.step_baseline = snap.to_dict()


def window_ready(ctx: "Context", st: RolloutState, max_s: float) -> bool:
    """Whether the step is applied and its window has begun; if not, work towards both.

    Waiting is not a verdict: past ``max_s`` it is undecided, like a step without data.
    """
    if not st.routes_applied:
        # the weights never reached the endpoint (or were not read back): apply them now,
        # and only then does this step's window and clock begin
        apply(ctx, st)
        begin_window(ctx, st)
        ctx.emit(st, "step_restarted", step=st.step, weight=st.weight)
        return False
    if st.window_after is None and st.step_baseline is None:
        begin_window(ctx, st)  # applied, but the first snapshot failed
        return False
    if st.window_after is None:
        return True
    snap = ctx.metrics.snapshot()
    if snap.taken_at >= st.window_after:
        st.last_snapshot = st.step_baseline = snap.to_dict()
        ctx.emit(st, "window_started", waited_s=round(ctx.clock() - (st.step_started_at or ctx.clock()), 3))
        st.window_after = None
        return False  # the window begins here; the next tick measures it
    elapsed = ctx.clock() - (st.step_started_at or ctx.clock())
    if elapsed > max_s and ctx.settings.inconclusive == "rollback":
        begin_rollback(ctx, st, f"no metrics from after the routing change within {elapsed:.0f}s: the provider's "
                       f"latest counts are {st.window_after - snap.taken_at:.1f}s older than the change",
                       evidence={"metrics_taken_at": snap.taken_at, "window_after": st.window_after})
    return False


def window_since(before: dict, snap: "Snapshot") -> "Window":
    """Counters served between the saved snapshot ``before`` and ``snap``.

    A source that answers with an older snapshot than the last one (a Prometheus replica
    behind the other, a clock stepped back) cannot be measured from: MetricsError, which
    leaves the step undecided until its deadline.
    """
    from promotion.metrics.base import Snapshot, window

    start = Snapshot.from_dict(before)
    if snap.taken_at < start.taken_at:
        raise MetricsError(f"the metrics source answered with counts from {snap.taken_at:.3f}, older than the "
                           f"previous ones ({start.taken_at:.3f}); waiting for newer counts")
    return window(start, snap)


def reassert(ctx: "Context", st: RolloutState) -> None:
    """After a crash, make traffic match the saved state again, and measure afresh:
    what was served between the last save and the crash is left out of the analysis.

    The step keeps its clock (hold) and its request count when the endpoint still serves
    what the saved step set and the saved state says it was applied; otherwise (the crash
    came between saving a new step and applying it) the step starts over. Without that,
    a rollout resumed often enough would never complete a hold.
    """
    want = desired_routes(ctx, st)
    if want is None:
        return
    routes, shadow = want
    kept = st.routes_applied and live_matches(ctx, routes, shadow["version"] if shadow else None)
    apply(ctx, st)
    if st.phase in (Phase.PROGRESSING, Phase.SHADOW):
        begin_window(ctx, st, keep_step=kept)


# -- decisions -----------------------------------------------------------------------------


def begin_rollback(ctx: "Context", st: RolloutState, reason: str, evidence: dict | None = None) -> RolloutState:
    """Traffic back to the champion first, at once; the rest happens on the next tick.

    The decision is saved before traffic moves. If the switch fails, the state still
    says ROLLING_BACK with the weights not applied, and the next tick switches first.
    """
    st.reason, st.evidence = reason, evidence
    st.phase = Phase.ROLLING_BACK
    st.routes_applied = st.champion is None
    ctx.store.save(st)  # a crash from here on resumes the rollback, never the canary
    ctx.emit(st, "rollback_started", reason=reason)
    if st.champion is not None:
        decided = time.monotonic()
        try:
            apply(ctx, st)
        except Error as exc:
            ctx.emit(st, "rollback_blocked", error=exc.diagnostics())
        else:
            st.switch_seconds = round(time.monotonic() - decided, 3)
    st.weight = 0.0
    ctx.store.save(st)
    return st


def reject(ctx: "Context", st: RolloutState, reason: str) -> None:
    """The gates block before any traffic moved: record a rejection, revert the file."""
    st.reason, st.rollback_action = reason, "reject"
    st.phase = Phase.ROLLING_BACK
    st.routes_applied = True  # nothing moved, so nothing to put back
    ctx.emit(st, "rejected", reason=reason)


def one_line(exc: BaseException) -> str:
    """A failure as one line for a person: our errors say it themselves; anything else is
    named by its type, as an internal error of the controller."""
    if isinstance(exc, Error):
        text = "; ".join(line.strip() for line in exc.diagnostics().splitlines() if line.strip())
    else:
        text = f"internal error ({type(exc).__name__}: {exc})"
    text = " ".join(text.split())
    return text if len(text) <= REASON_MAX else text[:REASON_MAX - 3] + "..."


def failed(ctx: "Context", st: RolloutState, exc: Exception) -> None:
    """Turn a tick's failure into a safe state with a reason; never raises.

    - no traffic moved yet (pending), or promoting / rolling back: stays in its phase,
      undecided, with the reason; running again resumes it;
    - shadow or a step: a failure to measure or to move traffic (MetricsError,
      ServiceError) leaves the step undecided until its deadline, then rolls back; any
      other failure cannot be waited out, so the canary is rolled back at once.
    """
    reason = one_line(exc)
    now = ctx.clock()
    st.failures += 1
    st.failing_since = st.failing_since if st.failing_since is not None else now
    st.error = reason
    fields = {"error": reason, "kind": type(exc).__name__}
    if not isinstance(exc, Error):
        frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        fields["where"] = f"{frame[0].filename}:{frame[0].lineno}" if frame else None
    _quietly(lambda: ctx.emit(st, "cannot_decide", **fields))
    if st.phase not in (Phase.SHADOW, Phase.PROGRESSING):
        return
    settings = ctx.settings
    # without usable settings there is no deadline to wait for: not a failure to wait out
    transient = isinstance(exc, (MetricsError, ServiceError)) and settings is not None
    elapsed = now - (st.step_started_at or st.failing_since)
    limit = 0.0
    if transient:
        limit = settings.shadow.max_s if st.phase is Phase.SHADOW and settings.shadow else \
            settings.steps[min(max(st.step, 0), len(settings.steps) - 1)].max_s
    if transient and elapsed <= limit:
        return
    why = (f"cannot measure the canary for {elapsed:.0f}s: {reason}" if transient
           else f"cannot judge the canary: {reason}")
    _quietly(lambda: begin_rollback(ctx, st, why))


def _quietly(action) -> None:
    """Run a best-effort part of failure handling; its own failure is already the state."""
    try:
        action()
    except Exception:  # noqa: BLE001 - the failure being handled is what the state reports
        pass
