"""The rollout controller: one tick advances the persisted state by one step.

Measuring, judging and acting stay apart: a metrics provider measures
(:mod:`promotion.metrics`), the canary analysis judges (:mod:`promotion.analysis`), and
this module acts: it moves traffic through the traffic backend, moves registry aliases,
commits the environment file and writes signed records (:mod:`promotion.rollout.actions`).

Each tick is a flat run of early-returning steps, so tests call :func:`tick` repeatedly
and assert after each call, and a killed process that is run again resumes where the
saved state says it was. Traffic is always in a state the saved state explains: the state
is saved before any action that the next tick could not repeat safely.

The tick is total: whatever fails inside it (the endpoint, the metrics source, the
registry, git, a bug) is caught in :func:`tick` alone and becomes a state with a one-line
reason (see :func:`promotion.rollout.transitions.failed`), never an exception. The
policy is validated whole (:mod:`promotion.rollout.settings`) before any traffic moves.

Usage::

    ctx = Context.build(project, "prod")
    st = start(ctx)                    # plan (or resume) the rollout of environments/prod.yaml
    while not st.phase.completed:
        st = tick(ctx, st)
        time.sleep(ctx.settings.interval_s)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from promotion._internal.paths import refuse_tracked_state
from promotion.config import Environment, Policy, Project
from promotion.errors import ConfigError, Error, RolloutError
from promotion.rollout import actions, experiment, judgement, lifecycle, probation, resume
from promotion.rollout.phases import Phase
from promotion.rollout.settings import RolloutSettings
from promotion.rollout.state import EventLog, RolloutState, StateStore
from promotion.rollout.transitions import (
    apply, begin_rollback, enter, failed, one_line, reassert, reject, window_ready, window_since)

from promotion.traffic.base import TrafficBackend

if TYPE_CHECKING:  # pragma: no cover
    from promotion.metrics.base import MetricsProvider
    from promotion.records.signers.base import Signer
    from promotion.registry import Registry

TIMELINE_MAX = 600
# consecutive failed ticks after which `run` stops (resumably) instead of retrying
# (probation waits out metrics and routing failures itself, up to its max_s)
GIVE_UP_AFTER = {Phase.PENDING: 1, Phase.PROMOTING: 3, Phase.ROLLING_BACK: 3, Phase.PROBATION: 3}


@dataclass
class Context:
    """The parts a rollout acts through; built from config, or assembled by tests."""

    project: Project
    env: Environment
    policy: Policy
    registry: "Registry"
    traffic: TrafficBackend
    metrics: "MetricsProvider"
    store: StateStore
    events: EventLog
    clock: Callable[[], float] = time.time
    signer: "Signer | str | None" = None
    gates: Callable[["Context", RolloutState], list[dict]] | None = None  # default: the policy's gates
    gate_report: Any = None
    listeners: list[Callable[[RolloutState, dict], None]] = field(default_factory=list)
    settings: RolloutSettings | None = None  # the policy, validated; set by `start`
    judged: str | None = None  # the rollout whose gates ran in this process (never read from the state)
    judgement_read_at: float | None = None  # when an operator's abort was last looked for (clock)
    probation_checked: str | None = None  # the rollout whose probation start this process checked (never saved)

    @classmethod
    def build(cls, project: Project, env_name: str, *, events_file=None) -> "Context":
        env = project.environment(env_name)  # bad input fails before anything heavy loads
        policy = project.policy_for(env)
        if env.serving.kind == "gateway-api" and (policy.shadow or policy.strategy == "blue_green"):
            # a RequestMirror copy never meets the champion's answer: agreement cannot be judged
            at = ("rollout", "shadow") if policy.shadow else ("rollout", "strategy")
            raise ConfigError(f"{policy.display}:{policy.line_of(*at)} {'.'.join(at)}: a shadow phase cannot be "
                              f"judged with serving.kind gateway-api ({env.display}): mirrored copies never meet "
                              "the champion's answers; use serving.kind envoy or bentoml for a shadow phase")
        # before the registry, key or approvals in the state folder are opened
        refuse_tracked_state(project.root, RolloutError)

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
    """A new rollout from the environment file's desired state, or None if it already runs.

    "Already runs" means the alias names the desired version *and* a verified record put
    that version (and digest) in place; an alias moved there any other way is refused.
    The canary is compared with what the last record put in place (see
    :func:`promotion.rollout.authority.champion`); a file that names another model than
    the one the records say the environment serves is refused.
    """
    from promotion.rollout.authority import champion, recorded_state, serving

    env = ctx.env
    placed = serving(ctx.project, env)
    held = ctx.registry.alias(env.model.name, env.name)
    if held == env.model.version:
        recorded = recorded_state(ctx.project, env)
        if recorded.authorised:
            probation.check_finished(ctx, recorded.record)  # a probation lost with its job is said, not skipped
            return None
        raise RolloutError(f"the registry alias {env.name!r} already names v{held}, but no verified record puts "
                           f"v{held} ({env.model.digest}) in {env.name}: the alias was moved outside a rollout; "
                           f"point it back at the recorded version (or `promotion rollback {env.name}`), then run "
                           "the rollout again to judge it")
    version, digest = champion(ctx, placed, held)
    ctx.registry.version(env.model.name, env.model.version)  # fails closed if it does not exist
    return RolloutState(
        env=env.name, model=env.model.name, canary=env.model.version, canary_digest=env.model.digest,
        champion=version, champion_digest=digest,
        source_commit=actions.head_commit(ctx), policy_digest=ctx.policy.digest,
        started_at=ctx.clock(),
    )


def start(ctx: Context) -> RolloutState | None:
    """Resume the saved rollout of this environment, or plan a new one (None: nothing to do).

    The policy is validated whole first: an unusable one (ConfigError, exit 2) refuses a
    new rollout before any traffic moves, and rolls back a saved one that moved traffic.
    A saved state is checked against the records and judged by the gates again before
    anything acts on it (:mod:`promotion.rollout.resume`).
    """
    saved = ctx.store.load()
    in_flight = saved is not None and not saved.phase.completed
    if in_flight:
        resume.check_saved(ctx, saved)  # before anything, a rollback included, acts on it
    try:
        ctx.settings = ctx.settings or RolloutSettings.from_policy(ctx.policy)
    except ConfigError as exc:
        if not in_flight or saved.phase not in (Phase.SHADOW, Phase.PROGRESSING):
            raise
        ctx.emit(saved, "resumed", step=saved.step)
        return begin_rollback(ctx, saved, "the policy cannot be used: " + one_line(exc))
    if in_flight:
        if _superseded(ctx, saved):
            # the desired state changed under a running rollout: put traffic back first
            ctx.emit(saved, "superseded", desired=ctx.env.model.version)
            return begin_rollback(ctx, saved, f"desired version changed to {ctx.env.model.name} "
                                  f"v{ctx.env.model.version} during the rollout")
        ctx.emit(saved, "resumed", step=saved.step)
        if resume.needs_judging(ctx, saved):
            # the saved checks and approvers are a claim: the gates judge again, before traffic moves
            blocked = resume.judge_on_resume(ctx, saved)
            if blocked:
                return begin_rollback(ctx, saved, "gates block on resume: " + resume.blocked_reason(blocked))
        try:
            reassert(ctx, saved)
        except Exception as exc:  # noqa: BLE001 - as in a tick: the failure becomes the state
            # weights not applied: the next tick applies them again before judging anything
            failed(ctx, saved, exc)
        ctx.store.save(saved)
        return saved
    st = plan(ctx)
    if st is None:
        return None
    ctx.store.clear_stop()
    ctx.store.save(st)
    ctx.emit(st, "planned", champion=st.champion, canary=st.canary)
    return st


def _superseded(ctx: Context, saved: RolloutState) -> bool:
    """Whether the environment file names another model, version or digest than the saved
    rollout's canary, in a phase that has not yet recorded the canary as promoted."""
    desired = (ctx.env.model.name, ctx.env.model.version, ctx.env.model.digest)
    if (saved.model, saved.canary, saved.canary_digest) == desired:
        return False
    if saved.phase in (Phase.PENDING, Phase.SHADOW, Phase.PROGRESSING):
        return True
    # promoting: its gates judged the file's version, so one the file no longer names is
    # not finished on their word, unless its promote record is already written
    return saved.phase is Phase.PROMOTING and actions.recorded_decision(ctx, saved, "promote") is None


