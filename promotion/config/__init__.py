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
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from promotion._internal import safeload, yamlio
from promotion.errors import ConfigError, UsageError

ENV_DIR = "environments"
POLICY_DIR = "policies"
# An environment name becomes a file name (environments/<name>.yaml), a records folder and
# rollout state files, so it can hold nothing a path could use (no /, \, .., -x, NUL).
# The schemas' `environment` fields use the same pattern (a test keeps them equal).
ENV_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
_ENV_NAME = re.compile(ENV_NAME_PATTERN)
# Several models in one environment: environments/<env>/<model>.yaml, named "<env>/<model>"
# (a *target*: its records live in environments/records/<env>/<model>/). The model part is
# the registered model's name, which must be a file name that cannot climb (no /, no leading dot).
MODEL_FILE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_MODEL_FILE = re.compile(MODEL_FILE_PATTERN)
_RESERVED_STAGES = ("records",)  # environments/records/ holds the records of every environment
# environments/records/keys/ holds the signing keys: no environment's records may live there
_RESERVED_NAMES = ("keys",)


def check_environment_name(name: object) -> str:
    """``name`` if it is a valid environment name, else :class:`UsageError` (exit 2), one line.

    Valid: a lowercase letter, then up to 30 lowercase letters, digits or ``-``; or such a
    name, ``/`` and a model's name (letters, digits, ``_ . -``, not starting with a dot),
    for one of several models in an environment. Every place that turns a name from the
    user into a path calls this first.
    """
    if isinstance(name, str):
        stage, sep, model = name.partition("/")
        if _ENV_NAME.fullmatch(stage) and stage not in _RESERVED_NAMES and \
                (not sep or (_MODEL_FILE.fullmatch(model) and stage not in _RESERVED_STAGES)):
            return name
    shown = repr(name[:64]) + ("..." if len(name) > 64 else "") if isinstance(name, str) else repr(name)
    raise UsageError(f"environment {shown}: not an environment name (a lowercase letter, then up to 30 "
                     "lowercase letters, digits or '-'; optionally '/' and a model name)")


def environment_of_path(rel: str) -> str | None:
    """The environment a repository path is the file of (``environments/prod.yaml`` ->
    ``prod``, ``environments/prod/fraud-detector.yaml`` -> ``prod/fraud-detector``), or None."""
    if not rel.startswith(ENV_DIR + "/") or not rel.endswith(".yaml") or rel == f"{ENV_DIR}/trust.yaml":
        return None
    name = rel[len(ENV_DIR) + 1:-len(".yaml")]
    try:
        return check_environment_name(name)
    except UsageError:
        return None


def file_key(name: str) -> str:
    """``name`` as one file name in a flat state folder (``prod/fraud-detector`` ->
    ``prod+fraud-detector``; neither part of a name can hold ``+``)."""
    return check_environment_name(name).replace("/", "+")


def stage_of(name: str) -> str:
    """The environment part of a name: ``prod`` for ``prod`` and for ``prod/fraud-detector``."""
    return name.split("/", 1)[0]


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
# The gates' defaults (recall >= 0.95, FPR <= 0.02, PSI < 0.2, ...) and the schema of each
# gates.<name> section live with each gate (promotion.gates: GATES, each class's `defaults`
# and `schema`); the policy schema's `gates` section is composed from that registry.


@lru_cache(maxsize=None)
def schema(kind: str) -> dict:
    """The JSON Schema for ``kind`` (``environment`` or ``policy``).

    The policy's ``gates`` section is composed from the gate registry
    (:func:`promotion.gates.settings_schema`): each gate's ``schema`` describes its section.
    """
    text = resources.files("promotion.config").joinpath(f"schemas/{kind}.schema.json").read_text()
    doc = json.loads(text)
    if kind == "policy":
        from promotion.gates import settings_schema

        doc["properties"]["gates"] = {**doc["properties"]["gates"], **settings_schema()}
    return doc


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


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


@lru_cache(maxsize=None)
def _finite_validator_class():
    from jsonschema import Draft202012Validator, validators

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({
        # NaN compares False with every bound, so a schema `minimum` would let it through
        # and a NaN threshold would switch its check off: non-finite is not a number here
        "number": lambda c, v: Draft202012Validator.TYPE_CHECKER.is_type(v, "number") and not _nonfinite(v),
        "integer": lambda c, v: Draft202012Validator.TYPE_CHECKER.is_type(v, "integer") and not _nonfinite(v),
    })
    return validators.extend(Draft202012Validator, {"pattern": _pattern}, type_checker=checker)


