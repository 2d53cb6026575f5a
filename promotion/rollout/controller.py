"""The rollout controller: one tick advances the persisted state by one step.

Measuring, judging and acting stay apart: a metrics provider measures
(:mod:`promotion.metrics`), the canary analysis judges (:mod:`promotion.analysis`), and
this module acts: it moves traffic through the traffic backend, moves registry aliases,
commits the environment file and writes signed records (:mod:`promotion.rollout.actions`).

Each tick is a flat run of early-returning steps, so tests call :func:`tick` repeatedly
and assert after each call, and a killed process that is run again resumes where the
saved state says it was. Traffic is always in a state the saved state explains: the state
is saved before any action that the next tick could not repeat safely.

Usage::

    ctx = Context.build(project, "prod")
    st = start(ctx)                    # plan (or resume) the rollout of environments/prod.yaml
    while not st.phase.completed:
        st = tick(ctx, st)
        time.sleep(ctx.policy.interval_s)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from promotion.config import Environment, Policy, Project
from promotion.errors import Error, MetricsError, RolloutError, ServiceError
from promotion.rollout import actions
from promotion.rollout.phases import Phase
from promotion.rollout.schedule import shadow_phase, shadow_phase_defaults, steps_for
from promotion.rollout.state import EventLog, RolloutState, StateStore

APPLY_TIMEOUT_S = 60.0  # a worker may have to download and verify a model first
TIMELINE_MAX = 600


@dataclass
class Context:
    """The parts a rollout acts through; built from config, or assembled by tests."""

    project: Project
    env: Environment
    policy: Policy
    registry: Any
    traffic: Any
    metrics: Any
    store: StateStore
    events: EventLog
    clock: Callable[[], float] = time.time
    signer: Any = None
    gates: Callable[["Context", RolloutState], list[dict]] | None = None  # default: the policy's gates
    gate_report: Any = None
    listeners: list[Callable[[RolloutState, dict], None]] = field(default_factory=list)

    @classmethod
    def build(cls, project: Project, env_name: str, *, events_file=None) -> "Context":
        env = project.environment(env_name)  # bad input fails before anything heavy loads
        policy = project.policy_for(env)

        from promotion.metrics import provider_for
        from promotion.registry import Registry
        from promotion.traffic import backend_for
        store = StateStore(project.root, env.name)
        return cls(
            project=project, env=env, policy=policy,
            registry=Registry.for_root(project.root, env.tracking_uri),
            traffic=backend_for(env), metrics=provider_for(env), store=store,
            events=EventLog(store.events_path, events_file),
        )

    def emit(self, st: RolloutState, event: str, **fields) -> None:
        entry = self.events.emit(event, env=st.env, rollout=st.id, phase=st.phase.value, **fields)
        for listener in self.listeners:
            listener(st, entry)


def plan(ctx: Context) -> RolloutState | None:
    """A new rollout from the environment file's desired state, or None if it already runs."""
    env = ctx.env
    champion = ctx.registry.alias(env.model.name, env.name)
    if champion == env.model.version:
        return None
    champion_digest = None
    if champion is not None:
        champion_digest = ctx.registry.version(env.model.name, champion).digest
    ctx.registry.version(env.model.name, env.model.version)  # fails closed if it does not exist
    return RolloutState(
        env=env.name, model=env.model.name, canary=env.model.version, canary_digest=env.model.digest,
        champion=champion, champion_digest=champion_digest,
        source_commit=actions.head_commit(ctx), policy_digest=ctx.policy.digest,
        started_at=ctx.clock(),
    )