def tick(ctx: Context, st: RolloutState) -> RolloutState:
    """Advance ``st`` by one step and persist it; never raises (see the module docstring)."""
    if st.phase.completed:
        return st
    try:
        _advance(ctx, st)
        ctx.store.save(st)
    except Exception as exc:  # noqa: BLE001 - the one place a tick's failure becomes a state
        failed(ctx, st, exc)
        try:
            ctx.store.save(st)
        except Error as again:
            st.error = f"{st.error}; {again.message}"
        return st
    if st.failures:
        st.failures, st.failing_since, st.error = 0, None, None
        try:
            ctx.store.save(st)
        except Error as exc:
            st.failures, st.error = 1, exc.message
    return st


def _advance(ctx: Context, st: RolloutState) -> None:
    stop = ctx.store.stop_requested()
    if stop and st.phase not in (Phase.ROLLING_BACK, Phase.PROMOTING):
        st.phase, st.reason = Phase.ABORTED, f"stopped by an operator: {stop.get('reason', '')}"
        ctx.store.save(st)
        ctx.emit(st, "aborted", reason=st.reason)
        return
    if ctx.settings is None and st.phase in (Phase.PENDING, Phase.SHADOW, Phase.PROGRESSING):
        # a context that did not come through `start`; finishing a rollback needs no policy
        ctx.settings = RolloutSettings.from_policy(ctx.policy)
    if resume.needs_judging(ctx, st):
        # a state this process did not judge (a context that did not come through `start`)
        blocked = resume.judge(ctx, st)
        if blocked:
            begin_rollback(ctx, st, "gates block on resume: " + resume.blocked_reason(blocked))
            return
    if st.phase in (Phase.SHADOW, Phase.PROGRESSING, Phase.PROBATION) and _operator_abort(ctx, st):
        return
    handler = {
        Phase.PENDING: _pending,
        Phase.SHADOW: _shadow,
        Phase.PROGRESSING: _progressing,
        Phase.PROMOTING: _promoting,
        Phase.PROBATION: probation.tick,
        Phase.ROLLING_BACK: _rolling_back,
    }[st.phase]
    handler(ctx, st)