@lru_cache(maxsize=None)
def ecma_pattern(pattern: str) -> "re.Pattern[str]":
    """``pattern`` compiled with JSON Schema's (ECMA 262) meaning of a final ``$``: the end of the text.

    Python's ``$`` also matches before a final newline, so ``^[a-z]+$`` would accept
    ``"prod\\n"`` (an environment name, a header name, a digest with a line break).
    """
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator, pattern, instance, schema_node):
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not ecma_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def schema_validator(schema_doc: dict):
    """A Draft 2020-12 validator of ``schema_doc`` whose ``number`` and ``integer`` exclude NaN and ±inf.

    Every schema of the package (environment, policy, record predicate) is checked
    through this, so a field added later is covered without saying so.
    """
    return _finite_validator_class()(schema_doc)


def nonfinite_paths(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths of every NaN or infinite number in ``value`` (nested dicts and lists)."""
    found, stack = [], [(value, path)]
    while stack:
        item, at = stack.pop()
        if _nonfinite(item):
            found.append(at)
        elif isinstance(item, dict):
            stack.extend((v, at + (k,)) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, at + (i,)) for i, v in enumerate(item))
    return found


def validate_document(doc: yamlio.Located, kind: str) -> list[str]:
    """All schema problems of ``doc`` as ``file:line path: message`` lines.

    A non-finite number is a problem wherever it is, even under a field the schema
    leaves open.
    """
    if not isinstance(doc.data, dict):
        return [f"{doc.file}:{doc.line_of(())} (document): must be a mapping"]
    validator = schema_validator(schema(kind))
    bad_numbers = set(nonfinite_paths(doc.data))
    found = [(tuple(p), "must be a finite number", doc.line_of(p)) for p in bad_numbers]
    for error in validator.iter_errors(doc.data):
        if error.validator in ("if", "allOf") or tuple(error.absolute_path) in bad_numbers:
            continue
        path, at = tuple(error.absolute_path), tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # the line of the first unknown key, not of the mapping holding it
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})), key=str)
            at = path + (extra[0],) if extra else path
        found.append((path, _message(error), doc.line_of(at)))
    found.sort(key=lambda f: (f[2], list(map(str, f[0]))))
    return [f"{doc.file}:{line} {yamlio.dotted(path) or '(document)'}: {message}" for path, message, line in found]


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int
    digest: str


@dataclass(frozen=True)
class Serving:
    """``serving`` of an environment file: which traffic backend (``kind``) and its block.

    ``settings`` is the kind's validated block as written (each backend reads its own
    fields from it, see :mod:`promotion.traffic`); it is never modified.
    """

    kind: str
    settings: dict = field(default_factory=dict, hash=False)

    def get(self, key: str, default: Any = None) -> Any:
        """One field of the block, or ``default``."""
        return self.settings.get(key, default)


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
    serving: Serving = field(default_factory=lambda: Serving("bentoml"))
    # the ``metrics`` block as written: each metrics provider reads its own fields from it
    metrics_settings: dict = field(default_factory=dict, hash=False, compare=False)

    def line_of(self, *path) -> int:
        """Line of a field path in the file, for annotations."""
        return yamlio.Located(None, self.display, self.lines).line_of(path)

    def admin_token(self) -> str | None:
        return os.environ.get(self.admin_token_env) or None

    @property
    def stage(self) -> str:
        """The environment this file promotes into (``prod`` also for ``prod/<model>``):
        its policy's ``environment``, its registry alias, its GitHub environment."""
        return stage_of(self.name)

    @property
    def nested(self) -> bool:
        """One of several models of its environment (``environments/<env>/<model>.yaml``)."""
        return "/" in self.name


@dataclass(frozen=True)
class Step:
    weight: float
    hold_s: float = 0.0
    min_requests: int = 0
    max_s: float = 300.0
    pause: bool = False  # hold the previous step's weights until resumed (or aborted); max_s bounds it


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
    # who approves a governance change (promotion.governance); None: the policy names nobody
    governance: dict[str, Any] | None = None
    # notification sinks (promotion.notify.base.SinkSettings), in the policy's order
    notify: tuple = ()
    # lifecycle hooks (promotion.hooks.Hook) by stage: pre_rollout, during_step, post_promotion
    hooks: dict = field(default_factory=dict, hash=False)
    # rollout.experiment (strategy: experiment): weights, kpi, min_effect, max_duration_s
    experiment: dict[str, Any] | None = field(default=None, hash=False)
    # rollout.probation: watch the promoted version at 100% (promotion.rollout.probation)
    probation: dict[str, Any] | None = field(default=None, hash=False)
    # promotion_path.requires_probation: the source environment's probation_passed record is needed
    requires_probation: bool = False

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


