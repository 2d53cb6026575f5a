"""The approvals gate: enough eligible people approved this exact proposal.

The rules live with the sources (:mod:`promotion.github.approvals`): GitHub pull request
reviews in CI, a local file (not for production) on a laptop. This gate asks the source
for approvals and compares the count with the policy's ``required``. No source, or a
source that fails (403, 5xx, timeout, bad payload), blocks with the reason.

Policy section (``gates.approvals``), with its defaults::

    required: 1                     # eligible approvals needed (0: none)
    teams: []                       # org/slug or slug; members only count
    codeowners: true                # else the owners of the environment file count
    changes_requested_blocks: true  # an eligible reviewer's standing change request blocks
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateResult, GateSpec


@dataclass(frozen=True)
class ApprovalsSettings:
    """``gates.approvals``."""

    required: int = 1
    teams: tuple[str, ...] = ()
    codeowners: bool = True
    changes_requested_blocks: bool = True

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "ApprovalsSettings":
        return cls(int(m.get("required", 1)), tuple(m.get("teams") or ()), bool(m.get("codeowners", True)),
                   bool(m.get("changes_requested_blocks", True)))


class ApprovalsGate(GateSpec):
    name = "approvals"
    schema = {"type": "object", "additionalProperties": False, "properties": {
        "required": {"type": "integer", "minimum": 0, "maximum": 20},
        "teams": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "codeowners": {"type": "boolean"},
        "changes_requested_blocks": {"type": "boolean"},
    }}
    defaults = {"required": 1, "teams": [], "codeowners": True, "changes_requested_blocks": True}
    Settings = ApprovalsSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        s = self.Settings.from_mapping(settings)
        required = s.required
        file, line = ctx.policy_line("gates", "approvals", "required")
        threshold = f">= {required}"
        if required == 0:
            return GateResult(self.name, (Check.judge("approvals", 0, threshold, True,
                                                      f"{ctx.policy.display} requires no approval", file, line),))
        if ctx.approvals is None:
            return GateResult(self.name, (Check.block("approvals", "cannot decide: no approvals source configured",
                                                      threshold, file, line),))
        found = ctx.approvals.collect(
            env_file=ctx.env.display, env_name=ctx.env.name, version=ctx.env.model.version,
            digest=ctx.env.model.digest, teams=list(s.teams), use_codeowners=s.codeowners,
            changes_requested_blocks=s.changes_requested_blocks)
        if found.warning:
            ctx.notes.append(found.warning)
        n = len(found.approvers)
        check = Check.judge("approvals", n, threshold, found.satisfied(required), found.message(required), file, line)
        return GateResult(self.name, (check,), {
            "approvers": [dict(r) for r in found.records], "ignored": [list(i) for i in found.ignored],
            "source": found.source, "head_sha": found.head_sha, "blocking": [list(b) for b in found.blocking]})
