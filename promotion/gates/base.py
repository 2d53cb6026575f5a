"""The gate contract: what a gate is given, and what it must return.

A gate measures one aspect of a proposed version (the *challenger*, the version named in
the environment file) and judges it against the policy, usually relative to the
*champion* (the version that runs in the environment now). It returns one
:class:`Check` per number it judged. A gate that cannot decide returns a BLOCK check
that says why: no gate ever passes by default.

Usage::

    class MyGate:
        name = "my"

        def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
            value = ctx.challenger().metrics["auc"]
            return [Check.judge("my.auc", value, ">= 0.9", value >= 0.9, "AUC on the holdout")]
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from promotion.errors import Error, GitError

if TYPE_CHECKING:  # pragma: no cover
    from promotion.config import Environment, Policy, Project
    from promotion.registry import ModelVersion, Registry


class Verdict(str, enum.Enum):
    """The outcome of one check."""

    PASS = "PASS"
    """The number is within the policy."""
    BLOCK = "BLOCK"
    """The number breaks the policy, or could not be measured (fail closed)."""


@dataclass(frozen=True)
class Check:
    """One judged number: what was measured, against what, and the verdict."""

    name: str
    value: Any
    threshold: Any
    verdict: Verdict
    message: str
    file: str | None = None
    line: int | None = None

    @property
    def passed(self) -> bool:
        return self.verdict is Verdict.PASS

    @classmethod
    def judge(cls, name: str, value: Any, threshold: Any, ok: bool, message: str,
              file: str | None = None, line: int | None = None) -> "Check":
        """A check whose verdict is ``ok``; NaN values always block."""
        if isinstance(value, float) and math.isnan(value):
            ok, message = False, f"{message} (value is NaN)"
        return cls(name, value, threshold, Verdict.PASS if ok else Verdict.BLOCK, message, file, line)

    @classmethod
    def block(cls, name: str, reason: str, threshold: Any = None,
              file: str | None = None, line: int | None = None) -> "Check":
        """A check that could not be decided; it blocks and says why."""
        return cls(name, None, threshold, Verdict.BLOCK, reason, file, line)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


@dataclass(frozen=True)
class GateResult:
    """All checks of one gate."""

    gate: str
    checks: tuple[Check, ...]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        # a gate with no checks has decided nothing: it does not pass
        return bool(self.checks) and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class GateReport:
    """The verdict of every gate of one environment's policy on one proposal."""

    environment: str
    model: str
    challenger: int
    champion: int | None
    champion_source: str
    results: tuple[GateResult, ...]
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def checks(self) -> list[Check]:
        return [c for r in self.results for c in r.checks]

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "model": self.model,
            "challenger": self.challenger, "champion": self.champion,
            "champion_source": self.champion_source,
            "verdict": "PASS" if self.passed else "BLOCK",
            "gates": [{"gate": r.gate, "verdict": "PASS" if r.passed else "BLOCK",
                       "checks": [c.to_dict() for c in r.checks], "details": r.details}
                      for r in self.results],
            "notes": list(self.notes),
        }


class Gate(Protocol):
    """One gate: a name and one method. Settings are the policy's section, defaults merged."""

    name: str

    def evaluate(self, ctx: "GateContext", settings: Mapping[str, Any]) -> list[Check] | GateResult:
        ...


class GateContext:
    """What gates may look at, loaded lazily and once.

    The *challenger* is the version in the environment file (in a pull request: the
    proposed one). The *champion* is the registry's alias holder for the environment;
    if no version holds the alias yet, the version in the environment file on the base
    ref (``base_ref``) when that differs; otherwise there is none (a first promotion).
    """

    def __init__(self, project: "Project", env: "Environment", policy: "Policy", registry: "Registry",
                 *, approvals: Any = None, base_ref: str | None = None) -> None:
        self.project, self.env, self.policy, self.registry = project, env, policy, registry
        self.approvals = approvals
        self.base_ref = base_ref
        self.notes: list[str] = []
        self._cache: dict[Any, Any] = {}

    def _once(self, key, fn):
        if key not in self._cache:
            try:
                self._cache[key] = (True, fn())
            except Error as exc:
                self._cache[key] = (False, exc)
        ok, value = self._cache[key]
        if not ok:
            raise value
        return value

    @property
    def model(self) -> str:
        return self.env.model.name

    def challenger(self) -> "ModelVersion":
        return self._once("challenger", lambda: self.registry.version(self.model, self.env.model.version))

    def champion_version(self) -> tuple[int | None, str]:
        """(champion version or None, where it came from)."""
        return self._once("champion_version", self._find_champion)

    def _find_champion(self) -> tuple[int | None, str]:
        held = self.registry.alias(self.model, self.env.name)
        if held is not None:
            return held, f"registry alias {self.env.name!r}"
        if self.base_ref:
            version = _version_on_ref(self.project.root, self.env.path, self.base_ref)
            if version is not None and version != self.env.model.version:
                return version, f"{self.env.display} on {self.base_ref}"
        return None, "none (first promotion into this environment)"

    def champion(self) -> "ModelVersion | None":
        version, _ = self.champion_version()
        if version is None:
            return None
        return self._once(("version", version), lambda: self.registry.version(self.model, version))

    def artifact(self, version: int) -> Path:
        """Local path of a version's model directory (downloaded once)."""
        return self._once(("artifact", version), lambda: self.registry.artifact_path(self.model, version))

    def env_line(self, *path) -> tuple[str, int]:
        return self.env.display, self.env.line_of(*path)

    def policy_line(self, *path) -> tuple[str, int]:
        return self.policy.display, self.policy.line_of(*path)


def _version_on_ref(root: Path, path: Path, ref: str) -> int | None:
    """model.version of an environment file as it is on git ``ref`` (None if unreadable)."""
    from promotion._internal import yamlio
    from promotion._internal.git import Git
    from promotion.errors import ConfigError

    try:
        rel = path.resolve().relative_to(Path(root).resolve()).as_posix()
        text = Git(root)("show", f"{ref}:{rel}")
        doc = yamlio.loads(text, f"{rel}@{ref}")
        version = doc.data["model"]["version"]
    except (GitError, ConfigError, KeyError, TypeError, ValueError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None