# Fields holding a URL the tools send requests (and tokens) to.
URL_FIELDS = (("serving", "endpoint"), ("serving", "admin"), ("metrics", "url"), ("registry", "tracking_uri"))


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    import ipaddress

    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def url_problem(value: str) -> str | None:
    """Why ``value`` may not be used as an endpoint, or None: plain http only to loopback."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return None  # e.g. sqlite:/// or file: for the registry; the schema covers the others
    if not host:
        return f"{value!r} has no host"
    if parts.username or parts.password:
        return "must not carry credentials in the URL (use the token variables)"
    if scheme == "http" and not is_loopback(host):
        return (f"must be https:// ({host} is not a loopback host; plain http would send tokens and "
                "results in clear text)")
    return None


def load_environment(path: Path, root: Path) -> Environment:
    """Parse and validate an environment file.

    Besides the schema: ``serving.endpoint``, ``serving.admin`` (Envoy's admin interface),
    ``metrics.url`` and ``registry.tracking_uri`` must be https unless their host is a
    loopback address. ``serving.kind`` (default ``bentoml``) picks the traffic backend;
    each kind's fields are its own schema block.
    """
    display = _display(path, root)
    doc = yamlio.load(path, display)
    problems = validate_document(doc, "environment")
    nested = path.parent.resolve() != (Path(root) / ENV_DIR).resolve()  # environments/<env>/<model>.yaml
    expected = path.parent.name if nested else path.stem
    if not problems and doc.data["environment"] != expected:
        where = "the folder name" if nested else "the file name"
        problems.append(f"{doc.where(('environment',))}: must be {expected!r} ({where})")
    if not problems and nested and doc.data["model"]["name"] != path.stem:
        problems.append(f"{doc.where(('model', 'name'))}: must be {path.stem!r} (the file name: one file per "
                        f"model in {ENV_DIR}/{expected}/)")
    if not problems:
        for field_path in URL_FIELDS:
            value = (doc.data.get(field_path[0]) or {}).get(field_path[1])
            problem = url_problem(value) if isinstance(value, str) else None
            if problem:
                problems.append(f"{doc.where(field_path)}: {problem}")
    if problems:
        raise ConfigError(problems)
    d = doc.data
    serving, metrics = d["serving"], d["metrics"]
    endpoint = serving["endpoint"].rstrip("/")
    return Environment(
        name=f"{d['environment']}/{path.stem}" if nested else d["environment"], path=path, display=display,
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
        serving=Serving(serving.get("kind", "bentoml"), json.loads(json.dumps(serving))),
        metrics_settings=json.loads(json.dumps(metrics)),
    )


def load_policy(path: Path, root: Path) -> Policy:
    """Parse and validate a policy file, filling in the reference defaults."""
    import hashlib

    display = _display(path, root)
    raw = safeload.read_bytes(path, display)  # read once: the digest is of the bytes judged
    doc = yamlio.loads(safeload.decode(raw, display), display)
    problems = validate_document(doc, "policy")
    if problems:
        raise ConfigError(problems)
    d = doc.data
    from promotion.gates import with_defaults

    # each gate applies its own defaults: a section that names its metrics (or rates) gets
    # exactly those, so a regression policy's rmse never inherits recall or fpr
    gates = {name: with_defaults(name, settings) for name, settings in d["gates"].items()}
    rollout = d["rollout"]
    steps = _steps_of(rollout.get("steps", ()))
    if steps and steps[-1].weight != 100:
        raise ConfigError(f"{doc.where(('rollout', 'steps', len(steps) - 1, 'weight'))}: the last step must be 100")
    weights = [s.weight for s in steps]
    if weights != sorted(weights):
        raise ConfigError(f"{doc.where(('rollout', 'steps'))}: step weights must not decrease")
    slo = _merge(DEFAULT_SLO, d.get("slo"))
    notify = _notify_settings(doc)
    from promotion.hooks import hooks_of

    hooks = hooks_of(doc)
    return Policy(
        environment=d["environment"], path=path, display=display,
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        gates=gates,
        requires_record_from=(d.get("promotion_path") or {}).get("requires_record_from"),
        strategy=rollout["strategy"], steps=steps,
        exponential=rollout.get("exponential", {}),
        shadow=rollout.get("shadow"),
        experiment=rollout.get("experiment"),
        probation=rollout.get("probation"),
        requires_probation=bool((d.get("promotion_path") or {}).get("requires_probation", False)),
        interval_s=float(rollout.get("interval_s", 1.0)),
        inconclusive=rollout.get("inconclusive", "rollback"),
        slo=Slo(float(slo["error_rate_max"]), float(slo["latency_p95_ms_max"]), int(slo["min_requests"])),
        analysis=_merge(DEFAULT_ANALYSIS, d.get("analysis")),
        rollback_target=(d.get("rollback") or {}).get("target", "last_known_good"),
        governance=d.get("governance"),
        notify=notify,
        hooks=hooks,
        lines=doc.lines,
    )


PAUSE_MAX_S = 3600.0  # a pause without max_s: at most an hour undecided


def _steps_of(items) -> tuple[Step, ...]:
    """The policy's steps; a ``{pause: {max_s}}`` item holds the weight of the step before it."""
    out: list[Step] = []
    for item in items:
        if "pause" in item:
            weight = out[-1].weight if out else 0.0
            out.append(Step(weight, 0.0, 0, float((item["pause"] or {}).get("max_s", PAUSE_MAX_S)), pause=True))
        else:
            out.append(Step(**item))
    return tuple(out)


def _notify_settings(doc) -> tuple:
    """The policy's ``notify:`` sinks, typed; beyond the schema: a signing secret only for a
    webhook (the schema's name patterns already keep URL and secret variables apart, so a
    secret never travels as a URL)."""
    from promotion.notify.base import EVENTS, SinkSettings

    out, problems = [], []
    for i, item in enumerate(doc.data.get("notify") or ()):
        secret = item.get("secret_env")
        if secret and item["kind"] != "webhook":
            problems.append(f"{doc.where(('notify', i, 'secret_env'))}: only a webhook is signed; "
                            f"a {item['kind']} URL is itself the secret")
        out.append(SinkSettings(item["kind"], item["url_env"], secret, frozenset(item.get("events") or EVENTS), i))
    if problems:
        raise ConfigError(problems)
    return tuple(out)


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
        return self.root / ENV_DIR / f"{check_environment_name(name)}.yaml"

    def environment_names(self) -> list[str]:
        """Every environment file's name: ``prod`` for environments/prod.yaml, ``prod/<model>``
        for environments/prod/<model>.yaml (several models in one environment)."""
        base = self.root / ENV_DIR
        # environments/ also holds trust.yaml (who may sign records): not an environment
        names = [p.stem for p in base.glob("*.yaml") if p.name != "trust.yaml"]
        for folder in base.iterdir() if base.is_dir() else ():
            if folder.is_dir() and folder.name not in _RESERVED_STAGES and not folder.name.startswith("."):
                names += [f"{folder.name}/{p.stem}" for p in folder.glob("*.yaml")]
        return sorted(names)

    def resolve(self, name: str, model: str | None = None) -> str:
        """The environment file ``name`` means, with ``--model`` where it is ambiguous.

        ``prod`` is environments/prod.yaml when that exists, else the one model in
        environments/prod/; with several there, ``model`` (or ``prod/<model>``) picks one.
        A name that matches no file is returned as given (the command says it is unknown).
        """
        check_environment_name(name)
        if model is not None:
            if "/" in name:
                raise UsageError(f"environment {name!r} already names its model: drop --model {model}")
            check_environment_name(f"{name}/{model}")
            if self.environment_path(f"{name}/{model}").exists():
                return f"{name}/{model}"
            if self.environment_path(name).exists():
                try:
                    own = load_environment(self.environment_path(name), self.root).model.name
                except ConfigError:
                    own = None
                if own == model:
                    return name
            models = self.models_of(name)
            raise UsageError(f"environment {name!r} promotes no model {model!r} "
                             f"(it has: {', '.join(models) or 'none'})")
        if "/" in name or self.environment_path(name).exists():
            return name
        models = self.models_of(name)
        if len(models) == 1:
            return f"{name}/{models[0]}"
        if len(models) > 1:
            raise UsageError(f"environment {name!r} promotes {len(models)} models ({', '.join(models)}): "
                             f"pass --model NAME, or name it {name}/<model>")
        return name

    def models_of(self, stage: str) -> list[str]:
        """The models of environments/<stage>/ (several models in one environment)."""
        folder = self.root / ENV_DIR / check_environment_name(stage)
        return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() and stage not in _RESERVED_STAGES else []

    def counterpart(self, env: "Environment", stage: str) -> str:
        """The environment file of ``env``'s model in environment ``stage`` (the promotion
        path's source): ``<stage>/<model>`` when the model has its own file there, else ``stage``."""
        nested = f"{stage}/{env.model.name}"
        try:
            check_environment_name(nested)
        except UsageError:
            return stage
        return nested if self.environment_path(nested).exists() else stage

    def environment(self, name: str) -> Environment:
        """The validated environment ``name``; a name that is not one is :class:`UsageError`."""
        path = self.environment_path(name)
        if not path.exists() and not path.is_symlink():
            known = ", ".join(self.environment_names()) or "none"
            raise ConfigError(f"{ENV_DIR}/{name}.yaml:1 (document): no such environment (known: {known})")
        if self.root.resolve() not in path.resolve().parents:
            # a committed symlink must not make the gate read (and quote) a file of the runner
            raise ConfigError(f"{ENV_DIR}/{name}.yaml:1 (document): is a link to outside the repository")
        mixed = self.mixed_layout(stage_of(name))
        if mixed:
            raise ConfigError(f"{ENV_DIR}/{name}.yaml:1 (document): {mixed}")
        return load_environment(path, self.root)

    def mixed_layout(self, stage: str) -> str | None:
        """Why ``stage`` is ambiguous, or None: one model (environments/<stage>.yaml) or
        several (environments/<stage>/<model>.yaml), never both (their records would mix)."""
        if self.models_of(stage) and self.environment_path(stage).exists():
            return (f"{ENV_DIR}/{stage}.yaml and {ENV_DIR}/{stage}/ both exist: an environment promotes one model "
                    f"({ENV_DIR}/{stage}.yaml) or several ({ENV_DIR}/{stage}/<model>.yaml), not both")
        return None

    def policy_for(self, env: Environment) -> Policy:
        if not env.policy_path:
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: this environment names no policy")
        path = (self.root / env.policy_path).resolve()
        if self.root.resolve() not in path.parents:
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: must stay inside the repository")
        if not path.exists():
            raise ConfigError(f"{env.display}:{env.line_of('policy')} policy: {env.policy_path} does not exist")
        policy = load_policy(path, self.root)
        if policy.environment != env.stage:
            raise ConfigError(f"{policy.display}:{policy.line_of('environment')} environment: is {policy.environment!r} but {env.display} uses it")
        return policy

    def records_dir(self, env: str) -> Path:
        return self.root / ENV_DIR / "records" / check_environment_name(env)

    def validate_all(self) -> list[str]:
        """Every problem in every environment and policy file and the trust file (empty when all are valid)."""
        problems: list[str] = []
        seen_policies: set[Path] = set()
        held: dict[tuple[str, str], str] = {}
        for name in self.environment_names():
            try:
                check_environment_name(name)
            except UsageError:
                problems.append(f"{ENV_DIR}/{name}.yaml:1 (document): the file name is not an environment name "
                                "(a lowercase letter, then up to 30 lowercase letters, digits or '-'; in a "
                                f"folder {ENV_DIR}/<env>/, the registered model's name)")
                continue
            try:
                env = self.environment(name)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            other = held.setdefault((env.stage, env.model.name), env.display)
            if other != env.display:
                # both would move the same registry alias and claim the same traffic
                problems.append(f"{env.display}:{env.line_of('model', 'name')} model.name: {env.model.name!r} is "
                                f"already promoted into {env.stage} by {other}")
            if env.policy_path:
                seen_policies.add((self.root / env.policy_path).resolve())  # its problems are reported once
                try:
                    self.policy_for(env)
                except ConfigError as exc:
                    problems.extend(exc.problems)
        for path in sorted((self.root / POLICY_DIR).rglob("*.yaml")):
            if path.resolve() in seen_policies:
                continue
            try:
                load_policy(path, self.root)
            except ConfigError as exc:
                problems.extend(exc.problems)
        problems.extend(self._trust_problems())
        return problems

    def _trust_problems(self) -> list[str]:
        """Problems of ``environments/trust.yaml`` (it decides whose records count)."""
        from promotion.errors import Error
        from promotion.records.trust import Trust

        try:
            Trust.load(self.root)
        except ConfigError as exc:
            return exc.problems
        except Error as exc:
            return [exc.diagnostics()]
        return []
