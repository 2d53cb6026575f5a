"""The gate contract: what a gate is given, and what it must return.

A gate measures one aspect of a proposed version (the *challenger*, the version named in
the environment file) and judges it against the policy, usually relative to the
*champion* (the version that runs in the environment now). It returns one
:class:`Check` per number it judged. A gate that cannot decide returns a BLOCK check
that says why: no gate ever passes by default.

Each gate owns its settings: ``schema`` (the JSON Schema of its policy section
``gates.<name>``, composed into the policy schema from the registry), ``defaults`` (what a
policy that omits a setting gets) and ``Settings`` (a frozen dataclass the gate reads them
through). A new gate is one file plus one line in :data:`promotion.gates.GATES`. Gate
modules import nothing heavy at module level (numpy, pandas, mlflow inside methods):
loading a policy imports every gate module, and ``promotion validate`` must stay quick.

Usage::

    @dataclass(frozen=True)
    class MySettings:
        auc_min: float

        @classmethod
        def from_mapping(cls, m: Mapping[str, Any]) -> "MySettings":
            return cls(float(m["auc_min"]))


    class MyGate(GateSpec):
        name = "my"
        schema = {"type": "object", "additionalProperties": False,
                  "properties": {"auc_min": {"type": "number", "minimum": 0, "maximum": 1}}}
        defaults = {"auc_min": 0.9}
        Settings = MySettings

        def evaluate(self, ctx: GateContext, settings: Mapping[str, Any]) -> list[Check]:
            s = self.Settings.from_mapping(settings)
            value = ctx.challenger().metrics["auc"]
            return [Check.judge("my.auc", value, f">= {s.auc_min}", value >= s.auc_min, "AUC on the holdout")]
"""

from __future__ import annotations

