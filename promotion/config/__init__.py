"""Environment and policy files: validated once, at load, into typed objects.

Usage::

    from promotion.config import Project
    project = Project.discover()               # finds the repository root
    env = project.environment("prod")          # environments/prod.yaml
    policy = project.policy_for(env)           # policies/prod.yaml
    print(env.model.version, policy.slo.latency_p95_ms_max)

Every problem is reported as ``file:line path: message`` and raises
:class:`~promotion.errors.ConfigError` (exit code 2).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from promotion._internal import yamlio
from promotion.errors import ConfigError

ENV_DIR = "environments"
POLICY_DIR = "policies"

# The reference criteria; a policy that omits a value gets these.
DEFAULT_SLO = {"error_rate_max": 0.05, "latency_p95_ms_max": 100.0, "min_requests": 50}
DEFAULT_ANALYSIS = {
    "alpha": 0.05,
    "error_rate_ratio": 1.5,
    "latency_quantile": 0.9,
    "latency_ratio": 1.5,
    "latency_min_added_ms": 0.0,
    "srm_alpha": 0.001,
}
DEFAULT_GATES = {
    "metrics": {
        "absolute": {"recall": {"min": 0.95}, "fpr": {"max": 0.02}, "latency_p95_ms": {"max": 100.0}},
        "relative": {"f1": {"min_ratio": 1.01}, "auc": {"max_drop": 0.005}},
    },
    "drift": {"psi_max": 0.2, "ks_p_min": 0.01, "prediction_psi_max": 0.2, "bins": 10, "min_rows": 500, "report_worst": 5},
    "fairness": {"segment": "segment", "tpr_gap_max": 0.03, "fpr_gap_max": 0.03},
    "schema": {"allow_added_optional": True},
    "lineage": {"required": ["data_snapshot", "code_commit", "params", "env_lock", "artifact_digest"]},
    "promotion_path": {},
    "approvals": {"required": 1, "teams": [], "codeowners": True},
}


@lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The shipped JSON Schema for ``kind`` (``environment`` or ``policy``)."""
    text = resources.files("promotion.config").joinpath(f"schemas/{kind}.schema.json").read_text()
    return json.loads(text)


def _message(error) -> str:
    v, val = error.validator, error.validator_value
    if v == "type":
        names = {"integer": "an integer", "number": "a number", "string": "a string",
                 "object": "a mapping", "array": "a list", "boolean": "true or false"}
        kinds = val if isinstance(val, list) else [val]
        return "must be " + " or ".join(names.get(k, k) for k in kinds)
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{missing} is required"
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return f"unknown field(s): {', '.join(extra)}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return f"must be {op} {val}"
    if v == "enum":
        return "must be one of " + ", ".join(repr(x) for x in val)
    if v == "const":
        return f"must be {val!r}"
    if v == "pattern":
        return f"{error.instance!r} does not match {val}"
    if v in ("minItems", "maxItems", "minProperties", "minLength"):
        return error.message
    if v == "uniqueItems":
        return "must not repeat items"
    return error.message


def validate_document(doc: yamlio.Located, kind: str) -> list[str]:
    """All schema problems of ``doc`` as ``file:line path: message`` lines."""
    from jsonschema import Draft202012Validator

    if not isinstance(doc.data, dict):
        return [f"{doc.file}:{doc.line_of(())} (document): must be a mapping"]
    validator = Draft202012Validator(schema(kind))
    problems = []
    for error in sorted(validator.iter_errors(doc.data), key=lambda e: (doc.line_of(e.absolute_path), list(map(str, e.absolute_path)))):
        if error.validator in ("if", "allOf"):
            continue
        problems.append(f"{doc.where(error.absolute_path)}: {_message(error)}")
    return problems


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    digest: str


@dataclass(frozen=True)
class Environment:
    """The desired state of one environment (``environments/<name>.yaml``)."""

    name: str
    path: Path
    display: str
    model: ModelRef
    policy_path: str | None
    endpoint: str
    admin_token_env: str
    routing_key_header: str
    metrics_source: str
    metrics_url: str
    metrics_selector: str
    tracking_uri: str | None
    production_window: str | None
    lines: dict = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, *path) -> int:
        """Line of a field path in the file, for annotations."""
        return yamlio.Located(None, self.display, self.lines).line_of(path)

    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None


@dataclass(frozen=True)
class Step:
    weight: float
    hold_s: float = 0.0
    min_requests: int = 0
    max_s: float = 300.0


@dataclass(frozen=True)
class Slo:
    error_rate_max: float
    latency_p95_ms_max: float
    min_requests: int


@dataclass(frozen=True)
class Policy:
    """How a version may enter one environment (``policies/<name>.yaml``)."""

    environment: str
    path: Path
    display: str
    digest: str
    gates: dict[str, dict[str, Any]]
    requires_record_from: str | None
    strategy: str
    steps: tuple[Step, ...]
    exponential: dict[str, Any]
    shadow: dict[str, Any] | None
    interval_s: float
    inconclusive: str
    slo: Slo
    analysis: dict[str, float]
    rollback_target: str
    lines: dict = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, *path) -> int:
        return yamlio.Located(None, self.display, self.lines).line_of(path)


