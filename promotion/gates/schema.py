"""The schema gate: the challenger's feature schema against the champion's.

Both come from the MLflow model signatures stored with the artifacts (``MLmodel``).
Callers of the service keep sending what the champion accepts, so: a feature the
champion had and the challenger lacks blocks; a changed type blocks; a new *optional*
feature passes (when ``allow_added_optional``); a new *required* feature blocks; a changed
output type blocks. A model without a signature cannot be checked: block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import RegistryError
from promotion.gates.base import Check, GateContext


def signature_columns(model_dir: Path) -> tuple[dict[str, dict], dict[str, dict]] | None:
    """({input name: spec}, {output name: spec}) from a model directory's signature, or None."""
    from mlflow.models import Model

    try:
        sig = Model.load(str(Path(model_dir) / "MLmodel")).signature
    except Exception as exc:  # unreadable MLmodel: name it, do not pass
        raise RegistryError(f"{model_dir}: cannot read the model's MLmodel ({exc.__class__.__name__}: {exc})") from exc
    if sig is None or sig.inputs is None:
        return None
    d = sig.to_dict()

    def cols(text):
        specs = json.loads(text) if text else []
        return {str(s.get("name", f"[{i}]")): s for i, s in enumerate(specs)}

    return cols(d.get("inputs")), cols(d.get("outputs"))


def _type(spec: Mapping[str, Any]) -> str:
    if spec.get("type") == "tensor":
        ts = spec.get("tensor-spec", {})
        return f"tensor<{ts.get('dtype')}>{ts.get('shape')}"
    return str(spec.get("type"))


class SchemaGate:
    name = "schema"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        file, line = ctx.env_line("model", "version")
        new = signature_columns(ctx.artifact(ctx.env.model.version))
        if new is None:
            return [Check.block("schema.signature", f"cannot decide: v{ctx.env.model.version} has no MLflow signature",
                                file=file, line=line)]
        champion = ctx.champion()
        if champion is None:
            _, source = ctx.champion_version()
            return [Check.judge("schema.signature", len(new[0]), "no champion", True,
                                f"v{ctx.env.model.version} declares {len(new[0])} input(s); no champion to compare ({source})",
                                file, line)]
        if champion.version == ctx.env.model.version:
            return [Check.judge("schema.signature", len(new[0]), f"v{champion.version}", True,
                                f"v{champion.version} already is the champion")]
        old = signature_columns(ctx.artifact(champion.version))
        if old is None:
            return [Check.block("schema.signature", f"cannot decide: champion v{champion.version} has no MLflow signature",
                                file=file, line=line)]
        return compare(old, new, champion.version, ctx.env.model.version,
                       bool(settings.get("allow_added_optional", True)), file, line)


def compare(old, new, old_v: int, new_v: int, allow_added_optional: bool, file=None, line=None) -> list[Check]:
    """Checks for a change of signature from champion ``old`` to challenger ``new``."""
    (old_in, old_out), (new_in, new_out) = old, new
    removed = sorted(set(old_in) - set(new_in))
    changed = sorted(f"{c} {_type(old_in[c])}->{_type(new_in[c])}" for c in set(old_in) & set(new_in)
                     if _type(old_in[c]) != _type(new_in[c]))
    added = sorted(set(new_in) - set(old_in))
    added_required = [c for c in added if new_in[c].get("required", True)]
    added_optional = [c for c in added if not new_in[c].get("required", True)]
    out_changed = sorted(f"{c} {_type(old_out[c])}->{_type(new_out.get(c, {}))}" for c in old_out
                         if _type(old_out[c]) != _type(new_out.get(c, {})))
    if list(new_out) != list(old_out) and not out_changed:
        out_changed = [f"outputs {list(old_out)}->{list(new_out)}"]
    checks = [
        Check.judge("schema.removed_features", len(removed), "0", not removed,
                    f"removed since v{old_v}: {', '.join(removed)}" if removed else f"every v{old_v} input is still accepted",
                    file, line),
        Check.judge("schema.changed_types", len(changed), "0", not changed,
                    f"type changed: {', '.join(changed)}" if changed else "no input changed type", file, line),
    ]
    bad_added = added_required + ([] if allow_added_optional else added_optional)
    msg = (f"new required input(s) callers do not send: {', '.join(bad_added)}" if bad_added
           else (f"added optional: {', '.join(added_optional)}" if added_optional else "no input added"))
    checks.append(Check.judge("schema.added_features", len(added), "optional only" if allow_added_optional else "0",
                              not bad_added, msg, file, line))
    checks.append(Check.judge("schema.outputs", len(out_changed), "0", not out_changed,
                              f"output changed: {', '.join(out_changed)}" if out_changed else "outputs unchanged",
                              file, line))
    return checks