import copy
import enum
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol

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
    """One gate: a name, its settings' schema and defaults, and one method.

    ``evaluate`` gets the policy's section with the defaults applied (:meth:`with_defaults`).
    """

    name: str
    schema: ClassVar[dict[str, Any]]
    defaults: ClassVar[dict[str, Any]]

    @classmethod
    def with_defaults(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        ...

    def evaluate(self, ctx: "GateContext", settings: Mapping[str, Any]) -> list[Check] | GateResult:
        ...


def merged(defaults: Mapping[str, Any], given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``defaults`` overlaid with ``given``, mappings merged key by key (both left unchanged)."""
    out = copy.deepcopy(dict(defaults))
    for key, value in (given or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class GateSpec:
    """What every gate class shares: settings are the defaults overlaid with the policy's section.

    A gate whose defaults come in groups the policy chooses among (the metrics a metrics
    section names, the rates a fairness section compares) overrides :meth:`with_defaults`
    so that naming one group drops the other defaults rather than adding to them.
    """

    name: ClassVar[str] = ""
    schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    defaults: ClassVar[dict[str, Any]] = {}

    @classmethod
    def with_defaults(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        return merged(cls.defaults, given)


class GateContext:
    """What gates may look at, loaded lazily and once.

    The *challenger* is the version in the environment file (in a pull request: the
    proposed one). The *champion* is the registry's alias holder for the environment;
    if no version holds the alias yet, the version in the environment file on the base
    (``base_model``: the base commit's file as the trusted view read it, else the file on
    git ``base_ref``) when that differs; otherwise there is none (a first promotion).

    A pull request that switches the environment to another model (a new ``model.name``)
    is judged against what runs: the champion is then a version of the base's model
    (:meth:`champion_model`), its alias holder or the base file's version, and a note says
    that two different models are compared.

    In a pull request ``project`` is the base commit (:mod:`promotion.trusted`): relative
    paths in the environment file (``drift.production_window``) resolve there.
    """

    def __init__(self, project: "Project", env: "Environment", policy: "Policy", registry: "Registry",
                 *, approvals: Any = None, base_ref: str | None = None,
                 base_model: tuple[int, str] | tuple[int, str, str] | None = None) -> None:
        self.project, self.env, self.policy, self.registry = project, env, policy, registry
        self.approvals = approvals
        self.base_ref = base_ref
        self.base_model = base_model  # (version, where[, model name]) of the base commit's environment file
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

    def champion_model(self) -> str:
        """The model the champion is a version of: the base's model (``base_model``'s name,
        else the base commit's environment file, else the file on ``base_ref``), which is
        the challenger's unless the pull request switches models."""
        return self._once("champion_model", self._find_champion_model)

    def _find_champion_model(self) -> str:
        if self.base_model is not None:
            # in a pull request env.path is the base commit's file (only the model is overlaid)
            name = self.base_model[2] if len(self.base_model) > 2 else _model_on_ref(None, self.env.path, None)[0]
        else:
            name = _model_on_ref(self.project.root, self.env.path, self.base_ref)[0] if self.base_ref else None
        return name if isinstance(name, str) and name else self.model

    def challenger_is_champion(self) -> bool:
        """Whether the proposal is what already runs (same model and version)."""
        version, _ = self.champion_version()
        return (self.champion_model(), version) == (self.model, self.env.model.version)

    def _find_champion(self) -> tuple[int | None, str]:
        name = self.champion_model()
        switch = ""
        if name != self.model:
            switch = (f" (of {name}, the model {self.env.name} serves now; the proposal switches it to "
                      f"{self.model})")
        held = self.registry.alias(name, self.env.name)
        if held is not None:
            return self._switched(held, f"registry alias {self.env.name!r}{switch}")
        if self.base_model is not None:
            version, where = self.base_model[:2]
            if version != self.env.model.version or switch:
                return self._switched(version, where + switch)
        elif self.base_ref:
            version = _model_on_ref(self.project.root, self.env.path, self.base_ref)[1]
            if version is not None and (version != self.env.model.version or switch):
                return self._switched(version, f"{self.env.display} on {self.base_ref}{switch}")
        if switch:  # what runs cannot be found: comparing with nothing would pass, so block
            raise Error(f"the proposal switches {self.env.name} from {name} to {self.model}, and no "
                        f"version of {name} is known to run there to compare with")
        return None, "none (first promotion into this environment)"

    def _switched(self, version: int, where: str) -> tuple[int, str]:
        if self.champion_model() != self.model:
            self.notes.append(f"model switch: {self.env.name} serves {self.champion_model()} v{version}; the "
                              f"challenger is {self.model} v{self.env.model.version}: checks against the champion "
                              "compare two different models")
        return version, where

    def champion(self) -> "ModelVersion | None":
        version, _ = self.champion_version()
        if version is None:
            return None
        name = self.champion_model()
        return self._once(("version", name, version), lambda: self.registry.version(name, version))

    def artifact(self, version: int, model: str | None = None) -> Path:
        """Local path of a version's model directory (downloaded once). ``model`` defaults to
        the challenger's, except for the champion's version when the champion is another
        model (a model switch)."""
        if model is None:
            model = self.model
            if version != self.env.model.version and self.champion_model() != self.model \
                    and self.champion_version()[0] == version:
                model = self.champion_model()
        return self._once(("artifact", model, version), lambda: self.registry.artifact_path(model, version))

    def env_line(self, *path) -> tuple[str, int]:
        return self.env.display, self.env.line_of(*path)

    def policy_line(self, *path) -> tuple[str, int]:
        return self.policy.display, self.policy.line_of(*path)


def _model_on_ref(root: Path | None, path: Path, ref: str | None) -> tuple[str | None, int | None]:
    """(model.name, model.version) of an environment file as it is on git ``ref`` (the file
    on disk without one); None for what cannot be read."""
    from promotion._internal import yamlio
    from promotion._internal.git import Git
    from promotion.errors import ConfigError

    try:
        if ref is None:
            text, display = path.read_text(encoding="utf-8"), str(path)
        else:
            rel = path.resolve().relative_to(Path(root).resolve()).as_posix()
            text, display = Git(root)("show", f"{ref}:{rel}"), f"{rel}@{ref}"
        model = yamlio.loads(text, display).data["model"]
        name, version = model.get("name"), model.get("version")
    except (GitError, ConfigError, OSError, KeyError, TypeError, ValueError, AttributeError):
        return None, None
    return (name if isinstance(name, str) else None,
            version if isinstance(version, int) and not isinstance(version, bool) else None)