def start(ctx: Context) -> RolloutState | None:
    """Resume the saved rollout of this environment, or plan a new one (None: nothing to do)."""
    saved = ctx.store.load()
    if saved and not saved.phase.completed:
        if (saved.canary, saved.canary_digest) != (ctx.env.model.version, ctx.env.model.digest) and saved.phase in (
            Phase.PENDING, Phase.SHADOW, Phase.PROGRESSING,
        ):
            # the desired state changed under a running rollout: put traffic back first
            ctx.emit(saved, "superseded", desired=ctx.env.model.version)
            return _begin_rollback(ctx, saved, f"desired version changed to v{ctx.env.model.version} during the rollout")
        ctx.emit(saved, "resumed", step=saved.step)
        _reassert(ctx, saved)
        ctx.store.save(saved)
        return saved
    st = plan(ctx)
    if st is None:
        return None
    ctx.store.clear_stop()
    ctx.store.save(st)
    ctx.emit(st, "planned", champion=st.champion, canary=st.canary)
    return st


def tick(ctx: Context, st: RolloutState) -> RolloutState:
    """Advance ``st`` by one step and persist it."""
    if st.phase.completed:
        return st
    stop = ctx.store.stop_requested()
    if stop and st.phase not in (Phase.ROLLING_BACK, Phase.PROMOTING):
        st.phase, st.reason = Phase.ABORTED, f"stopped by an operator: {stop.get('reason', '')}"
        ctx.store.save(st)
        ctx.emit(st, "aborted", reason=st.reason)
        return st
    handler = {
        Phase.PENDING: _pending,
        Phase.SHADOW: _shadow,
        Phase.PROGRESSING: _progressing,
        Phase.PROMOTING: _promoting,
        Phase.ROLLING_BACK: _rolling_back,
    }[st.phase]
    try:
        handler(ctx, st)
    except (MetricsError, ServiceError) as exc:
        # measuring or acting failed: no verdict is possible, so the canary cannot advance
        return _cannot_decide(ctx, st, exc)
    ctx.store.save(st)
    return st


# -- phases -----------------------------------------------------------------------------


def _pending(ctx: Context, st: RolloutState) -> None:
    checks = (ctx.gates or actions.pre_rollout_checks)(ctx, st)
    st.checks = checks
    st.approvers = actions.approvers_from(ctx)
    blocked = [c for c in checks if c.get("verdict") != "pass"]
    if blocked:
        _reject(ctx, st, "gates block at rollout time: " + "; ".join(f"{c['name']}: {c.get('message', '')}" for c in blocked))
        return
    if st.champion is None:
        # first deployment: nothing to compare with, so serve it and record that plainly
        st.weight, st.phase = 100.0, Phase.PROMOTING
        st.reason = "initial deployment: no champion to compare with"
        ctx.store.save(st)
        _set_routes(ctx, st, {st.canary: 100.0})
        ctx.emit(st, "bootstrap", version=st.canary)
        return
    shadow = shadow_phase(ctx.policy)
    if shadow:
        st.phase, st.step = Phase.SHADOW, -1
        ctx.store.save(st)
        _set_routes(ctx, st, {st.champion: 100.0}, shadow={"version": st.canary, "percent": shadow["percent"], "digest": st.canary_digest})
        _begin_window(ctx, st)
        ctx.emit(st, "shadow_started", percent=shadow["percent"])
        return
    _enter_step(ctx, st, 0)


