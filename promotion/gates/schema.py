"""The schema gate: the challenger's input and output schema against the champion's.

Both come from the MLflow model signatures stored with the artifacts (``MLmodel``), with
their column types (MLflow ColSpec types: ``string``, ``boolean``, ``integer``,
``long``, ``float``, ``double``, ``datetime``, ``binary``; tensors as
``tensor<dtype>[shape]``). Callers of the service keep sending what the champion
accepts, so, for inputs:

- a feature the champion had and the challenger lacks blocks (``schema.removed_features``);
- a changed type blocks (``schema.changed_types``): ``string`` -> ``double`` and back,
  ``double`` -> ``long`` (narrowing), ``boolean`` -> anything...; except a *widening*,
  which passes when ``allow_widening`` (default true) and is named in the message: every
  value of the old type is a value of the new one and MLflow converts it without loss
  of meaning: ``integer`` -> ``long``, ``float`` or ``double``; ``long`` -> ``double``;
  ``float`` -> ``double`` (``long`` -> ``double`` rounds integers beyond 2**53; set
  ``allow_widening: false`` where that matters);
- a feature that was optional and is now required blocks (callers may omit it);
- a new *optional* feature passes (when ``allow_added_optional``, default true); a new
  *required* one blocks (``schema.added_features``).

Outputs (``schema.outputs``) must keep their names and exact types: a consumer reading
``1`` that now gets ``1.0`` is broken by a widening too. A model without a signature
cannot be checked: block.

Policy section (``gates.schema``)::

    allow_added_optional: true
    allow_widening: true
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from promotion.errors import RegistryError
from promotion.gates.base import Check, GateContext, GateSpec

# old type -> the types it may widen to (see the module docstring)
WIDENINGS = {
    "integer": {"long", "float", "double"},
    "long": {"double"},
    "float": {"double"},
}
# ColSpec types the drift gate compares as categories rather than numbers
CATEGORICAL_TYPES = {"string", "boolean", "binary"}
NUMERIC_TYPES = {"integer", "long", "float", "double", "datetime"}


@dataclass(frozen=True)
class SchemaSettings:
    """``gates.schema``."""

    allow_added_optional: bool = True
    allow_widening: bool = True

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "SchemaSettings":
        return cls(bool(m.get("allow_added_optional", True)), bool(m.get("allow_widening", True)))


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


def column_type(spec: Mapping[str, Any]) -> str:
    """The type of one signature column as text (``double``, ``string``, ``tensor<int64>[-1]``...)."""
    if spec.get("type") == "tensor":
        ts = spec.get("tensor-spec", {})
        return f"tensor<{ts.get('dtype')}>{ts.get('shape')}"
    return str(spec.get("type"))


_type = column_type  # the older private name


def is_widening(old: str, new: str) -> bool:
    """True when every value of type ``old`` is a value of type ``new`` (see :data:`WIDENINGS`)."""
    return new in WIDENINGS.get(old, ())


class SchemaGate(GateSpec):
    name = "schema"
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"allow_added_optional": {"type": "boolean"}, "allow_widening": {"type": "boolean"}}}
    defaults = {"allow_added_optional": True, "allow_widening": True}
    Settings = SchemaSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        s = self.Settings.from_mapping(settings)
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
        if ctx.challenger_is_champion():
            return [Check.judge("schema.signature", len(new[0]), f"v{champion.version}", True,
                                f"v{champion.version} already is the champion")]
        # the champion's own model: in a model switch it may share the challenger's version number
        old = signature_columns(ctx.artifact(champion.version, champion.name))
        if old is None:
            return [Check.block("schema.signature", f"cannot decide: champion v{champion.version} has no MLflow signature",
                                file=file, line=line)]
        return compare(old, new, champion.version, ctx.env.model.version, s.allow_added_optional, file, line,
                       allow_widening=s.allow_widening)


def compare(old, new, old_v: int, new_v: int, allow_added_optional: bool, file=None, line=None,
            *, allow_widening: bool = True) -> list[Check]:
    """Checks for a change of signature from champion ``old`` to challenger ``new``."""
    (old_in, old_out), (new_in, new_out) = old, new
    removed = sorted(set(old_in) - set(new_in))
    kept = sorted(set(old_in) & set(new_in))
    changed, widened = [], []
    for c in kept:
        a, b = column_type(old_in[c]), column_type(new_in[c])
        if a != b:
            (widened if allow_widening and is_widening(a, b) else changed).append(f"{c} {a}->{b}")
    now_required = [c for c in kept if not old_in[c].get("required", True) and new_in[c].get("required", True)]
    added = sorted(set(new_in) - set(old_in))
    added_required = [c for c in added if new_in[c].get("required", True)]
    added_optional = [c for c in added if not new_in[c].get("required", True)]
    out_changed = sorted(f"{c} {column_type(old_out[c])}->{column_type(new_out.get(c, {}))}" for c in old_out
                         if column_type(old_out[c]) != column_type(new_out.get(c, {})))
    if list(new_out) != list(old_out) and not out_changed:
        out_changed = [f"outputs {list(old_out)}->{list(new_out)}"]
    if changed:
        types_msg = f"type changed: {', '.join(changed)}"
    else:
        types_msg = "no input changed type"
    if widened:
        types_msg += f"; widened (every old value still accepted): {', '.join(widened)}"
    checks = [
        Check.judge("schema.removed_features", len(removed), "0", not removed,
                    f"removed since v{old_v}: {', '.join(removed)}" if removed else f"every v{old_v} input is still accepted",
                    file, line),
        Check.judge("schema.changed_types", len(changed), "0", not changed, types_msg, file, line),
        Check.judge("schema.now_required", len(now_required), "0", not now_required,
                    f"optional in v{old_v}, required in v{new_v} (callers may omit it): {', '.join(now_required)}"
                    if now_required else "no optional input became required", file, line),
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


def input_kinds(model_dir: Path) -> dict[str, str] | None:
    """``{input column: "numeric" | "categorical" | "other"}`` from a model's signature, or None
    (no signature, or a tensor signature without column names)."""
    sig = signature_columns(model_dir)
    if sig is None or not sig[0] or any(k.startswith("[") for k in sig[0]):
        return None
    out = {}
    for name, spec in sig[0].items():
        t = column_type(spec)
        out[name] = "categorical" if t in CATEGORICAL_TYPES else ("numeric" if t in NUMERIC_TYPES else "other")
    return out
