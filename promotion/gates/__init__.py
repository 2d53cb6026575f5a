"""Pre-merge gates that decide with numbers.

One file per gate, one contract (:mod:`promotion.gates.base`). Which gates run, and with
which thresholds, is the policy's ``gates`` section; :data:`GATES` is the explicit
registry of implementations and an unknown name is an error, never skipped. Each gate
class carries its settings' JSON Schema and defaults: the policy schema's ``gates``
section is composed from them (:func:`settings_schema`), so adding a gate is its file plus
one line here.

Usage::

    from promotion.config import Project
    from promotion.gates import run_gates

    report = run_gates(Project.discover(), "prod")
    for check in report.checks:
        print(check.name, check.value, check.threshold, check.verdict.value)
    raise SystemExit(0 if report.passed else 1)
"""

from __future__ import annotations

import importlib
from typing import Any, Iterable

from promotion.errors import ConfigError, Error, UsageError
from promotion.gates.base import Check, Gate, GateContext, GateReport, GateResult, Verdict

__all__ = ["GATES", "Check", "Gate", "GateContext", "GateReport", "GateResult", "Verdict", "gate_class", "get_gate",
           "run_gates", "settings_schema", "with_defaults"]

# name -> "module:Class"; a gate module imports nothing heavy at module level (see base)
GATES: dict[str, str] = {
    "metrics": "promotion.gates.metrics:MetricsGate",
    "drift": "promotion.gates.drift:DriftGate",
    "fairness": "promotion.gates.fairness:FairnessGate",
    "schema": "promotion.gates.schema:SchemaGate",
    "lineage": "promotion.gates.lineage:LineageGate",
    "artifact": "promotion.gates.artifact:ArtifactGate",
    "cost": "promotion.gates.cost:CostGate",
    "promotion_path": "promotion.gates.promotion_path:PromotionPathGate",
    "approvals": "promotion.gates.approvals:ApprovalsGate",
}


def gate_class(name: str) -> type:
    """The class of the gate called ``name``; :class:`UsageError` for a name not in :data:`GATES`."""
    target = GATES.get(name)
    if target is None:
        raise UsageError(f"unknown gate {name!r} (known: {', '.join(GATES)})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def get_gate(name: str) -> Gate:
    """The gate called ``name``; :class:`UsageError` for a name not in :data:`GATES`."""
    return gate_class(name)()


def settings_schema() -> dict[str, Any]:
    """The JSON Schema of a policy's ``gates`` section: one property per registered gate,
    each the gate's own ``schema``; any other name is an unknown field."""
    return {"type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {name: gate_class(name).schema for name in GATES}}


def with_defaults(name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """The settings gate ``name`` runs with: the policy's section with the gate's defaults applied."""
    return gate_class(name).with_defaults(given or {})


def run_gates(project, env_name: str, *, registry=None, approvals=None, base_ref: str | None = None,
              only: Iterable[str] | None = None, view=None) -> GateReport:
    """Run every gate the environment's policy lists; never raises for a gate's failure.

    ``registry`` defaults to :meth:`Registry.for_root` (``$MLFLOW_TRACKING_URI``, else the
    environment file's ``registry.tracking_uri``, else the embedded store). ``approvals`` is
    an approvals source (:mod:`promotion.github.approvals`); without one the approvals gate
    blocks. ``base_ref`` is the git ref of the target branch, used to find the champion when
    no version holds the environment's alias. ``only`` restricts to some of the policy's gates.

    ``view`` (a :class:`promotion.trusted.TrustedView`) judges a pull request: the project,
    environment, policy, records and registry location are the base commit's, only the
    model is the pull request's, and a ``governance`` result blocks a pull request that
    also changes governance (:func:`promotion.governance.split_check`: split it).

    Config problems raise :class:`ConfigError` (exit 2); anything a gate cannot measure
    becomes a BLOCK check naming the reason.
    """
    from promotion.registry import Registry

    state_root, base_model = project.root, None
    if view is not None:
        project, env, state_root = view.project, view.env, view.state_root
        base_model = (view.base_env.model.version, f"{view.base_env.display} on {view.base_label}")
    else:
        env = project.environment(env_name)
    policy = project.policy_for(env)
    names = list(policy.gates)
    for name in names:
        if name not in GATES:
            raise ConfigError(f"{policy.display}:{policy.line_of('gates', name)} gates.{name}: unknown gate (known: {', '.join(GATES)})")
    if only is not None:
        wanted = list(only)
        for name in wanted:
            if name not in GATES:
                raise UsageError(f"unknown gate {name!r} (known: {', '.join(GATES)})")
        missing = [n for n in wanted if n not in names]
        if missing:
            raise UsageError(f"{policy.display} does not list gate(s): {', '.join(missing)}")
        names = [n for n in names if n in wanted]
    if registry is None:
        # the state folder (embedded store, artifact cache) is the checkout's, never the base copy's
        registry = Registry.for_root(state_root, tracking_uri=env.tracking_uri)
    ctx = GateContext(project, env, policy, registry, approvals=approvals, base_ref=base_ref, base_model=base_model)

    results = [_run_one(ctx, name, policy.gates[name]) for name in names]
    if view is not None:
        from promotion.governance import split_check

        results.append(GateResult("governance", (split_check(view.changes, "governance"),)))
    try:
        champion, source = ctx.champion_version()
    except Error as exc:
        champion, source = None, f"unknown ({exc.diagnostics()})"
    return GateReport(environment=env.name, model=env.model.name, challenger=env.model.version,
                      champion=champion, champion_source=source, results=tuple(results),
                      notes=tuple(dict.fromkeys(ctx.notes)))


def _run_one(ctx: GateContext, name: str, settings: dict[str, Any]) -> GateResult:
    file, line = ctx.policy_line("gates", name)
    try:
        out = get_gate(name).evaluate(ctx, settings)
        result = out if isinstance(out, GateResult) else GateResult(name, tuple(out))
    except Error as exc:
        result = GateResult(name, (Check.block(name, f"cannot decide: {exc.diagnostics()}", file=file, line=line),))
    except Exception as exc:  # a bug or a foreign failure must still block, not crash the gate run
        result = GateResult(name, (Check.block(name, f"cannot decide: {exc.__class__.__name__}: {str(exc)[:300]}",
                                               file=file, line=line),))
    if not result.checks:
        result = GateResult(name, (Check.block(name, "cannot decide: the gate returned no checks", file=file, line=line),),
                            result.details)
    return result
