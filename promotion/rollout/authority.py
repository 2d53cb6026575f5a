"""What the signed records allow an environment to run.

Git's environment file says what *should* run; only a verified record says that a
version was judged and put there. Reconcile and the rollout both ask this module before
they treat a version as the environment's own:

- **authorised**: the last record of the environment (its chain verified against the
  trust file) puts the file's model, version and digest in place: a promotion, or a
  rollback (or rejection) that restored that very version;
- **pending**: the file names something else than the last record put in place (or
  there is no record yet): a rollout has to judge it first;
- neither: the last record matches the file but does not authorise it (a rejection
  that had no version to restore), or the records do not verify.

The rollout also asks it what a canary is compared with (:func:`champion`): the version
the last record put in place, whatever model the environment file names now. A file
that switches the environment to another model is refused while a record says what it
serves: that changes what the environment serves, a governance decision, and a canary
can only compare versions of one model.

Usage::

    from promotion.rollout.authority import recorded_state
    state = recorded_state(project, project.environment("prod"))
    if not state.authorised:
        print(state.reason)     # "rollout pending: ..." or "no verified promote record for ..."
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from promotion.errors import RecordError, RolloutError


@dataclass(frozen=True)
class Recorded:
    """The records' view of one environment's desired state."""

    authorised: bool
    pending: bool
    record: Any  # the chain's last VerifiedRecord, or None
    reason: str | None = None


def puts_in_place(record) -> tuple[str, int, str]:
    """(model, version, digest) a record leaves running."""
    model = record.predicate["model"]
    return model["name"], int(model["version"]), model["digest"]


def authorises(record) -> bool:
    """Whether ``record`` puts its version in place: a promotion, or a rollback or
    rejection whose target is that version (one with nothing to restore names the
    rejected version instead, and authorises nothing)."""
    if record.action in ("promote", "probation_passed"):  # probation_passed: the promoted version stays
        return True
    return record.action in ("rollback", "reject") and record.predicate.get("rollback_target") == record.version


def recorded_state(project, env) -> Recorded:
    """Whether a verified record puts ``env``'s desired model, version and digest in place."""
    from promotion.records import RecordStore

    want = (env.model.name, env.model.version, env.model.digest)
    wanted = f"{env.name} v{env.model.version} {env.model.digest}"
    try:
        tip = RecordStore(project.root, env.name).latest()
    except RecordError as exc:
        return Recorded(False, False, None, f"no verified promote record for {wanted}: the records of {env.name} "
                        f"do not verify ({exc.message})")
    if tip is None:
        return Recorded(False, True, None, f"rollout pending: {env.display} names v{env.model.version} "
                        f"({env.model.digest}) and no record puts anything in {env.name} yet: run the rollout")
    if puts_in_place(tip) != want:
        _, version, digest = puts_in_place(tip)
        return Recorded(False, True, tip, f"rollout pending: {env.display} names v{env.model.version} "
                        f"({env.model.digest}), the last record {tip.name} put v{version} ({digest}) in place: "
                        "the rollout judges it first")
    if not authorises(tip):
        return Recorded(False, False, tip, f"no verified promote record for {wanted}: run the rollout "
                        f"(the last record, {tip.name}, rejected it)")
    return Recorded(True, False, tip)


@dataclass(frozen=True)
class InPlace:
    """What the environment's records put in place: the last record's model, version and
    digest, or nothing (``version`` None: no record yet, or the last one restored nothing)."""

    record: Any = None
    model: str | None = None
    version: int | None = None
    digest: str | None = None


def in_place(project, env_name: str, *, rollout_id: str | None = None) -> InPlace:
    """What the verified records of ``env_name`` put in place; RolloutError when they do not verify.

    ``rollout_id`` leaves out the records that rollout wrote (always the newest ones):
    what was in place before it began.
    """
    from promotion.records import RecordStore

    try:
        records = RecordStore(project.root, env_name).records()
    except RecordError as exc:
        raise RolloutError(f"cannot tell what {env_name} runs: its records do not verify ({exc.message})") from None
    records = list(records)
    while rollout_id and records and (records[-1].predicate.get("evidence") or {}).get("rollout_id") == rollout_id:
        records.pop()
    if not records:
        return InPlace()
    tip = records[-1]
    if not authorises(tip):
        return InPlace(tip)
    model, version, digest = puts_in_place(tip)
    return InPlace(tip, model, version, digest)


def serving(project, env) -> InPlace:
    """What ``env``'s records put in place, refused (RolloutError) when the environment
    file names another model than that: a change of what the environment serves."""
    placed = in_place(project, env.name)
    if placed.version is not None and placed.model != env.model.name:
        raise RolloutError(
            f"{env.display} names model {env.model.name!r}, but {env.name} serves {placed.model} v{placed.version} "
            f"(record {placed.record.name}): switching the model an environment serves is a governance change, "
            f"not a rollout, and a canary only compares versions of one model. Nothing was changed: register "
            f"the new model as a version of {placed.model!r}, or serve it in an environment of its own")
    return placed


def champion(ctx, placed: InPlace, alias: int | None) -> tuple[int | None, str | None]:
    """(version, digest) a new rollout of ``ctx.env`` compares its canary with.

    The version the records put in place (``placed``, from :func:`serving`), when there
    is one: the registry ``alias`` must name it too (an alias moved by hand is refused,
    not compared with). Without a record, the alias holder (None: an initial deployment).
    """
    env = ctx.env
    if placed.version is None:
        if alias is None:
            return None, None
        return alias, ctx.registry.version(env.model.name, alias).digest
    if alias != placed.version:
        names = f"v{alias}" if alias is not None else "no version"
        raise RolloutError(
            f"the registry alias {env.name!r} of {env.model.name} names {names}, but the last record "
            f"{placed.record.name} puts v{placed.version} in {env.name}: the alias was moved outside a rollout; "
            f"point it back at v{placed.version}, then run the rollout again")
    return placed.version, placed.digest
