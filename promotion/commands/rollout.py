"""``promotion rollout <env>``: move the environment to its desired state, safely."""

from __future__ import annotations

import contextlib
import sys

from promotion.commands._common import append_step_summary, emit_json, project

HELP = "roll the environment file's version out as a canary through the policy's steps; promote or roll back"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name (environments/<env>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the final state as JSON")
    parser.add_argument("--events", metavar="FILE", help="also append JSON-lines events to FILE")
    parser.add_argument("--max-seconds", type=float, default=None, help="give up (resumably) after this long")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def _check_arguments(args) -> None:
    """Bad arguments are one line, exit 2, before anything is planned or moved."""
    import math

    from promotion.errors import UsageError

    if args.max_seconds is not None and not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise UsageError(f"promotion rollout: --max-seconds must be a positive number of seconds, not {args.max_seconds:g}")
    if args.events:
        try:
            with open(args.events, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise UsageError(f"promotion rollout: --events {args.events}: cannot append to it "
                             f"({exc.strerror or exc})") from None


def run(args) -> int:
    from promotion.rollout import Context
    from promotion.rollout import run as run_rollout
    from promotion.rollout.report import event_line, summary_markdown

    _check_arguments(args)
    proj = project(args)
    ctx = Context.build(proj, args.env, events_file=args.events)
    view = contextlib.nullcontext()
    if not args.quiet and not args.json and sys.stdout.isatty():
        view = _live_view(ctx)  # a terminal: one table, redrawn each tick
    elif not args.quiet:
        def show(st, entry):
            line = event_line(entry)
            if line:
                print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
        ctx.listeners.append(show)
    notifier, tracker = _announcers(ctx, proj)
    try:
        with view:
            final = run_rollout(ctx, max_seconds=args.max_seconds)
    finally:
        # after every traffic action: waits at most one bounded delivery, reports what failed
        notifier.close()
        if tracker is not None:
            tracker.close()
    if final is None:
        msg = f"{args.env} already runs v{ctx.env.model.version}: nothing to roll out"
        emit_json({"env": args.env, "phase": "up_to_date", "version": ctx.env.model.version}) if args.json else print(msg)
        return 0
    append_step_summary(summary_markdown(final))
    if args.json:
        emit_json(final.to_dict())
    return 0 if final.phase.value == "promoted" else 1


def _announcers(ctx, proj):
    """The policy's notification sinks and, in a workflow run, GitHub Deployments, as listeners
    that only queue: delivery runs in the background and never holds up a traffic action."""
    from promotion.github.deployments import DeploymentTracker
    from promotion.notify import Notifier, RolloutListener

    notifier = Notifier.from_policy(ctx.policy)
    if notifier:
        ctx.listeners.append(RolloutListener(notifier, proj.root))
    tracker = DeploymentTracker.from_env(ctx.env)
    if tracker is not None:
        ctx.listeners.append(tracker)
    return notifier, tracker


@contextlib.contextmanager
def _live_view(ctx):
    """A rich Live table fed by the controller's events; the final table stays on screen."""
    from rich.console import Console
    from rich.live import Live

    from promotion.rollout.report import LiveView

    view = LiveView()
    live = Live(console=Console(), refresh_per_second=4, transient=False)

    def update(st, entry):
        live.update(view.update(st, entry), refresh=True)

    ctx.listeners.append(update)
    with live:
        yield