# -- phases -----------------------------------------------------------------------------


def _pending(ctx: Context, st: RolloutState) -> None:
    blocked = resume.judge(ctx, st)
    if blocked:
        reject(ctx, st, "gates block at rollout time: " + "; ".join(f"{c['name']}: {c.get('message', '')}" for c in blocked))
        return
    if not lifecycle.pre_rollout(ctx, st):
        return  # rejected: no user traffic moved
    if st.champion is None:
        # first deployment: nothing to compare with, so serve it and record that plainly
        st.reason = "initial deployment: no champion to compare with"
        st.weight, st.phase, st.routes_applied = 100.0, Phase.PROMOTING, False
        ctx.store.save(st)
        apply(ctx, st)
        ctx.emit(st, "bootstrap", version=st.canary)
        return
    shadow = ctx.settings.shadow
    if shadow:
        enter(ctx, st, Phase.SHADOW, -1, 0.0)
        ctx.emit(st, "shadow_started", percent=shadow.percent)
        return
    _enter_step(ctx, st, 0)


def _shadow(ctx: Context, st: RolloutState) -> None:
    shadow = ctx.settings.shadow
    if not window_ready(ctx, st, shadow.max_s):
        return
    snap = ctx.metrics.snapshot()
    window_since(st.step_baseline, snap)  # a snapshot older than the baseline measures nothing
    seen = actions.shadow_agreement(st.step_baseline, snap, st.canary)
    elapsed = ctx.clock() - st.step_started_at
    st.last_snapshot = snap.to_dict()
    judged = _shadow_disagreement(ctx, st, seen) if shadow.disagreement_tolerance is not None else None
    ctx.emit(st, "shadow_observed", version=st.canary, percent=shadow.percent, seconds=round(elapsed, 2), **seen)
    # no mirrored request is no data: it neither passes nor fails the shadow
    need = max(1, int(shadow.min_requests))
    row = {"step": "shadow", "weight": 0.0, "seconds": round(elapsed, 2), "shadow_percent": shadow.percent,
           "shadow_requests": seen["requests"], "shadow_agreement": seen["agreement"], "shadow_errors": seen["errors"]}
    if seen["requests"] >= need and seen["errors"] > 0:
        st.steps.append({**row, "verdict": "fail"})
        begin_rollback(ctx, st, f"shadow v{st.canary} failed {seen['errors']} of {seen['requests']} mirrored requests "
                       "(needs 0 errors)", evidence={"shadow": seen})
        return
    if judged is not None:
        row["shadow_disagreement"] = judged
        if judged["rejected"]:  # anytime-valid: it may stop before hold_s
            st.steps.append({**row, "verdict": "fail"})
            begin_rollback(ctx, st, f"shadow v{st.canary} disagreed with v{st.champion} on "
                           f"{judged['observed_rate']:.2%} of {judged['compared']} mirrored requests; the gates "
                           f"measured {judged['expected_rate']:.2%} between them (tolerance "
                           f"{judged['tolerance']:.2%}; e={judged['e_value']:.3g} >= {judged['threshold']:.3g})",
                           evidence={"shadow": {**seen, "disagreement": judged}})
            return
    if seen["requests"] >= need and elapsed >= shadow.hold_s:
        # with a measured rate the test decides; a min_agreement the policy names stays a floor
        floor = judged is None or bool(judged.get("cannot_decide")) or shadow.min_agreement_set
        if floor and seen["agreement"] < shadow.min_agreement:
            why = f"; {judged['cannot_decide']}, so min_agreement decides" if judged and judged.get("cannot_decide") else ""
            st.steps.append({**row, "verdict": "fail"})
            begin_rollback(ctx, st, f"shadow v{st.canary} agreed with v{st.champion} on {seen['agreement']:.1%} of "
                           f"{seen['requests']} mirrored requests (needs {shadow.min_agreement:.0%}){why}",
                           evidence={"shadow": {**seen, "min_agreement": shadow.min_agreement,
                                                **({"disagreement": judged} if judged else {})}})
            return
        st.steps.append({**row, "verdict": "pass"})
        ctx.emit(st, "step_passed", step=-1, weight=0.0, shadow=True)
        _enter_step(ctx, st, 0)
        return
    if elapsed > shadow.max_s and ctx.settings.inconclusive == "rollback":
        begin_rollback(ctx, st, f"shadow phase undecided after {elapsed:.0f}s: {seen['requests']} mirrored requests "
                       f"(needs {need}, held {shadow.hold_s:g}s)", evidence={"shadow": seen})


