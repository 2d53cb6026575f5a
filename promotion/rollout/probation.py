"""Probation: after 100 %, the promoted version is still judged against the champion it replaced.

A version that passes its canary is promoted (alias moved, promote record committed).
With ``rollout.probation`` in the policy the rollout does not end there:

- the previous champion stays loaded in the traffic backend at weight 0 (the phase's
  routes are ``{champion: 0, canary: 100}``), so a rollback is one routing change;
- every tick the same :class:`~promotion.analysis.judge.CanaryAnalysis` that judged the
  canary observes the next window at 100 %. Its label signal compares the promoted
  version's labelled outcomes (since the canary began, including those served during
  probation) with the champion's, which are frozen at promotion except for labels that
  arrive late for requests the champion served before it: the champion's *pre-promotion
  baseline*. Any other signal the analysis judges at 100 % (the SLOs, and whatever keeps
  a champion baseline, such as business KPIs) applies the same way;
- a FAIL rolls back at once: traffic to the champion, alias back, environment file
  reverted, and a signed ``rollback`` record whose reason starts with ``probation`` and
  whose evidence holds the probation (``evidence.probation``: since, seconds, the
  promote record it undoes, the baseline at promotion, labels seen in probation);
- after ``duration_s`` without a FAIL (and, with ``min_labels``, once the promoted
  version got that many labelled requests during probation) a signed
  ``probation_passed`` record names the version, and the rollout ends PROMOTED. The
  next environment's ``promotion_path.requires_probation`` asks for that record.

Why the same analysis, not a new test: its e-processes are anytime-valid, so watching
them for longer keeps the false-rollback rate of canary and probation together at most
``alpha`` (Ville's inequality); a fresh test for probation would need a share of its own.

Resuming: the state (phase ``probation``, ``st.probation``) is saved every tick; a job
that ends mid-probation leaves it, and the next ``promotion rollout`` continues the same
probation: its routes are asserted again, its clock keeps running (the version served
100 % meanwhile) and the window since the last saved counters is judged, labels that
came in meanwhile included. Once per process the probation's start is checked against
the verified promote record of the rollout (a state file cannot shorten a probation by
moving its start back, nor invent a promotion to put on probation). Past ``max_s``
undecided (no metrics, too few labels) the policy's ``inconclusive`` rule applies.

An operator's ``promotion abort`` rolls the version back as during a step; ``promotion
rollback`` stops the probation (ABORTED) and owns traffic and records from then on.
An initial deployment (no champion) has nothing to be on probation against: it ends
PROMOTED without a probation record.

Usage (inside the controller's phases)::

    probation.begin(ctx, st)        # after the promotion is committed
    probation.tick(ctx, st)         # Phase.PROBATION
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promotion.errors import MetricsError, RolloutError, ServiceError
from promotion.rollout.phases import Phase

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState

ACTION = "probation_passed"
DEADLINE_S = 600.0  # default grace past duration_s before an undecided probation is inconclusive
MAX_S = 30 * 86400.0


@dataclass(frozen=True)
class ProbationSettings:
    """The policy's ``rollout.probation``, checked."""

    duration_s: float
    min_labels: int = 0
    max_s: float = DEADLINE_S


def settings_from(check, policy) -> ProbationSettings | None:
    """``policy.probation`` as settings (None without one); problems go to ``check``
    (:class:`promotion.rollout.settings._Checker`), one line each."""
    raw = getattr(policy, "probation", None)
    if not raw:
        return None
    at = ("rollout", "probation")
    duration = check.number(at + ("duration_s",), raw.get("duration_s"), low=0, low_open=True, high=MAX_S,
                            default=60.0)
    min_labels = check.integer(at + ("min_labels",), raw.get("min_labels", 0))
    max_s = check.number(at + ("max_s",), raw.get("max_s", duration + DEADLINE_S), low=0, low_open=True,
                         high=MAX_S + DEADLINE_S, default=duration + DEADLINE_S)
    if max_s < duration:
        check.problem(at + ("max_s",), f"must be >= duration_s ({duration:g}): the probation could never pass")
    if min_labels and not (policy.analysis or {}).get("labels"):
        check.problem(at + ("min_labels",), "needs analysis.labels (the metric whose labelled requests it counts)")
    return ProbationSettings(duration, min_labels, max_s)


