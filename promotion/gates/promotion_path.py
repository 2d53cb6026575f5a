"""The promotion-path gate: a version enters an environment only through the one before it.

The policy's ``promotion_path.requires_record_from`` names that environment (prod needs
staging, staging needs dev). There, by its verified record chain
(:class:`promotion.records.RecordStore`: signatures, signers valid when git received
each record, hash chain):

* the version, with the environment file's artifact digest, must hold a promote record;
* it must not have been taken out by a rollback or reject since its latest promotion
  (a version rolled back in staging is not eligible for prod, whatever its record says);
* ``gates.promotion_path.min_soak_s`` (default 0): it must have served at 100% there for
  that long - from its promote record to the next record that moved the environment
  away from it, or until now while it still runs;
* ``promotion_path.requires_probation: true``: its probation must have passed there, a
  ``probation_passed`` record after that promotion (:mod:`promotion.rollout.probation`).

A chain that cannot be read blocks and says why.

Example::

    promotion_path:
      requires_record_from: staging
    gates:
      promotion_path:
        min_soak_s: 86400    # a day in staging first
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateSpec


def now() -> datetime:
    """The current time (a function, so a test can move the clock)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class PromotionPathSettings:
    """``gates.promotion_path``."""

    min_soak_s: float = 0.0

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "PromotionPathSettings":
        return cls(float(m.get("min_soak_s") or 0))


class PromotionPathGate(GateSpec):
    name = "promotion_path"
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"min_soak_s": {"type": "number", "minimum": 0, "maximum": 31536000}}}
    defaults = {"min_soak_s": 0}  # seconds at 100% in the source environment before this one
    Settings = PromotionPathSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        from promotion.errors import Error

        source = ctx.policy.requires_record_from
        if source:  # several models per environment: this model's file there (staging/<model>)
            source = ctx.project.counterpart(ctx.env, source)
        version, digest = ctx.env.model.version, ctx.env.model.digest
        if not source:
            return [Check.judge("promotion_path", None, "none required", True,
                                f"{ctx.policy.display} requires no earlier environment")]
        file, line = ctx.policy_line("promotion_path", "requires_record_from")
        name = f"promotion_path.{source}"
        threshold = f"promoted in {source}, not rolled back"
        try:
            from promotion.records import RecordStore

            records = RecordStore(ctx.project.root, source).records()
        except Error as exc:
            return [Check.block(name, f"cannot decide: the {source} records do not verify ({exc.message})",
                                threshold, file, line)]
        standing = source_standing(records, ctx.model, version, digest)
        if standing.promote is None:
            if standing.other_digest:
                return [Check.block(name, f"the {source} record of v{version} is for artifact "
                                          f"{standing.other_digest}, not {digest}", threshold, file, line)]
            return [Check.block(name, f"v{version} has no verified promotion record in {source}; "
                                      f"promote it to {source} first", threshold, file, line)]
        if standing.rolled_back is not None:
            rb = standing.rolled_back
            why = f": {rb.predicate['reason']}" if rb.predicate.get("reason") else ""
            return [Check.block(name, f"v{version} was promoted in {source} ({standing.promote.name}) but then "
                                      f"taken out by {rb.action} record {rb.name} ({rb.recorded_at}){why}; "
                                      "a version rolled back there is not eligible", threshold, file, line)]
        checks = [Check.judge(name, f"v{version}", threshold, True,
                              f"v{version} holds a verified {source} promotion record ({standing.promote.path})",
                              file, line)]
        min_soak = self.Settings.from_mapping(settings).min_soak_s
        if min_soak > 0:
            checks.append(_soak_check(ctx, source, version, standing, min_soak))
        if getattr(ctx.policy, "requires_probation", False):
            checks.append(_probation_check(ctx, source, version, standing))
        return checks


class Standing:
    """What the source environment's records say about one version."""

    def __init__(self) -> None:
        self.promote = None        # its latest promote record (this digest)
        self.rolled_back = None    # a later rollback/reject that took it out
        self.moved_away = None     # the first later record after which it no longer ran
        self.other_digest = None   # a promote record of this version for another artifact
        self.probation = None      # a probation_passed record after its latest promotion (this digest)


def source_standing(records: list, model: str, version: int, digest: str) -> Standing:
    """Find ``model`` ``version`` (``digest``) in a verified chain, oldest record first."""
    standing = Standing()
    start = None
    for i, record in enumerate(records):
        if record.model == model and record.version == version and record.action == "promote":
            if record.predicate["model"]["digest"] == digest:
                standing.promote, start = record, i
            else:
                standing.other_digest = record.predicate["model"]["digest"]
    if start is None:
        return standing
    running = version
    for record in records[start + 1:]:
        replaced = record.predicate.get("replaced_version")
        if record.action == "probation_passed" and standing.probation is None and record.model == model \
                and record.version == version and record.predicate["model"]["digest"] == digest:
            standing.probation = record
        if record.action in ("rollback", "reject"):
            if replaced is None and record.action == "rollback":
                replaced = running  # an older rollback record names only its target
            if record.model == model and replaced == version and record.version != version:
                standing.rolled_back = record
                standing.moved_away = standing.moved_away or record
                return standing
        if standing.moved_away is None and (record.model != model or record.version != version):
            standing.moved_away = record
        running = record.version if record.model == model else None
    return standing


def _soak_check(ctx: GateContext, source: str, version: int, standing: Standing, min_soak: float) -> Check:
    from promotion.records.statement import parse_time

    file, line = ctx.policy_line("gates", "promotion_path", "min_soak_s")
    began = parse_time(standing.promote.recorded_at)
    end = parse_time(standing.moved_away.recorded_at) if standing.moved_away is not None else now()
    soaked = max(0, int((end - began).total_seconds()))
    ok = soaked >= min_soak
    until = f"until {standing.moved_away.name} moved {source} away from it" if standing.moved_away is not None \
        else "and still serving"
    return Check.judge(
        f"promotion_path.{source}.soak", soaked, f">= {min_soak:g} s", ok,
        f"soaked {soaked} s >= {min_soak:g} s: {'PASS' if ok else 'BLOCK'} (v{version} at 100% in {source} "
        f"since {standing.promote.recorded_at}, {until})", file, line)


def _probation_check(ctx: GateContext, source: str, version: int, standing: Standing) -> Check:
    """``promotion_path.requires_probation``: the version's probation passed in ``source``
    after its latest promotion there (a ``probation_passed`` record, verified in the chain)."""
    file, line = ctx.policy_line("promotion_path", "requires_probation")
    name = f"promotion_path.{source}.probation"
    threshold = f"probation passed in {source}"
    found = standing.probation
    if found is None:
        initial = standing.promote.predicate.get("rollback_target") is None
        why = (f"it was the initial deployment of {source} (no champion to be on probation against)" if initial
               else f"its probation there has not passed yet, failed, or {source}'s policy has no rollout.probation")
        return Check.block(name, f"v{version} has no probation_passed record in {source} after its promotion "
                                 f"({standing.promote.name}): {why}", threshold, file, line)
    seconds = (found.predicate.get("evidence") or {}).get("probation", {}).get("seconds")
    held = f" for {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
    return Check.judge(name, found.name, threshold, True,
                       f"v{version} passed its probation in {source}{held} ({found.name}, {found.recorded_at})",
                       file, line)
