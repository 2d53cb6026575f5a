"""When the policy's lifecycle hooks run in a rollout, and what their failure does.

- ``pre_rollout``: after the gates pass, before any user traffic moves. The canary is
  loaded next to the champion at weight 0, so a ``canary: true`` HTTP hook (a smoke test
  pinned to it by the router's admin token) reaches it while users still reach only the
  champion. A failure rejects the version (a ``reject`` record, the file reverted) and
  unloads the canary.
- ``during_step``: once per step, once its weights apply and its window has begun (a
  load test runs against the split users see). A failure rolls back.
- ``post_promotion``: once the canary serves everything, before the alias moves and the
  promote record is written. A failure rolls back (the champion is still loaded at 0%).

Each result goes into the state (``st.hooks``) and so into the record. A hook that
passed is not run again when a crashed rollout resumes; one that did not finish is.
Hooks are run one at a time, synchronously: while one runs the tick waits, bounded by
the hook's ``timeout_s`` (the schema caps it at an hour).

Usage (inside the controller's phases)::

    if not lifecycle.pre_rollout(ctx, st):
        return   # rejected
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promotion.hooks import HookContext, run_hook
from promotion.rollout.transitions import begin_rollback, reject, set_routes

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState


def _context(ctx: "Context", st: "RolloutState", step: int | None = None) -> HookContext:
    return HookContext(env=st.env, model=st.model, version=st.canary, champion=st.champion,
                       endpoint=ctx.env.endpoint, root=ctx.project.root, admin_token=ctx.env.admin_token(),
                       step=step, weight=st.weight if step is not None else None)


def _done(st: "RolloutState", stage: str, name: str, step: int | None) -> bool:
    return any(h.get("stage") == stage and h.get("name") == name and h.get("step") == step
               and h.get("verdict") == "pass" for h in st.hooks)


def _run(ctx: "Context", st: "RolloutState", stage: str, step: int | None = None) -> dict | None:
    """Run the stage's hooks that have not passed yet; the first failure's result, or None."""
    for hook in ctx.policy.hooks.get(stage, ()):
        if _done(st, stage, hook.name, step):
            continue
        ctx.emit(st, "hook_started", stage=stage, name=hook.name, kind=hook.kind, step=step)
        result = run_hook(hook, _context(ctx, st, step)).to_dict()
        st.hooks.append(result)
        ctx.store.save(st)
        ctx.emit(st, "hook", **{k: v for k, v in result.items() if k != "step"}, step=step)
        if result["verdict"] != "pass":
            return result
    return None


def _why(result: dict, where: str) -> str:
    return f"{result['stage']} hook {result['name']!r} failed{where}: {result['message']}"


def pre_rollout(ctx: "Context", st: "RolloutState") -> bool:
    """Run the pre-rollout hooks; False when one failed and the version was rejected."""
    if not ctx.policy.hooks.get("pre_rollout"):
        return True
    loaded = False
    if st.champion is not None:
        # the canary ready to answer pinned requests, users still all on the champion
        set_routes(ctx, st, {st.champion: 100.0, st.canary: 0.0})
        loaded = True
    failed = _run(ctx, st, "pre_rollout")
    if failed is None:
        return True
    reject(ctx, st, _why(failed, " before any user traffic moved"))
    st.evidence = {"hook": failed}
    # unload the canary (the rollback tick applies the champion alone)
    st.routes_applied = not loaded
    return False


def during_step(ctx: "Context", st: "RolloutState") -> bool:
    """Run the step's hooks once; False when one failed (rolled back) or one ran (the
    step is measured from the next tick)."""
    hooks = ctx.policy.hooks.get("during_step", ())
    if not hooks or all(_done(st, "during_step", h.name, st.step) for h in hooks):
        return True
    failed = _run(ctx, st, "during_step", st.step)
    if failed is not None:
        begin_rollback(ctx, st, _why(failed, f" at step {st.step + 1} ({st.weight:g}%)"), evidence={"hook": failed})
    return False


def post_promotion(ctx: "Context", st: "RolloutState") -> bool:
    """Run the post-promotion hooks (unless this rollout's promote record is already
    written); False when one failed and the rollback began."""
    from promotion.rollout.actions import recorded_decision

    if not ctx.policy.hooks.get("post_promotion") or st.record_path:
        return True
    if all(_done(st, "post_promotion", h.name, None) for h in ctx.policy.hooks["post_promotion"]):
        return True
    if recorded_decision(ctx, st, "promote") is not None:
        return True
    failed = _run(ctx, st, "post_promotion")
    if failed is None:
        return True
    begin_rollback(ctx, st, _why(failed, " with the canary serving 100%"), evidence={"hook": failed})
    return False
