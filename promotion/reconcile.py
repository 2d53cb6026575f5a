"""Reconcile: compare what git says should run with what runs, and converge on request.

Usage::

    from promotion.reconcile import reconcile
    report = reconcile(project, project.environment("prod"), converge=False)
    print(report.state, report.problems)       # "in_sync" | "drift" | "converged" | ...

Desired state is the environment file. Live state is the serving routing (the version
holding all traffic, or the most) and the registry alias named after the environment.
Drift is any difference. Converging puts 100% of traffic on the desired version (with
the digest from the environment file, so the service verifies the artifact it loads)
and moves the alias.

Converging is never a way into an environment: it only restores what a verified record
put there (:mod:`promotion.rollout.authority`). When the environment file names
something else than the last record (a merge not yet rolled out, or one pushed past the
gates), that is a rollout pending: reported, left to the rollout, which judges it. When
the last record matches the file but does not put it in place, or the records do not
verify, nothing moves either. A canary of the desired version that is still below 100%
is a rollout in progress: reported, never converged, so reconcile cannot race the
rollout controller.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from promotion.errors import Error, ServiceError

if TYPE_CHECKING:  # pragma: no cover
    from promotion.traffic.base import TrafficBackend


# a converge waits this long for the data plane to show the new weights
APPLY_TIMEOUT_S = 30.0


class State(str, enum.Enum):
    IN_SYNC = "in_sync"
    """Live routing and registry alias match the environment file."""
    DRIFT = "drift"
    """They differ, and nothing was changed."""
    CONVERGED = "converged"
    """They differed; routing and alias were set to the desired version and re-read."""
    ROLLOUT_IN_PROGRESS = "rollout_in_progress"
    """The desired version is a canary below 100%: the rollout controller owns it."""
    ROLLOUT_PENDING = "rollout_pending"
    """The environment file changed since the last record: the rollout judges it; nothing changed."""
    UNRECORDED = "unrecorded"
    """No verified record puts the desired version in place: nothing changed."""
    UNKNOWN = "unknown"
    """Live state could not be read; fail closed: counts as drift."""

    @property
    def drifted(self) -> bool:
        return self is not State.IN_SYNC


@dataclass
class Report:
    """The outcome for one environment."""

    environment: str
    model: str
    desired_version: int
    desired_digest: str
    state: State = State.IN_SYNC
    live_routes: dict[int, float] | None = None
    live_champion: int | None = None
    alias: int | None = None
    applied: bool = True  # the data plane serves the split it was given (each worker, or observed traffic)
    generation: int | None = None
    problems: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    record: str | None = None  # the verified record that puts the desired version in place

    def as_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment, "model": self.model,
            "desired": {"version": self.desired_version, "digest": self.desired_digest, "record": self.record},
            "live": {"routes": {str(k): v for k, v in (self.live_routes or {}).items()} if self.live_routes is not None else None,
                     "champion": self.live_champion, "alias": self.alias},
            "state": self.state.value, "drift": self.state.drifted,
            "problems": self.problems, "actions": self.actions,
        }


def parse_routes(data: Any) -> dict[int, float]:
    """{version: weight} from a backend's weights (a mapping), ``{"routes": {"1": 95.0, ...}}``
    or an object with ``.routes``."""
    if isinstance(data, dict) and "routes" not in data:
        data = {"routes": data}
    routes = data.get("routes") if isinstance(data, dict) else getattr(data, "routes", None)
    if not isinstance(routes, dict):
        raise ServiceError(f"routing has no routes mapping: {str(data)[:200]}")
    try:
        return {int(k): float(v) for k, v in routes.items()}
    except (TypeError, ValueError) as exc:
        raise ServiceError(f"routing has a malformed routes mapping: {routes!r}") from exc


def champion(routes: dict[int, float]) -> int | None:
    """The version holding all traffic, else the most; None when there is none or a tie."""
    live = {v: w for v, w in routes.items() if w > 0}
    if not live:
        return None
    top = max(live.values())
    leaders = [v for v, w in live.items() if w == top]
    return leaders[0] if len(leaders) == 1 else None


def backend_for(env) -> "TrafficBackend":
    """The traffic backend serving ``env`` (see :mod:`promotion.traffic`)."""
    from promotion.traffic import backend_for as traffic_backend

    return traffic_backend(env)


def reconcile(project, env, *, converge: bool = False, backend: "TrafficBackend | None" = None, registry=None) -> Report:
    """Compare ``env``'s file with live routing and alias; converge when asked and safe.

    Safe means: a verified record puts the file's version and digest in place (see the
    module docstring); otherwise the report says why and nothing is changed.
    """
    from promotion._internal.paths import refuse_tracked_state
    from promotion.registry import Registry
    from promotion.rollout.authority import recorded_state

    # the embedded registry lives in the state folder: never one committed to the repository
    refuse_tracked_state(project.root, Error)
    report = Report(env.name, env.model.name, env.model.version, env.model.digest)
    backend = backend or backend_for(env)
    registry = registry or Registry.for_root(project.root, env.tracking_uri)
    want = env.model.version
    recorded = recorded_state(project, env)
    if recorded.authorised:
        report.record = recorded.record.name

    _read_live(report, backend, registry)
    if report.state is State.UNKNOWN:
        if not recorded.authorised:
            report.problems.insert(0, recorded.reason)
        return report
    if not recorded.authorised:
        # never converge towards what no record put here; say what differs all the same
        report.state = State.ROLLOUT_PENDING if recorded.pending else State.UNRECORDED
        report.problems.append(recorded.reason)
        report.problems.extend(_differences(report, env, want))
        return report
    weight = report.live_routes.get(want, 0.0)
    if 0 < weight < 100:
        report.state = State.ROLLOUT_IN_PROGRESS
    report.problems.extend(_differences(report, env, want))
    if not report.problems:
        return report
    report.state = State.DRIFT if report.state is State.IN_SYNC else report.state
    if not converge or report.state is State.ROLLOUT_IN_PROGRESS:
        return report

    try:
        if report.live_routes != {want: 100.0} or not report.applied:
            backend.prepare(want, env.model.digest)
            backend.verify(backend.set_weights({want: 100.0}), max(APPLY_TIMEOUT_S, backend.apply_timeout_s))
            report.actions.append(f"routing: 100% to version {want}")
        if report.alias != want:
            registry.set_alias(env.model.name, env.name, want)
            report.actions.append(f"registry: alias {env.name!r} -> {want}")
    except Error as exc:
        report.problems.append(f"converge failed: {exc.diagnostics()}")
        return report
    # trust what reads back, not what was written
    before = list(report.problems)
    report.problems = []
    _read_live(report, backend, registry)
    if report.state is State.UNKNOWN or report.live_champion != want or report.alias != want:
        report.state = State.DRIFT
        report.problems = before + ["converge did not take: " + "; ".join(report.problems or ["live state unchanged"])]
    else:
        report.state = State.CONVERGED
        report.problems = before
    return report


def _differences(report: Report, env, want: int) -> list[str]:
    """What live routing and alias do differently from git, one line each."""
    out = []
    weight = report.live_routes.get(want, 0.0)
    if 0 < weight < 100:
        out.append(f"routing: version {want} is a canary at {weight:g}%; the rollout is still "
                   "running (or stopped: run the rollout again or roll back)")
    elif report.live_champion != want:
        out.append(f"routing: version {report.live_champion} serves "
                   f"{_weight(report.live_routes, report.live_champion)}, git wants {want}")
    if report.alias != want:
        out.append(f"registry: alias {env.name!r} points to {report.alias}, git wants {want}")
    if not report.applied:
        out.append(f"routing: the data plane does not serve the split it was given (generation "
                   f"{report.generation}): a worker is behind, or the traffic observed does not fit it")
    return out


def _read_live(report: Report, backend: "TrafficBackend", registry) -> None:
    try:
        current = backend.current()
        report.live_routes = parse_routes(current.weights)
        report.live_champion = champion(report.live_routes)
        report.applied, report.generation = current.applied, current.generation
    except Error as exc:
        report.state = State.UNKNOWN
        report.problems.append(f"routing: cannot read live state ({exc.diagnostics()})")
    try:
        report.alias = registry.alias(report.model, report.environment)
    except Error as exc:
        report.state = State.UNKNOWN
        report.problems.append(f"registry: cannot read alias {report.environment!r} ({exc.diagnostics()})")


def _weight(routes: dict[int, float] | None, version: int | None) -> str:
    if version is None:
        return "no clear majority" if routes else "nothing"
    return f"{routes[version]:g}%"


def _fmt_routes(routes: dict[int, float]) -> str:
    return ", ".join(f"v{v} at {w:g}%" for v, w in sorted(routes.items()))


def markdown(reports: list[Report]) -> str:
    """The job summary: one table row per environment, then the problems."""
    lines = ["### Reconcile: git vs live", "",
             "| environment | desired | live routing | alias | state |", "|---|---|---|---|---|"]
    for r in reports:
        routes = _fmt_routes(r.live_routes) if r.live_routes else "unknown"
        lines.append(f"| {r.environment} | {r.model} v{r.desired_version} | {routes} | "
                     f"{r.alias if r.alias is not None else 'none'} | {r.state.value} |")
    for r in reports:
        for p in r.problems:
            lines.append(f"- **{r.environment}**: {p}")
        for a in r.actions:
            lines.append(f"- **{r.environment}** converged: {a}")
    return "\n".join(lines)