def _shadow_disagreement(ctx: Context, st: RolloutState, seen: dict) -> dict:
    """``rollout.shadow.disagreement``: the shadow's disagreements against the rate the
    gates measured between the two versions, at the shadow test's share of ``alpha``."""
    from promotion.analysis.score_shift import judge_disagreement

    analysis = ctx.settings.analysis
    alpha = analysis.shares.get("shadow_disagreement", analysis.alpha_each) if analysis is not None else 0.05
    judged = judge_disagreement(seen.get("disagreements", 0), seen.get("compared", 0),
                                actions.expected_disagreement(ctx, st), ctx.settings.shadow.disagreement_tolerance,
                                alpha)
    seen["disagreement"] = judged  # the live view and the shadow_observed event show it
    return judged


def _observe(ctx: Context, st: RolloutState, step):
    """Measure the step's window since the last tick and judge it: (verdict, reading)."""
    snap = ctx.metrics.snapshot()
    delta = window_since(st.last_snapshot, snap)
    step_window = window_since(st.step_baseline, snap)
    analysis = actions.analysis_for(ctx, st)
    verdict = analysis.observe(delta, champion=st.champion, canary=st.canary, canary_weight=st.weight,
                               min_requests=step.min_requests or None,
                               kpis=actions.kpi_readings(ctx, st, analysis.settings))
    st.last_snapshot = snap.to_dict()
    st.analysis = analysis.to_dict()
    reading = actions.reading(step_window, st, verdict)
    st.timeline.append({"t": round(ctx.clock() - st.started_at, 2), "weight": st.weight, **reading})
    del st.timeline[:-TIMELINE_MAX]
    ctx.emit(st, "observed", step=st.step, weight=st.weight, outcome=verdict.outcome.value, reasons=verdict.reasons, **reading)
    return verdict, reading