def settings_for(ctx: "Context") -> ProbationSettings | None:
    """The probation the context's policy asks for (validating the policy once), or None."""
    from promotion.rollout.settings import RolloutSettings

    ctx.settings = ctx.settings or RolloutSettings.from_policy(ctx.policy)
    return ctx.settings.probation


def _labels(analysis) -> dict | None:
    """The label signal's numbers now (None without one)."""
    signal = getattr(analysis, "labels", None)
    if signal is None:
        return None
    ev = signal.evidence()
    return {k: ev.get(k) for k in ("metric", "canary", "champion", "canary_labelled", "champion_labelled",
                                   "labelled", "served", "coverage", "e_value", "threshold")}


# -- entering ----------------------------------------------------------------------------


def begin(ctx: "Context", st: "RolloutState") -> None:
    """After the promotion is committed: enter probation if the policy asks for one.

    The promote record and its commit move into ``st.probation``: the rollout's next
    record is the probation's outcome (a rollback, or ``probation_passed``).
    """
    settings = settings_for(ctx)
    if settings is None:
        return
    if st.champion is None:
        ctx.emit(st, "probation_skipped", reason="initial deployment: no previous champion to compare with or "
                 "return to, so no probation")
        return
    from promotion.rollout.actions import analysis_for

    analysis = analysis_for(ctx, st)
    analysis.begin_probation()  # the champion's outcomes so far are the baseline from now on
    st.analysis = analysis.to_dict()
    baseline = _labels(analysis)
    st.probation = {"since": ctx.clock(), "promote_record": st.record_path, "promote_commit": st.commit,
                    "duration_s": settings.duration_s, "snapshot": st.last_snapshot, "baseline": baseline,
                    "windows": 0}
    st.record_path, st.commit = None, None
    st.phase = Phase.PROBATION
    ctx.probation_checked = st.id  # begun in this process: its start is this process's own
    ctx.store.save(st)
    ctx.emit(st, "probation_started", version=st.canary, previous=st.champion, duration_s=settings.duration_s,
             reason=f"v{st.canary} serves 100% on probation for {settings.duration_s:g}s; v{st.champion} stays "
                    "loaded for an instant rollback")


def _anchor(ctx: "Context", st: "RolloutState") -> None:
    """Once per process: the saved probation must follow a verified promote record of this
    rollout, and cannot have begun before that record was written."""
    from promotion.records import RecordStore
    from promotion.records.statement import parse_time
    from promotion.rollout.authority import puts_in_place

    if ctx.probation_checked == st.id:
        return
    promote = None
    for record in reversed(RecordStore(ctx.project.root, st.env).records()):
        if record.action == "promote" and (record.predicate.get("evidence") or {}).get("rollout_id") == st.id \
                and puts_in_place(record) == (st.model, st.canary, st.canary_digest):
            promote = record
            break
    if promote is None:
        raise RolloutError(f"{ctx.store.path}: the saved probation of {st.model} v{st.canary} follows no verified "
                           f"promote record of rollout {st.id} in {st.env}; it is not judged (nothing moved)")
    written = parse_time(promote.recorded_at).timestamp()
    p = st.probation
    p["since"] = max(float(p.get("since") or 0.0), written)
    p["promote_record"] = str(promote.path)
    ctx.probation_checked = st.id


# -- the phase ---------------------------------------------------------------------------


def tick(ctx: "Context", st: "RolloutState") -> None:
    """One probation tick: measure, and roll back, pass, or keep watching."""
    from promotion.rollout.transitions import apply

    settings = settings_for(ctx)
    if settings is None:
        # the policy in force no longer asks for probation: end it, without a verdict
        st.phase = Phase.PROMOTED
        st.record_path, st.commit = st.probation.get("promote_record"), st.probation.get("promote_commit")
        ctx.emit(st, "probation_ended", reason="the policy no longer has rollout.probation: ended without a verdict")
        return
    _anchor(ctx, st)
    p = st.probation
    elapsed = ctx.clock() - p["since"]
    try:
        if not st.routes_applied:
            apply(ctx, st)  # a resume: the promoted version at 100%, the old champion loaded at 0
        verdict, reading = _observe(ctx, st, elapsed)
    except (MetricsError, ServiceError) as exc:
        # waiting is not a verdict; past max_s it is undecided, as a step without data
        ctx.emit(st, "cannot_decide", error=exc.message, kind=type(exc).__name__, phase_detail="probation")
        _undecided(ctx, st, settings, elapsed, f"cannot measure: {exc.message}")
        return
    if verdict.outcome.value == "fail":
        _breach(ctx, st, settings, elapsed, "; ".join(verdict.reasons) or "the analysis failed", verdict, reading)
        return
    if elapsed < settings.duration_s:
        return
    got = _labelled_in_probation(st)
    if settings.min_labels and got < settings.min_labels:
        _undecided(ctx, st, settings, elapsed, f"{got:,.0f} labelled requests in probation (needs "
                                               f"{settings.min_labels:,})")
        return
    _passed(ctx, st, settings, elapsed, verdict, reading)


