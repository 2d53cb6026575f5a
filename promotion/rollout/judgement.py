"""Manual judgement of a running rollout: resume a pause, or abort (roll back).

A pause step holds the rollout (its weights still analysed) until an operator decides.
The decision must reach the process that holds the rollout, which may run on another
machine (a workflow job): so both sides meet in the registry, which every job of an
environment already reaches with its own credentials. Two tags on the canary's version:

- ``promotion.paused.<env>``, written by the controller when a pause begins:
  ``{"rollout", "step", "since", "max_s"}``;
- ``promotion.judgement.<env>``, written by ``promotion resume`` / ``promotion abort``:
  ``{"action": "resume"|"abort", "rollout", "step", "reason", "actor", "at"}``.

A judgement acts only on the rollout (id) and, for a resume, the pause (step) it names,
so a decision given for one pause never releases another, nor a later rollout of the
same version. What the controller reads is bounded and checked; anything else is no
decision. Who decided, and why, goes into the rollout's record (``interventions``).

Usage::

    from promotion.rollout.judgement import decide
    decide(registry, "prod", "fraud-detector", 7, "resume", reason="load test ok", state=saved)
"""

from __future__ import annotations

import getpass
import json
import os
import time
from typing import TYPE_CHECKING, Any

from promotion.errors import BadInput, Error, RolloutError

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState

PAUSED = "promotion.paused.{env}"
JUDGEMENT = "promotion.judgement.{env}"
REASON_MAX = 500
ACTIONS = ("resume", "abort")
_VALUE_MAX = 4000  # below MLflow's tag value limit


def actor() -> str:
    """Who decides: the workflow's actor in GitHub Actions, else the local user."""
    who = os.environ.get("GITHUB_ACTOR") if os.environ.get("GITHUB_ACTIONS") == "true" else None
    if not who:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = f"uid {os.getuid()}"
    return who[:100]


def _tag(registry, model: str, version: int, key: str) -> dict | None:
    raw = registry.version(model, version).tags.get(key)
    if not raw or len(raw) > _VALUE_MAX:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def announce_pause(ctx: "Context", st: "RolloutState", max_s: float) -> None:
    """Say where the rollout waits, for ``promotion resume`` on another machine; a failure
    only means the resume must come from where the state is."""
    value = {"rollout": st.id, "step": st.step, "since": st.paused_since, "max_s": max_s}
    try:
        ctx.registry.set_tag(st.model, st.canary, PAUSED.format(env=st.env), json.dumps(value))
    except Error as exc:
        ctx.emit(st, "cannot_decide", error=f"cannot announce the pause in the registry: {exc.message}")


def read(ctx: "Context", st: "RolloutState") -> dict | None:
    """The operator's decision for ``st`` now (a resume of its current pause, or an abort),
    or None; a registry that cannot be read is no decision (the pause's deadline bounds it)."""
    try:
        value = _tag(ctx.registry, st.model, st.canary, JUDGEMENT.format(env=st.env))
    except Error:
        return None
    if not value or value.get("rollout") != st.id or value.get("action") not in ACTIONS:
        return None
    if value["action"] == "resume" and value.get("step") != st.step:
        return None
    reason, who = value.get("reason"), value.get("actor")
    if not isinstance(reason, str) or not isinstance(who, str):
        return None
    return {"action": value["action"], "reason": reason[:REASON_MAX], "actor": who[:100],
            "at": value.get("at") if isinstance(value.get("at"), (int, float)) else None, "step": st.step + 1}


def target(registry, env, saved: "RolloutState | None") -> tuple[str, int, str, int | None, bool]:
    """(model, canary, rollout id, step, paused) of the rollout an operator decides on:
    the saved state of this machine when it has one in flight, else the pause the
    registry announces for the environment file's version. RolloutError without one."""
    if saved is not None and not saved.phase.completed:
        if saved.model == env.model.name and saved.canary == env.model.version:
            return saved.model, saved.canary, saved.id, saved.step, saved.paused_since is not None
    if registry.alias(env.model.name, env.name) == env.model.version:
        raise RolloutError(f"no rollout of {env.name} is in flight: it already runs {env.model.name} "
                           f"v{env.model.version}")
    paused = _tag(registry, env.model.name, env.model.version, PAUSED.format(env=env.name))
    if not paused or not isinstance(paused.get("rollout"), str) or not isinstance(paused.get("step"), int):
        raise RolloutError(f"no rollout of {env.name} ({env.model.name} v{env.model.version}) is paused: nothing "
                           "to decide on here")
    return env.model.name, env.model.version, paused["rollout"], paused["step"], True


def decide(registry, env, action: str, *, reason: str, saved: "RolloutState | None" = None) -> dict[str, Any]:
    """Record an operator's ``resume`` or ``abort`` for the environment's rollout; the
    controller acts on it at its next tick. Returns what was recorded."""
    if action not in ACTIONS:
        raise BadInput(f"unknown decision {action!r}")
    if not reason or not reason.strip():
        raise BadInput(f"--reason is required: say why, it goes into the signed record")
    if len(reason) > REASON_MAX:
        raise BadInput(f"--reason: at most {REASON_MAX} characters")
    model, version, rollout, step, paused = target(registry, env, saved)
    if action == "resume" and not paused:
        where = f"step {step + 1}" if step is not None and step >= 0 else "its first step"
        raise RolloutError(f"the rollout of {env.name} ({model} v{version}) is not paused (at {where}): nothing to "
                           "resume; `promotion abort` rolls it back")
    value = {"action": action, "rollout": rollout, "step": step, "reason": " ".join(reason.split()),
             "actor": actor(), "at": round(time.time(), 3)}
    registry.set_tag(model, version, JUDGEMENT.format(env=env.name), json.dumps(value))
    return {**value, "model": model, "version": version}