def _progressing(ctx: Context, st: RolloutState) -> None:
    steps = ctx.settings.steps
    step = steps[st.step]
    if not window_ready(ctx, st, step.max_s):
        return
    if step.pause:
        _paused(ctx, st, step)
        return
    if not lifecycle.during_step(ctx, st):
        return  # a failing hook rolled back; a hook that ran took time: measure on the next tick
    verdict, reading = _observe(ctx, st, step)
    # the step's clock began when its weights were applied and read back (never earlier)
    elapsed = ctx.clock() - st.step_started_at
    outcome = verdict.outcome.value
    if outcome == "fail":
        # the failed step belongs in the record's (and the summary's) table too
        st.steps.append({"step": st.step + 1, "weight": st.weight, "seconds": round(elapsed, 2), **reading, "verdict": "fail"})
        begin_rollback(ctx, st, "; ".join(verdict.reasons) or "canary analysis failed", evidence=verdict.evidence)
        return
    if experiment.ended(ctx, st, verdict, elapsed, reading):
        return  # max_duration_s without the KPI lift shown: the champion serves again
    canary_requests = reading.get("canary_requests", 0)
    if outcome == "inconclusive" or canary_requests < step.min_requests or elapsed < step.hold_s:
        if elapsed > step.max_s:
            why = "; ".join(verdict.reasons) if outcome == "inconclusive" else f"{canary_requests} canary requests (needs {step.min_requests})"
            if ctx.settings.inconclusive == "rollback":
                begin_rollback(ctx, st, f"step {st.step + 1} ({step.weight:g}%) undecided after {elapsed:.0f}s: {why}", evidence=verdict.evidence)
        return
    st.steps.append({"step": st.step + 1, "weight": st.weight, "seconds": round(elapsed, 2), **reading, "verdict": "pass",
                     "evidence": verdict.evidence})
    ctx.emit(st, "step_passed", step=st.step, weight=st.weight)
    _next_step(ctx, st)


def _next_step(ctx: Context, st: RolloutState) -> None:
    if st.step + 1 < len(ctx.settings.steps):
        _enter_step(ctx, st, st.step + 1)
    else:
        if st.weight < 100:  # an experiment promotes from its split: promoting applies 100%
            st.weight, st.routes_applied = 100.0, False
        st.phase = Phase.PROMOTING  # the last step's weights (100%) are what promoting serves


def _paused(ctx: Context, st: RolloutState, step) -> None:
    """Hold the weights until an operator resumes or aborts; keep analysing meanwhile, so a
    canary that fails while paused is still rolled back. Past ``max_s`` undecided, the
    policy's inconclusive rule applies, as to any step without a verdict."""
    now = ctx.clock()
    if st.paused_since is None:
        st.paused_since = now
        ctx.store.save(st)  # a restarted rollout keeps the pause's clock
        judgement.announce_pause(ctx, st, step.max_s)
        ctx.emit(st, "paused", step=st.step, weight=st.weight, max_s=step.max_s,
                 reason=f"holding {st.weight:g}% until `promotion resume {st.env}` (or abort), at most {step.max_s:g}s")
    row = {"step": st.step + 1, "weight": st.weight, "pause": True}
    if st.champion is not None and 0 < st.weight:
        verdict, reading = _observe(ctx, st, step)
        row.update(reading)
        if verdict.outcome.value == "fail":
            st.steps.append({**row, "seconds": round(now - st.paused_since, 2), "verdict": "fail"})
            st.paused_since = None
            begin_rollback(ctx, st, "while paused: " + ("; ".join(verdict.reasons) or "canary analysis failed"),
                           evidence=verdict.evidence)
            return
    decision = judgement.read(ctx, st)
    elapsed = now - st.paused_since
    if decision is not None:
        st.interventions.append(decision)
        st.steps.append({**row, "seconds": round(elapsed, 2), "verdict": "resumed" if decision["action"] == "resume"
                         else "aborted", "by": decision["actor"], "reason": decision["reason"]})
        st.paused_since = None
        if decision["action"] == "abort":
            begin_rollback(ctx, st, f"aborted by {decision['actor']}: {decision['reason']}")
            return
        ctx.emit(st, "resumed_by", step=st.step, actor=decision["actor"], reason=decision["reason"])
        _next_step(ctx, st)
        return
    if elapsed > step.max_s and ctx.settings.inconclusive == "rollback":
        st.steps.append({**row, "seconds": round(elapsed, 2), "verdict": "timed_out"})
        st.paused_since = None
        begin_rollback(ctx, st, f"paused at {st.weight:g}% for {elapsed:.0f}s with no decision (max_s {step.max_s:g})")


