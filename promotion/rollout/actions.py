"""What the controller does to the world: gates, aliases, git commits, signed records.

Kept apart from :mod:`promotion.rollout.controller` (which decides when) so each action
is idempotent on its own: running it again after a crash finds the work done and moves on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion.errors import GitError

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState


def head_commit(ctx: "Context") -> str | None:
    """The commit that last changed the environment file: what this rollout acts on."""
    try:
        rel = ctx.env.path.resolve().relative_to(ctx.project.root.resolve()).as_posix()
        # first parent: the merge that brought the change to this branch, as audit walks it
        sha = Git(ctx.project.root)("log", "-1", "--first-parent", "--format=%H", "--", rel).strip()
        return sha or os.environ.get("GITHUB_SHA") or None
    except (GitError, ValueError):
        return os.environ.get("GITHUB_SHA") or None


def pre_rollout_checks(ctx: "Context", st: "RolloutState") -> list[dict]:
    """Re-run the policy's gates on the merged state: a merge that bypassed them is rejected."""
    from promotion._internal.paths import state_dir
    from promotion.gates import run_gates
    from promotion.github.approvals import source_for_rollout

    approvals = source_for_rollout(root=ctx.project.root, state=state_dir(ctx.project.root))
    report = run_gates(ctx.project, ctx.env.name, registry=_AsPlanned(ctx.registry, st), approvals=approvals)
    ctx.gate_report = report
    return [{**c.to_dict(), "verdict": c.verdict.value.lower()} for c in report.checks]


class _AsPlanned:
    """The registry, with the environment's alias read as the rollout's champion.

    The rollout compares its canary with that champion; the gates must compare with the
    same one. They differ only on a resume after the promotion moved the alias to the
    canary but before its record was written: judged then, the canary would be compared
    with itself.
    """

    def __init__(self, registry, st: "RolloutState") -> None:
        self._registry, self._st = registry, st

    def alias(self, name: str, alias: str) -> int | None:
        if (name, alias) == (self._st.model, self._st.env):
            return self._st.champion
        return self._registry.alias(name, alias)

    def __getattr__(self, name: str):
        return getattr(self._registry, name)


def _source_env(ctx: "Context") -> str | None:
    """The environment the promotion path came from: this model's file there."""
    source = ctx.policy.requires_record_from
    return ctx.project.counterpart(ctx.env, source) if source else None


def approvers_from(ctx: "Context") -> list[dict]:
    """Who approved, with the commit each approved (from the approvals gate's details)."""
    report = getattr(ctx, "gate_report", None)
    for result in getattr(report, "results", ()):
        if result.gate == "approvals":
            return [dict(a) for a in (result.details or {}).get("approvers", [])]
    return []


def analysis_for(ctx: "Context", st: "RolloutState"):
    from promotion.analysis.judge import AnalysisSettings, CanaryAnalysis

    if st.analysis:
        return CanaryAnalysis.from_dict(st.analysis)
    return CanaryAnalysis(AnalysisSettings.from_policy(ctx.policy))


def kpi_readings(ctx: "Context", st: "RolloutState", settings) -> dict | None:
    """This window's cumulative KPI counts per role (``analysis.kpis``), or None without KPIs.

    Only a source that evaluates PromQL can read them; any other source (or a failure)
    makes every KPI unreadable, which holds the step: a KPI that cannot be read decides
    nothing, it never passes.
    """
    from promotion.errors import MetricsError

    kpis = settings.kpi_settings if settings is not None else []
    if not kpis:
        return None
    reader = getattr(ctx.metrics, "kpi_counts", None)
    if reader is None:
        why = (f"metrics.source {getattr(ctx.env, 'metrics_source', '?')} cannot evaluate PromQL KPIs "
               "(use metrics.source: prometheus)")
        return {k.name: why for k in kpis}
    try:
        return reader(kpis, {"canary": st.canary, "champion": st.champion})
    except MetricsError as exc:
        return {k.name: exc.message for k in kpis}


