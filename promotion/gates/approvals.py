"""The approvals gate: enough eligible people approved this exact proposal.

The rules live with the sources (:mod:`promotion.github.approvals`): GitHub pull request
reviews in CI, a local file (not for production) on a laptop. This gate asks the source
for approvals and compares the count with the policy's ``required``. No source, or a
source that fails (403, 5xx, timeout, bad payload), blocks with the reason.
"""

from __future__ import annotations

from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateResult


class ApprovalsGate:
    name = "approvals"

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> GateResult:
        required = int(settings.get("required", 1))
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
            digest=ctx.env.model.digest, teams=list(settings.get("teams") or []),
            use_codeowners=bool(settings.get("codeowners", True)))
        if found.warning:
            ctx.notes.append(found.warning)
        n = len(found.approvers)
        check = Check.judge("approvals", n, threshold, n >= required, found.message(required), file, line)
        return GateResult(self.name, (check,), {
            "approvers": [dict(r) for r in found.records], "ignored": [list(i) for i in found.ignored],
            "source": found.source, "head_sha": found.head_sha})