def _shadow(ctx: Context, st: RolloutState) -> None:
    shadow = shadow_phase(ctx.policy) or shadow_phase_defaults()
    if not _window_ready(ctx, st, shadow["max_s"]):
        return
    snap = ctx.metrics.snapshot()
    seen = actions.shadow_agreement(st.step_baseline, snap, st.canary)
    elapsed = ctx.clock() - (st.step_started_at or ctx.clock())
    st.last_snapshot = snap.to_dict()
    ctx.emit(st, "shadow_observed", version=st.canary, percent=shadow["percent"], seconds=round(elapsed, 2), **seen)
    # no mirrored request is no data: it neither passes nor fails the shadow
    need = max(1, int(shadow["min_requests"]))
    row = {"step": "shadow", "weight": 0.0, "seconds": round(elapsed, 2), "shadow_percent": shadow["percent"],
           "shadow_requests": seen["requests"], "shadow_agreement": seen["agreement"], "shadow_errors": seen["errors"]}
    if seen["requests"] >= need and seen["errors"] > 0:
        st.steps.append({**row, "verdict": "fail"})
        _begin_rollback(ctx, st, f"shadow v{st.canary} failed {seen['errors']} of {seen['requests']} mirrored requests "
                        "(needs 0 errors)", evidence={"shadow": seen})
        return
    if seen["requests"] >= need and elapsed >= shadow["hold_s"]:
        if seen["agreement"] < shadow["min_agreement"]:
            st.steps.append({**row, "verdict": "fail"})
            _begin_rollback(ctx, st, f"shadow v{st.canary} agreed with v{st.champion} on {seen['agreement']:.1%} of "
                            f"{seen['requests']} mirrored requests (needs {shadow['min_agreement']:.0%})",
                            evidence={"shadow": {**seen, "min_agreement": shadow["min_agreement"]}})
            return
        st.steps.append({**row, "verdict": "pass"})
        ctx.emit(st, "step_passed", step=-1, weight=0.0, shadow=True)
        _enter_step(ctx, st, 0)
        return
    if elapsed > shadow["max_s"] and ctx.policy.inconclusive == "rollback":
        _begin_rollback(ctx, st, f"shadow phase undecided after {elapsed:.0f}s: {seen['requests']} mirrored requests "
                        f"(needs {need}, held {shadow['hold_s']:g}s)", evidence={"shadow": seen})


def _progressing(ctx: Context, st: RolloutState) -> None:
    from promotion.metrics.base import Snapshot, window

    steps = steps_for(ctx.policy)
    step = steps[st.step]
    if not _window_ready(ctx, st, step.max_s):
        return
    snap = ctx.metrics.snapshot()
    delta = window(Snapshot.from_dict(st.last_snapshot), snap)
    st.last_snapshot = snap.to_dict()
    analysis = actions.analysis_for(ctx, st)
    verdict = analysis.observe(delta, champion=st.champion, canary=st.canary, canary_weight=st.weight,
                               min_requests=step.min_requests or None)
    st.analysis = analysis.to_dict()
    step_window = window(Snapshot.from_dict(st.step_baseline), snap)
    reading = actions.reading(step_window, st, verdict)
    st.timeline.append({"t": round(ctx.clock() - st.started_at, 2), "weight": st.weight, **reading})
    del st.timeline[:-TIMELINE_MAX]
    ctx.emit(st, "observed", step=st.step, weight=st.weight, outcome=verdict.outcome.value, reasons=verdict.reasons, **reading)
    elapsed = ctx.clock() - (st.step_started_at or ctx.clock())
    outcome = verdict.outcome.value
    if outcome == "fail":
        # the failed step belongs in the record's (and the summary's) table too
        st.steps.append({"step": st.step + 1, "weight": st.weight, "seconds": round(elapsed, 2), **reading, "verdict": "fail"})
        _begin_rollback(ctx, st, "; ".join(verdict.reasons) or "canary analysis failed", evidence=verdict.evidence)
        return
    canary_requests = reading.get("canary_requests", 0)
    if outcome == "inconclusive" or canary_requests < step.min_requests or elapsed < step.hold_s:
        if elapsed > step.max_s:
            why = "; ".join(verdict.reasons) if outcome == "inconclusive" else f"{canary_requests} canary requests (needs {step.min_requests})"
            if ctx.policy.inconclusive == "rollback":
                _begin_rollback(ctx, st, f"step {st.step + 1} ({step.weight:g}%) undecided after {elapsed:.0f}s: {why}", evidence=verdict.evidence)
        return
    st.steps.append({"step": st.step + 1, "weight": st.weight, "seconds": round(elapsed, 2), **reading, "verdict": "pass",
                     "evidence": verdict.evidence})
    ctx.emit(st, "step_passed", step=st.step, weight=st.weight)
    if st.step + 1 < len(steps):
        _enter_step(ctx, st, st.step + 1)
    else:
        st.phase = Phase.PROMOTING