def _observe(ctx: "Context", st: "RolloutState", elapsed: float):
    """Judge the window since the last tick at 100 %; (verdict, reading over the probation)."""
    from promotion.rollout import actions
    from promotion.rollout.controller import TIMELINE_MAX
    from promotion.rollout.transitions import window_since

    snap = ctx.metrics.snapshot()
    if st.last_snapshot is None:  # nothing saved to measure from: begin here
        st.last_snapshot = snap.to_dict()
        st.probation["snapshot"] = st.probation.get("snapshot") or st.last_snapshot
        raise MetricsError("probation window begins now; measuring from the next tick")
    delta = window_since(st.last_snapshot, snap)
    span = window_since(st.probation.get("snapshot") or st.last_snapshot, snap)
    analysis = actions.analysis_for(ctx, st)
    kpis = getattr(actions, "kpi_readings", None)  # business KPIs, when the policy defines them
    extra = {"kpis": kpis(ctx, st, analysis.settings)} if kpis is not None else {}
    verdict = analysis.observe(delta, champion=st.champion, canary=st.canary, canary_weight=100.0, **extra)
    st.last_snapshot = snap.to_dict()
    st.analysis = analysis.to_dict()
    st.probation["windows"] = int(st.probation.get("windows", 0)) + 1
    st.probation["labels"] = _labels(analysis)
    reading = actions.reading(span, st, verdict)
    st.timeline.append({"t": round(ctx.clock() - st.started_at, 2), "weight": 100.0, "probation": True, **reading})
    del st.timeline[:-TIMELINE_MAX]
    ctx.emit(st, "probation_observed", seconds=round(elapsed, 2), outcome=verdict.outcome.value,
             reasons=list(verdict.reasons), **reading)
    return verdict, reading


def _labelled_in_probation(st: "RolloutState") -> float:
    now, then = st.probation.get("labels") or {}, st.probation.get("baseline") or {}
    return max(0.0, float(now.get("canary_labelled") or 0.0) - float(then.get("canary_labelled") or 0.0))


def _summary(st: "RolloutState", settings: ProbationSettings, elapsed: float) -> dict[str, Any]:
    """What the record says about the probation."""
    p = st.probation
    return {"duration_s": settings.duration_s, "seconds": round(elapsed, 2), "since": p.get("since"),
            "min_labels": settings.min_labels, "windows": p.get("windows", 0),
            "promote_record": Path(p["promote_record"]).name if p.get("promote_record") else None,
            "promote_commit": p.get("promote_commit"), "baseline": p.get("baseline"), "labels": p.get("labels"),
            "labelled_in_probation": _labelled_in_probation(st)}


def _breach(ctx: "Context", st: "RolloutState", settings: ProbationSettings, elapsed: float, why: str,
            verdict, reading: dict) -> None:
    from promotion.rollout.transitions import begin_rollback

    st.steps.append({"step": "probation", "weight": 100.0, "seconds": round(elapsed, 2), **reading,
                     "verdict": "fail"})
    evidence = {**(verdict.evidence if verdict is not None else {}),
                "probation": _summary(st, settings, elapsed)}
    begin_rollback(ctx, st, f"probation of v{st.canary} failed after {elapsed:.0f}s of {settings.duration_s:g}s "
                   f"at 100%: {why}", evidence=evidence)


def _undecided(ctx: "Context", st: "RolloutState", settings: ProbationSettings, elapsed: float, why: str) -> None:
    """Keep waiting until ``max_s``; then the policy's inconclusive rule."""
    if elapsed <= settings.max_s or ctx.settings.inconclusive != "rollback":
        return
    from promotion.rollout.transitions import begin_rollback

    st.steps.append({"step": "probation", "weight": 100.0, "seconds": round(elapsed, 2), "verdict": "undecided"})
    begin_rollback(ctx, st, f"probation of v{st.canary} undecided after {elapsed:.0f}s (max_s "
                   f"{settings.max_s:g}): {why}", evidence={"probation": _summary(st, settings, elapsed)})


