"""``promotion resume <env> --reason ...``: let a paused rollout go on to its next step."""

from __future__ import annotations

from promotion.commands._common import append_step_summary, emit_json, project

HELP = "resume the environment's paused rollout (the running or the next `promotion rollout` continues it)"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name")
    parser.add_argument("--reason", required=True, help="why; stored with who resumed in the signed record")
    parser.add_argument("--json", action="store_true")


def run(args) -> int:
    return decide(args, "resume")


def decide(args, action: str) -> int:
    """Record ``action`` for the environment's rollout; 1 when there is none to decide on."""
    from promotion._internal.paths import refuse_tracked_state
    from promotion.errors import RolloutError
    from promotion.registry import Registry
    from promotion.rollout.judgement import decide as record_decision
    from promotion.rollout.state import StateStore

    proj = project(args)
    env = proj.environment(args.env)
    refuse_tracked_state(proj.root, RolloutError)
    saved = StateStore(proj.root, env.name).load()
    registry = Registry.for_root(proj.root, env.tracking_uri)
    value = record_decision(registry, env, action, reason=args.reason, saved=saved)
    verb = {"resume": "resumes", "abort": "rolls back"}[action]
    line = (f"{action} {env.name}: the rollout of {value['model']} v{value['version']} {verb} at its next tick "
            f"(by {value['actor']}: {value['reason']})")
    if args.json:
        emit_json(value)
    else:
        print(line)
    append_step_summary(f"## {action.capitalize()} of the {env.name} rollout\n\n{line}")
    return 0
