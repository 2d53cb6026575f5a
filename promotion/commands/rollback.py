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
    from promotion.rollback import rollback

    proj = project(args)
    result = rollback(proj, args.env, reason=args.reason, to=args.to,
                      log=(lambda *_: None) if args.json else print)
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
