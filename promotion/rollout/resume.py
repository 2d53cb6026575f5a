"""Resuming a saved rollout: the saved state is a claim, checked before anything acts.

The state file says which version replaces which, how far the canary got and what the
gates found. Whoever can write that file (a ``.promotion/`` committed to the repository,
a restored cache, a hand edit) could otherwise name the champion to roll back to, the
canary to promote and the checks and approvers its record carries. So a rollout that
resumes a saved state:

- checks it against what it cannot forge (:func:`check_saved`): the version it replaces
  must be the one the environment's verified records put in place before it began (or,
  with no record yet, the registry alias holder, with the registry's digest); otherwise
  it refuses to resume, before any traffic moves;
- runs the gates again, in this process, before the canary gets traffic or a promote
  record is written (:func:`needs_judging`, :func:`judge`): their checks and approvers
  replace the saved ones, and if they block, the canary is rolled back.

So a record's checks and approvers are always those of gates this process ran.

Usage (inside :func:`promotion.rollout.controller.start`)::

    check_saved(ctx, saved)
    if needs_judging(ctx, saved) and judge(ctx, saved):
        begin_rollback(ctx, saved, "gates block on resume: ...")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from promotion.errors import RolloutError
from promotion.rollout import actions
from promotion.rollout.authority import in_place
from promotion.rollout.phases import Phase

if TYPE_CHECKING:  # pragma: no cover
    from promotion.rollout.controller import Context
    from promotion.rollout.state import RolloutState


def _refuse(ctx: "Context", st: "RolloutState", why: str) -> RolloutError:
    return RolloutError(f"{ctx.store.path}: {why}: it was not saved by a rollout of this repository, so it is not "
                        "resumed (nothing moved); remove it to start over")


def check_saved(ctx: "Context", st: "RolloutState") -> None:
    """Refuse (RolloutError) a saved in-flight state the records and the registry do not explain."""
    env = ctx.env.name
    if st.env != env:
        raise _refuse(ctx, st, f"the saved rollout is one of {st.env!r}, not of {env!r}")
    placed = in_place(ctx.project, env, rollout_id=st.id)
    claimed = f"{st.model} v{st.champion}" if st.champion is not None else "nothing"
    if placed.version is not None:
        if (st.model, st.champion, st.champion_digest) != (placed.model, placed.version, placed.digest):
            raise _refuse(ctx, st, f"the saved rollout replaces {claimed}, but the records of {env} put "
                          f"{placed.model} v{placed.version} ({placed.digest}) in place ({placed.record.name})")
    else:
        alias = ctx.registry.alias(st.model, env)
        # the alias names the champion until the promotion moves it to the canary
        if alias not in (st.champion, st.canary):
            held = f"v{alias}" if alias is not None else "no version"
            raise _refuse(ctx, st, f"the saved rollout replaces {claimed}, but {env} has no record and its registry "
                          f"alias names {held}")
        if st.champion is not None and ctx.registry.version(st.model, st.champion).digest != st.champion_digest:
            raise _refuse(ctx, st, f"the saved digest of {claimed} is not the registry's")


def needs_judging(ctx: "Context", st: "RolloutState") -> bool:
    """Whether ``st`` is about to give the canary traffic, or a promote record, on gate
    results this process did not compute."""
    if ctx.judged == st.id:
        return False
    if st.phase in (Phase.SHADOW, Phase.PROGRESSING):
        return True
    # a promote record this rollout already wrote (verified, naming its canary) was judged then
    return st.phase is Phase.PROMOTING and actions.recorded_decision(ctx, st, "promote") is None


def judge(ctx: "Context", st: "RolloutState") -> list[dict]:
    """Run the policy's gates on ``st``'s canary now; their checks and approvers replace
    the state's. Returns the checks that do not pass (empty: go on)."""
    checks = (ctx.gates or actions.pre_rollout_checks)(ctx, st)
    st.checks = checks
    st.approvers = actions.approvers_from(ctx)
    ctx.judged = st.id
    return [c for c in checks if c.get("verdict") != "pass"]


def judge_on_resume(ctx: "Context", st: "RolloutState") -> list[dict]:
    """:func:`judge`, with a failure to run the gates as RolloutError (nothing moved)."""
    from promotion.rollout.transitions import one_line

    try:
        return judge(ctx, st)
    except Exception as exc:  # noqa: BLE001 - whatever stops the gates stops the resume, in one line
        raise RolloutError(f"cannot run the gates again before resuming the rollout of {st.env}: {one_line(exc)}; "
                           "nothing moved; run the rollout again") from None


def blocked_reason(blocked: list[dict]) -> str:
    """One line naming each blocking check."""
    return "; ".join(f"{c.get('name')}: {c.get('message', '')}" for c in blocked)
