"""``promotion doctor <env>``: does the version an environment names carry what its gates need?

For every gate the environment's policy lists, the registered version (the one in
``environments/<env>.yaml``) is checked for what that gate reads: the metrics the policy
names (and, for relative rules, the champion's), the fairness gate's per-segment rates,
the drift gate's reference sample and production window, the schema gate's signature,
the lineage gate's tags and the artifact digest. Each missing item is one line with the
code that would log it::

    metrics: missing metric 'recall': promotion.register(...) logs it; or mlflow.log_metric("recall", ...)

It judges nothing (``promotion gate`` does): a metric that is present but below its
threshold is fine here. Exit 0 when nothing is missing, 1 otherwise, 2 on bad input.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass

from promotion.commands._common import emit_json, project

HELP = "check the version an environment names against what its gates need; list what is missing and how to log it"

REGISTER = "promotion.register(...)"
# what promotion.register logs (promotion._internal.holdout), without importing it here
REGISTERED_METRICS = {
    "recall", "precision", "fpr", "f1", "accuracy", "auc", "log_loss", "rmse", "mae", "r2",
    "latency_p95_ms", "holdout_rows",
}
TAG_HINTS = {
    "data_snapshot": "promotion.register(..., train=(X_train, y_train)) sets it (a digest of the data)",
    "code_commit": "promotion.register(...) sets it (git rev-parse HEAD of the committed training code)",
    "params": "promotion.register(..., params={...}) sets it (a digest of the hyperparameters)",
    "env_lock": "promotion.register(..., env_lock=\"uv.lock\") sets it (a digest of the environment lock)",
    "artifact_digest": "promotion.register(...) sets it (the sha256 of the registered artifact)",
}


@dataclass(frozen=True)
class Finding:
    """One thing a gate reads: present (``ok``) or missing, and how to provide it."""

    gate: str
    kind: str          # metric | tag | artifact | signature | digest | setting | info
    name: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{self.gate}: {self.message}"


def add_arguments(parser) -> None:
    parser.add_argument("environment", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def _metric_fix(name: str) -> str:
    if name in REGISTERED_METRICS:
        return f'{REGISTER} logs it; or mlflow.log_metric("{name}", ...)'
    return f'mlflow.log_metric("{name}", ...) in the version\'s run; or promotion.register(..., metrics={{"{name}": ...}})'


def _tag_fix(mv, tag: str) -> str:
    hint = TAG_HINTS.get(tag, f"{REGISTER} sets it")
    return (f'{hint}; or MlflowClient().set_model_version_tag("{mv.name}", "{mv.version}", "{tag}", ...)')


def diagnose(ctx) -> list[Finding]:
    """Findings for every gate of the policy, on the version the environment names."""
    out: list[Finding] = []
    for gate, settings in ctx.policy.gates.items():
        check = _CHECKS.get(gate)
        if check is None:
            out.append(Finding(gate, "info", gate, True, "nothing on the version to check (judged at gate time)"))
            continue
        out.extend(check(ctx, settings))
    return out


def _metrics(ctx, settings) -> list[Finding]:
    mv = ctx.challenger()
    found = []
    for name in (settings.get("absolute") or {}):
        found.append(_has_metric(mv, name))
    relative = settings.get("relative") or {}
    if relative:
        champion = ctx.champion()
        for name in relative:
            if name not in (settings.get("absolute") or {}):
                found.append(_has_metric(mv, name))
            if champion is not None and champion.version != mv.version and name not in champion.metrics:
                found.append(Finding("metrics", "metric", name, False,
                                     f"champion v{champion.version} lacks metric {name!r}: relative rules need it on "
                                     f"both versions; {_metric_fix(name)}"))
    return found


def _has_metric(mv, name: str) -> Finding:
    if name in mv.metrics:
        return Finding("metrics", "metric", name, True, f"metric {name!r} = {mv.metrics[name]:.4g}")
    hint = ""
    task = mv.tags.get("task")
    if task and name in REGISTERED_METRICS and name in _TASK_ONLY and _TASK_ONLY[name] != task:
        hint = f" (v{mv.version} was registered as a {task} model; {name} is a {_TASK_ONLY[name]} metric)"
    return Finding("metrics", "metric", name, False, f"missing metric {name!r}{hint}: {_metric_fix(name)}")


_PLAIN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_TASK_ONLY = {**{m: "classification" for m in ("recall", "precision", "fpr", "f1", "accuracy", "auc", "log_loss")},
              **{m: "regression" for m in ("rmse", "mae", "r2")}}


def _fairness(ctx, settings) -> list[Finding]:
    mv = ctx.challenger()
    segment = settings.get("segment", "segment")
    found = []
    for rate, key in (("tpr", "tpr_gap_max"), ("fpr", "fpr_gap_max")):
        if key not in settings:
            continue
        pattern = re.compile(rf"^{rate}_{re.escape(segment)}_(.+)$")
        have = sorted(m.group(1) for k in mv.metrics if (m := pattern.match(k)))
        if len(have) >= 2:
            found.append(Finding("fairness", "metric", f"{rate}_{segment}_*", True,
                                 f"{rate}_{segment}_* for {len(have)} segments ({', '.join(have[:6])})"))
            continue
        logged = mv.tags.get("segment")
        logged = logged if logged and _PLAIN.fullmatch(logged) else None  # a tag is anyone's text: quote only names
        hint = (f" (v{mv.version} logged its segments as {logged!r}: set gates.fairness.segment: {logged} in "
                f"{ctx.policy.display}, or register with segment={segment!r})") if logged and logged != segment else ""
        found.append(Finding("fairness", "metric", f"{rate}_{segment}_*", False,
                             f"missing metric '{rate}_{segment}_<value>' for at least two segments (has {len(have)})"
                             f"{hint}: promotion.register(..., segment=\"{segment}\") logs them; or "
                             f"mlflow.log_metric(\"{rate}_{segment}_<value>\", ...) per segment"))
    return found


def _drift(ctx, settings) -> list[Finding]:
    mv = ctx.challenger()
    found = []
    rel = mv.tags.get("reference_sample")
    fix = ('promotion.register(..., reference=X_train) logs reference/reference.parquet; or '
           'mlflow.log_artifact("reference.parquet", "reference") and '
           f'MlflowClient().set_model_version_tag("{mv.name}", "{mv.version}", "reference_sample", "reference/reference.parquet")')
    if not rel:
        found.append(Finding("drift", "tag", "reference_sample", False, f"missing tag 'reference_sample' (the reference "
                                                                        f"sample for drift): {fix}"))
    elif not _run_has_artifact(ctx, mv, rel):
        found.append(Finding("drift", "artifact", rel, False,
                             f"missing artifact {rel!r} in run {mv.run_id} (tag reference_sample names it): {fix}"))
    else:
        found.append(Finding("drift", "artifact", rel, True, f"reference sample {rel}"))
    if not ctx.env.production_window:
        found.append(Finding("drift", "setting", "drift.production_window", False,
                             f"{ctx.env.display} names no drift.production_window (recent production features: the "
                             "service's inference log directory or a .parquet/.csv file); the drift gate blocks without it"))
    return found


def _run_has_artifact(ctx, mv, rel: str) -> bool:
    from promotion.registry import _translated

    if not mv.run_id:
        return False
    parent, _, _ = rel.rpartition("/")
    with _translated(f"run {mv.run_id} artifacts"):
        listed = ctx.registry.client.list_artifacts(mv.run_id, parent or None)
    return any(a.path == rel for a in listed)


def _schema(ctx, settings) -> list[Finding]:
    from promotion.gates.schema import signature_columns

    mv = ctx.challenger()
    sig = signature_columns(ctx.artifact(mv.version))
    if sig is None:
        return [Finding("schema", "signature", "signature", False,
                        f"v{mv.version} has no MLflow signature: {REGISTER} infers it from the holdout; or "
                        "mlflow.<flavour>.log_model(..., signature=mlflow.models.infer_signature(X, model.predict(X)))")]
    return [Finding("schema", "signature", "signature", True, f"signature with {len(sig[0])} input(s)")]


def _lineage(ctx, settings) -> list[Finding]:
    from promotion._internal.digest import tree_digest

    mv = ctx.challenger()
    found = []
    for tag in settings.get("required") or []:
        if str(mv.tags.get(tag) or "").strip():
            found.append(Finding("lineage", "tag", tag, True, f"tag {tag!r}"))
        else:
            found.append(Finding("lineage", "tag", tag, False, f"missing tag {tag!r}: {_tag_fix(mv, tag)}"))
    actual = tree_digest(ctx.artifact(mv.version))
    if mv.digest and mv.digest != actual:
        found.append(Finding("lineage", "digest", "artifact_digest", False,
                             f"tag artifact_digest {mv.digest} is not the artifact's digest {actual}: the artifact "
                             "changed after registration; register the model again"))
    declared = ctx.env.model.digest
    if declared != actual:
        found.append(Finding("lineage", "digest", "model.digest", False,
                             f"{ctx.env.display} model.digest is {declared[:19]}… but the artifact of v{mv.version} is "
                             f"{actual}: `promotion propose {ctx.env.name} --version {mv.version}` writes it"))
    else:
        found.append(Finding("lineage", "digest", "model.digest", True, f"{ctx.env.display} model.digest matches the artifact"))
    return found


_CHECKS = {"metrics": _metrics, "fairness": _fairness, "drift": _drift, "schema": _schema, "lineage": _lineage}


def run(args) -> int:
    from promotion.gates.base import GateContext
    from promotion.registry import Registry

    proj = project(args)
    env = proj.environment(args.environment)
    policy = proj.policy_for(env)
    registry = Registry.for_root(proj.root, tracking_uri=env.tracking_uri)
    ctx = GateContext(proj, env, policy, registry)
    mv = ctx.challenger()  # a version that is not registered: one line, exit 1
    findings = diagnose(ctx)
    missing = [f for f in findings if not f.ok]
    if args.json:
        emit_json({"environment": env.name, "model": env.model.name, "version": mv.version,
                   "policy": policy.display, "missing": len(missing), "findings": [asdict(f) for f in findings]})
        return 1 if missing else 0
    print(f"{env.model.name} v{mv.version} ({env.display}) against {policy.display}:")
    for f in findings:
        print(f"  {'ok     ' if f.ok else 'MISSING'}  {f.line()}")
    if missing:
        print(f"{len(missing)} item(s) missing; `promotion gate {env.name}` blocks until they are there", file=sys.stderr)
        return 1
    print(f"nothing missing: every gate of {policy.display} has what it reads")
    return 0