def check_finished(ctx: "Context", tip) -> None:
    """RolloutError when the environment's last record is a promotion whose probation never
    ended: no rollback and no probation_passed followed, and no saved state is left to
    resume it (a job that ended on another machine). Half-judged is said, never skipped."""
    if tip is None or tip.action != "promote" or not (tip.predicate.get("evidence") or {}).get("probation"):
        return
    if getattr(ctx.settings, "probation", None) is None:
        return  # the policy in force no longer asks for one
    duration = tip.predicate["evidence"]["probation"].get("duration_s")
    raise RolloutError(
        f"{tip.model} v{tip.version} was promoted in {ctx.env.name} ({tip.name}) but its probation "
        f"({duration}s) never finished: the run that watched it ended and its saved state is not here, so it "
        f"cannot resume (its analysis was in that state). v{tip.version} has no probation_passed record (a "
        f"promotion_path with requires_probation blocks it); roll it back (`promotion rollback {ctx.env.name} "
        f"--reason ...`) or promote a new version")


def recorded(ctx: "Context", st: "RolloutState") -> Path | None:
    """This rollout's probation_passed record, if a run that crashed already wrote it."""
    from promotion.records import RecordStore
    from promotion.rollout.authority import puts_in_place

    for record in reversed(RecordStore(ctx.project.root, st.env).records()):
        if record.action == ACTION and (record.predicate.get("evidence") or {}).get("rollout_id") == st.id \
                and puts_in_place(record) == (st.model, st.canary, st.canary_digest):
            return record.path
    return None


def _passed(ctx: "Context", st: "RolloutState", settings: ProbationSettings, elapsed: float,
            verdict, reading: dict) -> None:
    """Sign and commit the probation_passed record; the rollout ends PROMOTED."""
    from promotion.records import write_record
    from promotion.rollout.actions import _commit, _record_inputs

    p = st.probation
    if not p.get("record"):
        found = recorded(ctx, st)
        p["record"] = str(found) if found is not None else None
    if not p.get("record"):
        row = {"step": "probation", "weight": 100.0, "seconds": round(elapsed, 2), **reading, "verdict": "pass"}
        summary = _summary(st, settings, elapsed)
        labels = summary["labels"] or {}
        checks = [{"name": "probation", "verdict": "pass", "value": round(elapsed, 2),
                   "threshold": f">= {settings.duration_s:g} s at 100% without a regression",
                   "message": f"v{st.canary} served 100% for {elapsed:.0f}s; no signal regressed against "
                              f"v{st.champion}'s pre-promotion baseline"}]
        if labels.get("metric"):
            checks.append({"name": f"probation.labels.{labels['metric']}", "verdict": "pass",
                           "value": labels.get("canary"), "threshold": f"not worse than v{st.champion} "
                           f"({labels.get('champion')}) beyond the tolerance",
                           "message": f"{summary['labelled_in_probation']:,.0f} labelled in probation, "
                                      f"e={labels.get('e_value')}"})
        reason = (f"probation passed: v{st.canary} served 100% for {elapsed:.0f}s (>= {settings.duration_s:g}s) "
                  f"against v{st.champion}'s pre-promotion baseline")
        path = write_record(
            ctx.project.root, st.env, action=ACTION, model=st.model, version=st.canary, digest=st.canary_digest,
            from_env=st.env, to_env=st.env, checks=checks, approvers=st.approvers, steps=[*st.steps, row],
            rollback_target=st.champion, replaced_version=st.champion, policy_digest=st.policy_digest,
            source_commit=st.source_commit, reason=reason,
            evidence={"rollout_id": st.id, "probation": summary, "analysis": verdict.evidence,
                      "timeline": [t for t in st.timeline if t.get("probation")][-50:]},
            hooks=st.hooks, interventions=st.interventions, signer=ctx.signer, **_record_inputs(ctx, st.canary))
        st.steps.append(row)
        p["record"] = str(path)
        ctx.store.save(st)
    st.record_path = p["record"]
    st.commit = _commit(ctx, st, f"probation passed {st.env}: {st.model} v{st.canary} ({elapsed:.0f}s at 100%, "
                        f"was v{st.champion})", [Path(p["record"])])
    st.phase = Phase.PROMOTED
    ctx.emit(st, "probation_passed", version=st.canary, previous=st.champion, seconds=round(elapsed, 2),
             record=st.record_path, commit=st.commit)
