"""Operator rollback: traffic back to a known-good version within a second, then the rest.

Order matters: traffic first (every worker), then the registry alias, then one commit
with the environment file and a signed rollback record. Running it twice changes nothing
the second time; running it during a rollout stops that rollout first.

Usage::

    result = rollback(project, "prod", reason="p95 alarm from on-call")     # last known good
    result = rollback(project, "prod", to=4, reason="back to the audited v4")
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promotion._internal.envfile import set_model
from promotion._internal.git import Git
from promotion._internal.paths import refuse_tracked_state
from promotion.config import Project
from promotion.errors import BadInput, RolloutError

if TYPE_CHECKING:  # pragma: no cover
    from promotion.traffic.base import TrafficBackend

LOCK_WAIT_S = 60.0


@dataclass
class RollbackResult:
    env: str
    model: str
    target: int
    previous: int
    switch_seconds: float | None
    record_path: str | None
    commit: str | None
    changed: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def choose_target(store, model: str, current: int, to: int | None) -> tuple[int, str]:
    """(version, digest) to roll back to: ``to`` if it holds a valid promotion record here,
    else the last known good: the newest promoted version not rolled back since, other
    than the current one."""
    if to is None:
        to = store.last_known_good(model, excluding=current)
        if to is None:
            raise BadInput(f"{store.env} has no earlier promoted version to roll back to; name one with --to")
    record = store.has_promotion(model, int(to))
    if record is None:
        raise BadInput(f"v{to} has no valid promotion record in {store.env}; a rollback target must have been promoted there before")
    return int(to), record.predicate["model"]["digest"]


def rollback(project: Project, env_name: str, *, reason: str, to: int | None = None,
             traffic: "TrafficBackend | None" = None, registry=None, signer=None, log=print) -> RollbackResult:
    """Roll ``env_name`` back; see the module docstring."""
    from promotion.records import RecordStore, record_related_paths, write_record
    from promotion.registry import Registry
    from promotion.rollout.state import EventLog, StateStore

    if not reason or not reason.strip():
        raise BadInput("--reason is required: say why, it goes into the signed record")
    env = project.environment(env_name)
    policy = project.policy_for(env)
    # a committed state folder would supply the registry, the key and the rollout state
    refuse_tracked_state(project.root, RolloutError)
    if traffic is None:
        from promotion.traffic import backend_for

        traffic = backend_for(env)
    registry = registry or Registry.for_root(project.root, env.tracking_uri)
    records = RecordStore(project.root, env.name)
    current = env.model.version
    target, digest = choose_target(records, env.model.name, current, to)
    store = StateStore(project.root, env.name)
    events = EventLog(store.events_path)

    # 1. traffic, at once, whatever else is running
    live = traffic.current()
    switch = None
    if live.weights != {target: 100.0} or live.mirror is not None:
        store.request_stop(reason)  # a running rollout stops at its next tick
        decided = time.monotonic()
        traffic.prepare(target, digest)
        applied = traffic.set_weights({target: 100.0})
        traffic.verify(applied, traffic.apply_timeout_s)
        switch = round(time.monotonic() - decided, 3)
        log(f"traffic   v{target}=100% applied by the data plane in {switch * 1000:.0f} ms")
    events.emit("manual_rollback_traffic", env=env.name, target=target, seconds=switch, reason=reason)

    # 2. the rest, once no rollout holds the environment
    try:
        store.acquire(wait_s=LOCK_WAIT_S)
    except RolloutError as exc:
        raise RolloutError(f"traffic is on v{target}, but {exc.message}; run the rollback again to record it") from None
    try:
        saved = store.load()
        if saved and not saved.phase.completed:
            from promotion.rollout.phases import Phase

            saved.phase, saved.reason = Phase.ABORTED, f"stopped by rollback: {reason}"
            store.save(saved)
        store.clear_stop()
        if registry.alias(env.model.name, env.name) != target:
            registry.restore_alias(env.model.name, env.name, target)
        changed = set_model(env.path, target, digest)
        result = RollbackResult(env.name, env.model.name, target, current, switch, None, None, changed)
        if not changed:
            result.notes.append(f"{env.display} already names v{target}: nothing to commit")
            return result
        mv = registry.version(env.model.name, target)
        # the change being undone: explains it in the audit even if no rollout recorded it
        rel = env.path.resolve().relative_to(project.root.resolve()).as_posix()
        source = Git(project.root)("log", "-1", "--first-parent", "--format=%H", "--", rel).strip() or None
        path = write_record(
            project.root, env.name, action="rollback", model=env.model.name, version=target, digest=digest,
            from_env=env.name, to_env=env.name, checks=[], approvers=[], steps=[], rollback_target=target,
            data_snapshot=mv.tags.get("data_snapshot"), code_commit=mv.tags.get("code_commit"),
            policy_digest=policy.digest, source_commit=source, reason=reason, replaced_version=current,
            evidence={"rejected": {"version": current, "digest": env.model.digest}, "switch_seconds": switch,
                      "manual": True},
            signer=signer,
        )
        git = Git(project.root)
        paths = [env.path, path, *record_related_paths(project.root, env.name)]
        git("add", "--", *sorted({str(p.resolve().relative_to(project.root.resolve())) for p in paths if p.exists()}))
        result.commit = git.commit(f"rollback {env.name}: {env.model.name} v{current} -> v{target}: {reason}"[:300], [])
        result.record_path = str(path)
        events.emit("manual_rollback_done", env=env.name, target=target, record=str(path), commit=result.commit)
        return result
    finally:
        store.release()
