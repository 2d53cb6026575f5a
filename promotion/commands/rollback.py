"""``promotion rollback <env>``: traffic back to a known-good version now, then record it."""

from __future__ import annotations

from promotion.commands._common import append_step_summary, emit_json, project

HELP = "flip traffic back to the last known good (or --to VERSION) within a second; commit and sign it"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name")
    parser.add_argument("--to", type=int, metavar="VERSION", help="a version with a valid promotion record here")
    parser.add_argument("--reason", required=True, help="why; stored in the signed record")
    parser.add_argument("--json", action="store_true")


def run(args) -> int:
    from promotion.errors import Error
    from promotion.rollback import rollback

    proj = project(args)
    notifier = _notifier(proj, args.env)
    try:
        result = rollback(proj, args.env, reason=args.reason, to=args.to,
                          log=(lambda *_: None) if args.json else print)
    except Error as exc:
        if notifier:
            from promotion.notify import Message

            notifier.send(Message("rollback", env=args.env, title=f"{args.env}: operator rollback failed",
                                  summary=exc.message, severity="danger"))
            notifier.close()
        raise
    try:
        # after traffic moved and the record is written: nothing here can slow the switch
        _announce(proj, result, args.reason, notifier)
    finally:
        if notifier:
            notifier.close()
    if args.json:
        emit_json(result.to_dict())
    else:
        for note in result.notes:
            print(note)
        if result.commit:
            print(f"rolled back {args.env} to v{result.target}; record {result.record_path} in commit {result.commit[:10]}")
    append_step_summary(f"## Rollback of {args.env}\n\nv{result.previous} -> v{result.target}: {args.reason}\n\n"
                        f"Traffic switched in {result.switch_seconds}s; commit `{result.commit}`")
    return 0


def _notifier(proj, env_name: str):
    """The environment policy's sinks; a policy that cannot be read has none (the rollback
    itself reports that policy's problem)."""
    from promotion.errors import Error
    from promotion.notify import Notifier

    try:
        return Notifier.from_policy(proj.policy_for(proj.environment(env_name)))
    except Error:
        return None


def _announce(proj, result, reason: str, notifier) -> None:
    """Tell the sinks and GitHub Deployments, once traffic moved and the record is written."""
    from promotion.github.deployments import DeploymentTracker
    from promotion.notify.events import manual_rollback_message

    if not result.changed and result.switch_seconds is None:
        return  # nothing happened: nobody needs to hear about it
    if notifier:
        notifier.send(manual_rollback_message(result, reason, proj.root))
    env = proj.environment(result.env)
    tracker = DeploymentTracker.from_env(env)
    if tracker is not None:
        tracker.manual_rollback(result, env.model.digest, reason)
        tracker.close()