def _promoting(ctx: Context, st: RolloutState) -> None:
    actions.finish_promotion(ctx, st)
    st.phase = Phase.PROMOTED
    ctx.emit(st, "promoted", version=st.canary, previous=st.champion, record=st.record_path, commit=st.commit)


def _rolling_back(ctx: Context, st: RolloutState) -> None:
    actions.finish_rollback(ctx, st)
    st.phase = Phase.ROLLED_BACK
    ctx.emit(st, "rolled_back", version=st.champion, rejected=st.canary, record=st.record_path, commit=st.commit, reason=st.reason)


# -- transitions ------------------------------------------------------------------------


def _set_routes(ctx: Context, st: RolloutState, routes: dict[int, float], shadow: dict | None = None) -> float:
    digests = {v: (st.canary_digest if v == st.canary else st.champion_digest) for v in routes}
    routing = ctx.traffic.set_routing(routes, digests, shadow)
    st.generation = routing.generation
    seconds = ctx.traffic.wait_applied(routing.generation, APPLY_TIMEOUT_S)
    ctx.emit(st, "routing", routes={str(k): v for k, v in routes.items()}, shadow=shadow, generation=routing.generation,
             applied_s=round(seconds, 3))
    return seconds


def _begin_window(ctx: Context, st: RolloutState, *, keep_step: bool = False) -> None:
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


def _window_ready(ctx: Context, st: RolloutState, max_s: float) -> bool:
    """Whether the step's window has begun; if not, try to begin it with a fresh snapshot.

    Waiting is not a verdict: past ``max_s`` it is undecided, like a step without data.
    """
    if st.window_after is None:
        return True
    snap = ctx.metrics.snapshot()
    if snap.taken_at >= st.window_after:
        st.last_snapshot = st.step_baseline = snap.to_dict()
        ctx.emit(st, "window_started", waited_s=round(ctx.clock() - (st.step_started_at or ctx.clock()), 3))
        st.window_after = None
        return False  # the window begins here; the next tick measures it
    elapsed = ctx.clock() - (st.step_started_at or ctx.clock())
    if elapsed > max_s and ctx.policy.inconclusive == "rollback":
        _begin_rollback(ctx, st, f"no metrics from after the routing change within {elapsed:.0f}s: the provider's "
                        f"latest counts are {st.window_after - snap.taken_at:.1f}s older than the change",
                        evidence={"metrics_taken_at": snap.taken_at, "window_after": st.window_after})
    return False


def _live_matches(ctx: Context, routes: dict[int, float], shadow_version: int | None) -> bool:
    """Whether the endpoint already serves ``routes`` (and that shadow); False if unknown."""
    try:
        live = ctx.traffic.routing()
    except Error:
        return False
    served = {int(k): float(v) for k, v in live.routes.items() if float(v) > 0}
    live_shadow = (live.shadow or {}).get("version")
    return served == {v: float(w) for v, w in routes.items() if w > 0} and (
        (int(live_shadow) if live_shadow is not None else None) == shadow_version)


def _step_routes(st: RolloutState) -> dict[int, float]:
    # the champion stays loaded at weight 0 after the last step, for an instant rollback
    return {st.champion: 100.0 - st.weight, st.canary: st.weight}


def _enter_step(ctx: Context, st: RolloutState, index: int) -> None:
    st.phase, st.step, st.weight = Phase.PROGRESSING, index, float(steps_for(ctx.policy)[index].weight)
    ctx.store.save(st)  # intent before action: a crash from here re-applies this step's weights
    _set_routes(ctx, st, _step_routes(st))
    _begin_window(ctx, st)
    ctx.emit(st, "step_started", step=index, weight=st.weight)


