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
    "validate", "gate", "approve", "propose", "rollout", "rollback", "verify", "keys",
    "audit", "status", "reconcile", "serve", "github", "demo",
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
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_module", None):
            parser.print_help()
            return 2
        return int(args._module.run(args) or 0)
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
