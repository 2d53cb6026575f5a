"""The ``promotion`` command line.

Each subcommand lives in ``promotion/commands/<name>.py`` and defines ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Command modules import heavy
libraries inside ``run`` so that ``promotion --help`` stays fast.

Exit codes mean one thing each: 0 pass/done, 1 blocked or failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from promotion.errors import ConfigError, Error, UsageError

COMMANDS = (
    "validate", "gate", "approve", "propose", "rollout", "resume", "abort", "rollback", "verify", "keys",
    "audit", "status", "reconcile", "serve", "github", "demo", "init", "doctor",
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so bad arguments are one line, exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{self.prog}: {message}")


def env_default(name: str, fallback=None):
    """A default taken from the environment variable ``name``."""
    return os.environ.get(name) or fallback


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="promotion", description="Take ML models from the registry to production safely.")
    parser.add_argument("--root", default=env_default("PROMOTION_ROOT"),
                        help="repository root holding environments/ and policies/ (default: discovered from cwd)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"promotion.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"promotion.commands.{name}":
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        dests = {a.dest for a in p._actions}
        if dests & set(_ENVIRONMENT_ARGS) and "model" not in dests:
            p.add_argument("--model", metavar="NAME",
                           help="the model, where the environment promotes several (environments/<env>/<model>.yaml)")
            p.set_defaults(_environment_model=True)
        p.set_defaults(_module=module)
    return parser


# argument names that hold environment names, in every subcommand that takes one
_ENVIRONMENT_ARGS = ("environment", "env", "environments")


def _check_environment_args(args) -> None:
    """Refuse an environment argument that could name a path, before any command runs.

    Workflow inputs reach the CLI as these arguments too, so this covers them.
    """
    from promotion.config import check_environment_name

    for dest in _ENVIRONMENT_ARGS:
        value = getattr(args, dest, None)
        for name in value if isinstance(value, list) else [value] if value is not None else []:
            try:
                check_environment_name(name)
            except UsageError as exc:
                raise UsageError(f"promotion {args.command}: {exc.message}") from None


def _resolve_environment_args(args) -> None:
    """Turn each environment argument into the environment file it means: ``prod`` with
    several models in environments/prod/ needs ``--model`` (or ``prod/<model>``); a list
    of environments (``reconcile``) takes every model of such an environment."""
    from promotion.config import Project

    if not getattr(args, "_environment_model", False):
        return  # no environment argument here (init's --model names the model to scaffold)
    model = getattr(args, "model", None)
    present = [d for d in _ENVIRONMENT_ARGS if getattr(args, d, None) is not None]
    if not present:
        if model is not None:
            raise UsageError(f"promotion {args.command}: --model needs an environment")
        return
    try:
        project = Project.discover(args.root) if args.root else Project.discover()
    except ConfigError:
        return  # the command reports the missing repository itself
    for dest in present:
        value = getattr(args, dest)
        try:
            if isinstance(value, list):
                out = []
                for name in value:
                    several = model is None and "/" not in name and not project.environment_path(name).exists()
                    models = project.models_of(name) if several else []
                    out += [f"{name}/{m}" for m in models] if models else [project.resolve(name, model)]
                setattr(args, dest, out)
            else:
                setattr(args, dest, project.resolve(value, model))
        except UsageError as exc:
            raise UsageError(f"promotion {args.command}: {exc.message}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_module", None):
            parser.print_help()
            return 2
        _check_environment_args(args)
        _resolve_environment_args(args)
        return int(args._module.run(args) or 0)
    # No catch-all for RecursionError or MemoryError here: input is bounded where it is
    # parsed (promotion/_internal/safeload.py, yamlio.py), and exit 2 promises that nothing
    # changed, which a handler this far out cannot know (a rollout may have moved traffic).
    except Error as exc:
        # config problems already read "file:line path: message"
        prefix = "" if isinstance(exc, ConfigError) else "error: "
        print(prefix + exc.diagnostics(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