def _operator_abort(ctx: Context, st: RolloutState) -> bool:
    """Roll back on an operator's ``promotion abort`` (looked for every few seconds)."""
    now = ctx.clock()
    if ctx.judgement_read_at is not None and now - ctx.judgement_read_at < 2.0:
        return False
    ctx.judgement_read_at = now
    decision = judgement.read(ctx, st)
    if decision is None or decision["action"] != "abort":
        return False
    st.interventions.append(decision)
    st.paused_since = None
    begin_rollback(ctx, st, f"aborted by {decision['actor']}: {decision['reason']}")
    return True


def _promoting(ctx: Context, st: RolloutState) -> None:
    if not st.routes_applied:
        apply(ctx, st)
    if not lifecycle.post_promotion(ctx, st):
        return  # a failing hook rolled back
    actions.finish_promotion(ctx, st)
    st.phase = Phase.PROMOTED
    ctx.emit(st, "promoted", version=st.canary, previous=st.champion, record=st.record_path, commit=st.commit)
    probation.begin(ctx, st)  # with rollout.probation: still judged at 100%, the champion loaded


def _rolling_back(ctx: Context, st: RolloutState) -> None:
    if not st.routes_applied:
        # traffic first: the switch that failed when the rollback was decided
        decided = time.monotonic()
        apply(ctx, st)
        st.switch_seconds = st.switch_seconds if st.switch_seconds is not None else round(time.monotonic() - decided, 3)
        ctx.store.save(st)
    actions.finish_rollback(ctx, st)
    st.phase = Phase.ROLLED_BACK
    ctx.emit(st, "rolled_back", version=st.champion, rejected=st.canary, record=st.record_path, commit=st.commit, reason=st.reason)


def _enter_step(ctx: Context, st: RolloutState, index: int) -> None:
    enter(ctx, st, Phase.PROGRESSING, index, ctx.settings.steps[index].weight)
    ctx.emit(st, "step_started", step=index, weight=st.weight)


def run(ctx: Context, *, max_seconds: float | None = None, sleep: Callable[[float], None] = time.sleep) -> RolloutState | None:
    """Hold the environment's lock and tick until the rollout completes.

    A tick that fails in a phase without a deadline of its own (pending, promoting,
    rolling back) is retried a few times, then the run stops with RolloutError; the saved
    state resumes on the next run.
    """
    ctx.store.acquire()
    try:
        st = start(ctx)
        if st is None:
            return None
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not st.phase.completed:
            before = st.phase
            st = tick(ctx, st)
            if st.failures >= GIVE_UP_AFTER.get(st.phase, 10**9):
                raise RolloutError(f"{st.env} {st.phase.value}: {st.error} (run the rollout again to resume)")
            if st.phase is Phase.ROLLING_BACK and before is not Phase.ROLLING_BACK:
                continue  # finish the rollback without waiting
            if st.phase.completed:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise RolloutError(f"rollout of {st.env} still {st.phase.value} after {max_seconds:.0f}s; run again to resume")
            sleep(ctx.settings.interval_s if ctx.settings else 1.0)
        return st
    finally:
        ctx.store.release()
