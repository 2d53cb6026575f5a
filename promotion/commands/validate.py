"""``promotion validate``: check every environment and policy file against its schema."""

from __future__ import annotations

import sys

from promotion.commands._common import project

HELP = "check every environment and policy file; one line per problem, exit 2 if any"


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    proj = project(args)
    problems = proj.validate_all()
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 2
    print(f"ok: {len(proj.environment_names())} environment file(s) and their policies are valid")
    return 0