def reading(step_window, st: "RolloutState", verdict) -> dict[str, Any]:
    """Requests, error rate, p95 and e-values of both versions over the current step."""
    out: dict[str, Any] = {}
    for role, version in (("canary", st.canary), ("champion", st.champion)):
        c = step_window.versions.get(version) if version is not None else None
        n = c.requests if c else 0
        out[f"{role}_requests"] = int(n)
        out[f"{role}_error_rate"] = round(c.errors / n, 5) if c and n else None
        p95 = c.latency_quantile(0.95) if c and n else None
        out[f"{role}_p95_ms"] = round(p95 * 1000, 3) if p95 is not None else None
    # the analysis keeps one e-process per comparison (and the SRM check): show each value
    evidence = verdict.evidence or {}
    e_values = {}
    for name, key in (("errors", "errors_vs_champion"), ("latency", "latency_vs_champion"), ("srm", "srm"),
                      ("labels", "labels"), ("score_shift", "score_shift")):
        value = (evidence.get(key) or {}).get("e_value")
        if value is not None:
            e_values[name] = round(float(value), 4)
    for name, kpi in (evidence.get("kpis") or {}).items():
        if kpi.get("e_value") is not None:
            e_values[f"kpi:{name}"] = round(float(kpi["e_value"]), 4)
    if e_values:
        out["e_values"] = e_values
    labels = evidence.get("labels")
    if labels:  # label coverage and the metric per version, for the live view and the record's steps
        out["labels"] = {"metric": labels["metric"], "canary": labels["canary"], "champion": labels["champion"],
                         "labelled": labels["labelled"], "coverage": labels["coverage"]}
    if evidence.get("kpis"):  # each KPI per version, for the live view and the record's steps
        out["kpis"] = {n: {"canary": k["canary"], "champion": k["champion"]} for n, k in evidence["kpis"].items()}
    if evidence.get("experiment"):
        out["experiment"] = {"lift": evidence["experiment"]["lift"], "shown": evidence["experiment"]["shown"]}
    return out


def shadow_agreement(baseline: dict | None, snap, version: int) -> dict[str, Any]:
    """What the shadow ``version`` did with the requests mirrored to it since ``baseline``.

    The router counts a mirrored request that the shadow answered in
    ``promotion_shadow_requests_total`` (and whether its label agreed with the served one),
    and a mirrored request the shadow failed on as an error of kind ``shadow``; both are
    mirrored requests. ``agreement`` is over the answered ones; ``None`` when none was.
    """
    from promotion.metrics.base import Snapshot, window

    c = window(Snapshot.from_dict(baseline), snap).get(version) if baseline else None
    if c is None:
        return {"requests": 0, "agreement": None, "errors": 0, "compared": 0, "disagreements": 0}
    compared = c.shadow_agree + c.shadow_disagree
    # failures are the router's errors of kind "shadow"; answered-but-not-yet-compared is
    # only a scrape landing between two counter updates of one batch, not a failure
    errors = max(c.errors_by_kind.get("shadow", 0.0), 0.0)
    requests = max(c.shadow_requests, compared) + errors
    return {"requests": int(requests), "agreement": round(c.shadow_agree / compared, 5) if compared else None,
            "errors": int(errors), "compared": int(compared), "disagreements": int(c.shadow_disagree)}


def expected_disagreement(ctx: "Context", st: "RolloutState") -> float | None:
    """The share of rows on which the canary's and the champion's decisions differ, as the
    drift gate measured it when this process re-ran the gates; None when it did not (no
    drift gate, no champion scored, or another pair of versions)."""
    for result in getattr(getattr(ctx, "gate_report", None), "results", ()):
        d = (result.details or {}).get("prediction_disagreement") if result.gate == "drift" else None
        if d and d.get("challenger") == st.canary and d.get("champion") == st.champion:
            return float(d["rate"])
    return None


def _record_inputs(ctx: "Context", version: int) -> dict[str, Any]:
    mv = ctx.registry.version(ctx.env.model.name, version)
    return {"data_snapshot": mv.tags.get("data_snapshot"), "code_commit": mv.tags.get("code_commit")}


def _commit(ctx: "Context", st: "RolloutState", message: str, paths: list[Path]) -> str | None:
    from promotion.records import record_related_paths

    git = Git(ctx.project.root)
    rel = sorted({str(Path(p).resolve().relative_to(ctx.project.root.resolve())) for p in
                  [*paths, *record_related_paths(ctx.project.root, st.env)] if Path(p).exists()})
    git("add", "--", *rel)
    if not git("diff", "--cached", "--name-only").strip():
        # already committed by an earlier, interrupted run: name that commit
        return st.commit or git("log", "-1", "--format=%H", "--", *rel).strip() or None
    # pushing is a separate step (`promotion github push`), with a token this never sees
    return git.commit(message, [])


