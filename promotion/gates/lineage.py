"""The lineage gate: a version must say where it came from, and be what it says.

The policy's ``required`` tags (data snapshot hash, code commit, params, environment
lock, artifact digest) must be present on the registry version. The digest written in the
environment file must equal the sha256 of the artifact actually in the registry,
recomputed from its files (a tag can be rewritten; the bytes cannot be argued with). The
registration-time ``artifact_digest`` tag must agree too, or the artifact changed after
registration.

Policy section (``gates.lineage``)::

    required: [data_snapshot, code_commit, params, env_lock, artifact_digest]   # the default

The tags are the registry version's tags of those names (any non-blank value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from promotion.gates.base import Check, GateContext, GateSpec

TAGS = ("data_snapshot", "code_commit", "params", "env_lock", "artifact_digest")


@dataclass(frozen=True)
class LineageSettings:
    """``gates.lineage``: which lineage tags a version must carry."""

    required: tuple[str, ...] = TAGS

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> "LineageSettings":
        return cls(tuple(m.get("required") or ()))


class LineageGate(GateSpec):
    name = "lineage"
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"required": {"type": "array", "uniqueItems": True, "items": {"enum": list(TAGS)}}}}
    defaults = {"required": list(TAGS)}
    Settings = LineageSettings

    def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
        mv = ctx.challenger()
        checks = []
        required = list(self.Settings.from_mapping(settings).required)
        missing = [t for t in required if not str(mv.tags.get(t) or "").strip()]
        file, line = ctx.policy_line("gates", "lineage", "required")
        checks.append(Check.judge(
            "lineage.tags", f"{len(required) - len(missing)}/{len(required)}", "all present", not missing,
            f"v{mv.version} lacks: {', '.join(missing)}" if missing else f"present: {', '.join(required) or '(none required)'}",
            file, line))

        file, line = ctx.env_line("model", "digest")
        actual = ctx.registry.artifact_digest(mv.name, mv.version)
        declared = ctx.env.model.digest
        checks.append(Check.judge(
            "lineage.digest", _short(declared), _short(actual), declared == actual,
            f"{ctx.env.display} digest equals the artifact in the registry" if declared == actual else
            f"{ctx.env.display} says {declared} but the artifact of v{mv.version} in the registry is {actual}",
            file, line))
        if mv.digest is not None:
            checks.append(Check.judge(
                "lineage.digest_tag", _short(mv.digest), _short(actual), mv.digest == actual,
                "artifact unchanged since registration" if mv.digest == actual else
                f"the artifact changed after registration: tag {mv.digest}, now {actual}", file, line))
        return checks


def _short(digest: str | None) -> str | None:
    if not digest:
        return digest
    return digest[:19] + "…" if len(digest) > 20 else digest