def _reassert(ctx: Context, st: RolloutState) -> None:
    """After a crash, make traffic match the saved state again, and measure afresh:
    what was served between the last save and the crash is left out of the analysis.

    The step keeps its clock (hold) and its request count when the endpoint still serves
    what the saved step set; otherwise (the crash came between saving a new step and
    applying it) the step starts over. Without that, a rollout resumed often enough
    would never complete a hold.
    """
    if st.phase is Phase.PROGRESSING:
        routes = _step_routes(st)
        kept = _live_matches(ctx, routes, None)
        _set_routes(ctx, st, routes)
        _begin_window(ctx, st, keep_step=kept)
    elif st.phase is Phase.SHADOW:
        shadow = shadow_phase(ctx.policy) or shadow_phase_defaults()
        kept = _live_matches(ctx, {st.champion: 100.0}, st.canary)
        _set_routes(ctx, st, {st.champion: 100.0},
                    shadow={"version": st.canary, "percent": shadow["percent"], "digest": st.canary_digest})
        _begin_window(ctx, st, keep_step=kept)
    elif st.phase is Phase.ROLLING_BACK and st.champion is not None:
        _set_routes(ctx, st, {st.champion: 100.0})
    elif st.phase is Phase.PROMOTING:
        _set_routes(ctx, st, {st.canary: 100.0} if st.champion is None else {st.champion: 0.0, st.canary: 100.0})


def _begin_rollback(ctx: Context, st: RolloutState, reason: str, evidence: dict | None = None) -> RolloutState:
    """Traffic back to the champion first, at once; the rest happens on the next tick."""
    st.reason, st.evidence = reason, evidence
    st.phase = Phase.ROLLING_BACK
    ctx.store.save(st)  # a crash from here on resumes the rollback, never the canary
    ctx.emit(st, "rollback_started", reason=reason)
    if st.champion is not None:
        decided = time.monotonic()
        _set_routes(ctx, st, {st.champion: 100.0})
        st.switch_seconds = round(time.monotonic() - decided, 3)
    st.weight = 0.0
    ctx.store.save(st)
    return st


def _reject(ctx: Context, st: RolloutState, reason: str) -> None:
    st.reason, st.rollback_action = reason, "reject"
    st.phase = Phase.ROLLING_BACK
    ctx.emit(st, "rejected", reason=reason)


def _cannot_decide(ctx: Context, st: RolloutState, exc: Error) -> RolloutState:
    ctx.emit(st, "cannot_decide", error=exc.message)
    if st.phase in (Phase.SHADOW, Phase.PROGRESSING):
        elapsed = ctx.clock() - (st.step_started_at or st.started_at)
        shadow = shadow_phase(ctx.policy) or shadow_phase_defaults()
        limit = steps_for(ctx.policy)[st.step].max_s if st.step >= 0 else shadow["max_s"]
        if elapsed > limit:
            try:
                return _begin_rollback(ctx, st, f"cannot measure the canary for {elapsed:.0f}s: {exc.message}")
            except Error as again:
                ctx.emit(st, "rollback_blocked", error=again.message)
    ctx.store.save(st)
    if st.phase in (Phase.PROMOTING, Phase.ROLLING_BACK, Phase.PENDING):
        raise RolloutError(f"{st.phase.value}: {exc.message} (run the rollout again to resume)") from exc
    return st


def run(ctx: Context, *, max_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep) -> RolloutState | None:
    """Hold the environment's lock and tick until the rollout completes."""
    ctx.store.acquire()
    try:
        st = start(ctx)
        if st is None:
            return None
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not st.phase.completed:
            before = st.phase
            st = tick(ctx, st)
            if st.phase is Phase.ROLLING_BACK and before is not Phase.ROLLING_BACK:
                continue  # finish the rollback without waiting
            if st.phase.completed:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RolloutError(f"rollout of {st.env} still {st.phase.value} after {max_seconds:.0f}s; run again to resume")
            sleep(ctx.policy.interval_s)
        return st
    finally:
        ctx.store.release()