def recorded_decision(ctx: "Context", st: "RolloutState", action: str) -> Path | None:
    """The record this rollout already wrote for its decision, if any.

    Writing the record and saving the state that names it are two steps; a crash between
    them must not sign the same decision twice on the next run. Each record carries the
    rollout's id in its evidence, so the chain (verified, newest first) says whether it
    was written.
    """
    from promotion.records import RecordStore
    from promotion.rollout.authority import puts_in_place

    # the decision's own record names what it puts in place, not only the rollout's id
    if action == "promote" or st.champion is None:
        leaves = (st.model, st.canary, st.canary_digest)
    else:
        leaves = (st.model, st.champion, st.champion_digest)
    for record in reversed(RecordStore(ctx.project.root, st.env).records()):
        if (record.action == action and (record.predicate.get("evidence") or {}).get("rollout_id") == st.id
                and puts_in_place(record) == leaves):
            return record.path
    return None


def _probation_ahead(ctx: "Context", st: "RolloutState") -> dict:
    """The promote record says a probation follows (so a lost one is noticed later)."""
    from promotion.rollout.probation import settings_for

    settings = settings_for(ctx)
    if settings is None or st.champion is None:
        return {}
    return {"probation": {"duration_s": settings.duration_s}}


def finish_promotion(ctx: "Context", st: "RolloutState") -> None:
    """Alias to the canary (old champion pinned), signed promote record, commit."""
    from promotion.records import write_record

    ctx.registry.set_alias(st.model, st.env, st.canary)
    if not st.record_path:
        found = recorded_decision(ctx, st, "promote")
        if found is not None:
            st.record_path = str(found)
            ctx.store.save(st)
    if not st.record_path:
        path = write_record(
            ctx.project.root, st.env, action="promote", model=st.model, version=st.canary,
            digest=st.canary_digest, from_env=_source_env(ctx), to_env=st.env,
            checks=st.checks, approvers=st.approvers, steps=st.steps, rollback_target=st.champion,
            policy_digest=st.policy_digest, source_commit=st.source_commit, reason=st.reason,
            evidence={"rollout_id": st.id, **({"timeline": st.timeline[-50:]} if st.timeline else {}),
                      **_probation_ahead(ctx, st)},
            hooks=st.hooks, interventions=st.interventions,
            signer=ctx.signer, **_record_inputs(ctx, st.canary),
        )
        st.record_path = str(path)
        ctx.store.save(st)
    was = f" (was v{st.champion})" if st.champion is not None else " (initial deployment)"
    st.commit = _commit(ctx, st, f"promote {st.env}: {st.model} v{st.canary}{was}", [Path(st.record_path)])


def finish_rollback(ctx: "Context", st: "RolloutState") -> None:
    """Alias and environment file back to the champion, signed rollback record, one commit."""
    from promotion.records import write_record

    target, target_digest = st.champion, st.champion_digest
    changed: list[Path] = []
    if target is not None:
        if ctx.registry.alias(st.model, st.env) != target:
            ctx.registry.restore_alias(st.model, st.env, target)
        if set_model(ctx.env.path, target, target_digest):
            changed.append(ctx.env.path)
    if not st.record_path:
        found = recorded_decision(ctx, st, st.rollback_action)
        if found is not None:
            st.record_path = str(found)
            ctx.store.save(st)
    if not st.record_path:
        path = write_record(
            ctx.project.root, st.env, action=st.rollback_action, model=st.model,
            version=target if target is not None else st.canary,
            digest=target_digest if target is not None else st.canary_digest,
            from_env=st.env, to_env=st.env, checks=st.checks, approvers=st.approvers, steps=st.steps,
            rollback_target=target, policy_digest=st.policy_digest, source_commit=st.source_commit,
            reason=st.reason, replaced_version=st.canary,
            evidence={**(st.evidence or {}), "rollout_id": st.id,
                      "rejected": {"version": st.canary, "digest": st.canary_digest},
                      "switch_seconds": st.switch_seconds, "timeline": st.timeline[-100:]},
            hooks=st.hooks, interventions=st.interventions,
            signer=ctx.signer, **_record_inputs(ctx, target if target is not None else st.canary),
        )
        st.record_path = str(path)
        ctx.store.save(st)
    to = f"v{target}" if target is not None else "nothing"
    st.commit = _commit(ctx, st, f"rollback {st.env}: {st.model} v{st.canary} -> {to}: {st.reason}"[:300],
                        [*changed, ctx.env.path, Path(st.record_path)])
