"""The promotion-path gate: a version enters an environment only through the one before it.

The policy's ``promotion_path.requires_record_from`` names that environment (prod needs
staging, staging needs dev). The version must hold a valid (signature and chain
verified) promotion record there, found by :class:`promotion.records.RecordStore`. If the
record store cannot be read, or the record's digest differs from the environment
file's, the gate blocks.
"""

from __future__ import annotations

from typing import Any, Mapping

from promotion.gates.base import Check, GateContext


class PromotionPathGate:
    name = "promotion_path"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        source = ctx.policy.requires_record_from
        version = ctx.env.model.version
        if not source:
            return [Check.judge("promotion_path", None, "none required", True,
                                f"{ctx.policy.display} requires no earlier environment")]
        file, line = ctx.policy_line("promotion_path", "requires_record_from")
        name = f"promotion_path.{source}"
        threshold = f"promoted in {source}"
        try:
            from promotion.records import RecordStore
        except ImportError as exc:
            return [Check.block(name, f"cannot decide: promotion records are not available ({exc})", threshold, file, line)]
        record = RecordStore(ctx.project.root, source).has_promotion(ctx.model, version)
        if record is None:
            return [Check.block(name, f"v{version} has no verified promotion record in {source}; "
                                      f"promote it to {source} first", threshold, file, line)]
        digest = _digest_of(record)
        if digest is not None and digest != ctx.env.model.digest:
            return [Check.block(name, f"the {source} record of v{version} is for artifact {digest}, "
                                      f"not {ctx.env.model.digest}", threshold, file, line)]
        where = getattr(record, "path", None) or getattr(record, "name", None)
        return [Check.judge(name, f"v{version}", threshold, True,
                            f"v{version} holds a verified {source} promotion record" + (f" ({where})" if where else ""),
                            file, line)]


def _digest_of(record) -> str | None:
    """The model artifact digest a record is about (not the record's own digest)."""
    value = getattr(record, "model_digest", None)
    if isinstance(value, str):
        return value
    predicate = getattr(record, "predicate", None)
    statement = getattr(record, "statement", None)
    if not isinstance(predicate, dict) and isinstance(statement, dict):
        predicate = statement.get("predicate")
    if isinstance(predicate, dict):
        value = (predicate.get("model") or {}).get("digest")
        if isinstance(value, str):
            return value
    return None
