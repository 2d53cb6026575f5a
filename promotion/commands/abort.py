"""``promotion abort <env> --reason ...``: roll the environment's running (or paused) rollout back."""

from __future__ import annotations

from promotion.commands.resume import decide

HELP = "roll back the environment's rollout in flight, paused or not (recorded with who and why)"


def add_arguments(parser) -> None:
    parser.add_argument("env", help="environment name")
    parser.add_argument("--reason", required=True, help="why; stored with who aborted in the signed record")
    parser.add_argument("--json", action="store_true")


def run(args) -> int:
    return decide(args, "abort")