def _merge(defaults: dict, given: dict | None) -> dict:
    out = json.loads(json.dumps(defaults))
    for key, value in (given or {}).items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def load_environment(path: Path, root: Path) -> Environment:
    """Parse and validate an environment file."""
    display = _display(path, root)
    doc = yamlio.load(path, display)
    problems = validate_document(doc, "environment")
    expected = path.stem
    if not problems and doc.data["environment"] != expected:
        problems.append(f"{doc.where(('environment',))}: must be {expected!r} (the file name)")
    if problems:
        raise ConfigError(problems)
    d = doc.data
    serving, metrics = d["serving"], d["metrics"]
    endpoint = serving["endpoint"].rstrip("/")
    return Environment(
        name=d["environment"], path=path, display=display,
        model=ModelRef(d["model"]["name"], d["model"]["version"], d["model"]["digest"]),
        policy_path=d.get("policy"), endpoint=endpoint,
        admin_token_env=serving.get("admin_token_env", "PROMOTION_ADMIN_TOKEN"),
        routing_key_header=serving.get("routing_key_header", "X-Routing-Key"),
        metrics_source=metrics["source"],
        metrics_url=metrics.get("url", endpoint + "/metrics"),
        metrics_selector=metrics.get("selector", ""),
        tracking_uri=(d.get("registry") or {}).get("tracking_uri"),
        production_window=(d.get("drift") or {}).get("production_window"),
        lines=doc.lines,
    )


def load_policy(path: Path, root: Path) -> Policy:
    """Parse and validate a policy file, filling in the reference defaults."""
    import hashlib

    display = _display(path, root)
    doc = yamlio.load(path, display)
    problems = validate_document(doc, "policy")
    if problems:
        raise ConfigError(problems)
    d = doc.data
    gates = {name: _merge(DEFAULT_GATES[name], settings or {}) for name, settings in d["gates"].items()}
    rollout = d["rollout"]
    steps = tuple(Step(**s) for s in rollout.get("steps", ()))
    if steps and steps[-1].weight != 100:
        raise ConfigError(f"{doc.where(('rollout', 'steps', len(steps) - 1, 'weight'))}: the last step must be 100")
    weights = [s.weight for s in steps]
    if weights != sorted(weights):
        raise ConfigError(f"{doc.where(('rollout', 'steps'))}: step weights must not decrease")
    slo = _merge(DEFAULT_SLO, d.get("slo"))
    return Policy(
        environment=d["environment"], path=path, display=display,
        digest="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
        gates=gates,
        requires_record_from=(d.get("promotion_path") or {}).get("requires_record_from"),
        strategy=rollout["strategy"], steps=steps,
        exponential=rollout.get("exponential", {}),
        shadow=rollout.get("shadow"),
        interval_s=float(rollout.get("interval_s", 1.0)),
        inconclusive=rollout.get("inconclusive", "rollback"),
        slo=Slo(float(slo["error_rate_max"]), float(slo["latency_p95_ms_max"]), int(slo["min_requests"])),
        analysis=_merge(DEFAULT_ANALYSIS, d.get("analysis")),
        rollback_target=(d.get("rollback") or {}).get("target", "last_known_good"),
        lines=doc.lines,
    )


@dataclass
class Project:
    """A promotion repository: ``environments/``, ``policies/`` and records under one root."""

    root: Path

    @classmethod
    def discover(cls, start: str | Path | None = None) -> "Project":
        """The nearest directory at or above ``start`` (or ``$PROMOTION_ROOT``) holding ``environments/``."""
        start = Path(start or os.environ.get("PROMOTION_ROOT") or Path.cwd()).resolve()
        for candidate in (start, *start.parents):
            if (candidate / ENV_DIR).is_dir():
                return cls(candidate)
        raise ConfigError(f"{start}:1 (document): no {ENV_DIR}/ directory here or above; run inside a promotion repository or set PROMOTION_ROOT")

    def environment_path(self, name: str) -> Path:
        return self.root / ENV_DIR / f"{name}.yaml"

    def environment_names(self) -> list[str]:
        # environments/ also holds trust.yaml (who may sign records): not an environment
        return sorted(p.stem for p in (self.root / ENV_DIR).glob("*.yaml") if p.name != "trust.yaml")

    def environment(self, name: str) -> Environment:
        path = self.environment_path(name)
        if not path.is_file():
            known = ", ".join(self.environment_names()) or "none"
            raise ConfigError(f"{ENV_DIR}/{name}.yaml:1 (document): no such environment (known: {known})")
        return load_environment(path, self.root)

    def policy_for(self, env: Environment) -> Policy:
        if not env.policy_path:
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: this environment names no policy")
        path = (self.root / env.policy_path).resolve()
        if self.root.resolve() not in path.parents:
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: must stay inside the repository")
        if not path.is_file():
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: {env.policy_path} does not exist")
        policy = load_policy(path, self.root)
        if policy.environment != env.name:
            raise ConfigError(f"{policy.display}:{policy.line_of('environment')} environment: is {policy.environment!r} but {env.display} uses it")
        return policy

    def records_dir(self, env: str) -> Path:
        return self.root / ENV_DIR / "records" / env

    def validate_all(self) -> list[str]:
        """Every problem in every environment and policy file (empty when all are valid)."""
        problems: list[str] = []
        seen_policies: set[Path] = set()
        for name in self.environment_names():
            try:
                env = self.environment(name)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            if env.policy_path:
                seen_policies.add((self.root / env.policy_path).resolve())  # its problems are reported once
                try:
                    self.policy_for(env)
                except ConfigError as exc:
                    problems.extend(exc.problems)
        for path in sorted((self.root / POLICY_DIR).glob("*.yaml")):
            if path.resolve() in seen_policies:
                continue
            try:
                load_policy(path, self.root)
            except ConfigError as exc:
                problems.extend(exc.problems)
        return problems
