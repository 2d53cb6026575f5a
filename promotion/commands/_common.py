"""Helpers shared by command modules (kept light: no heavy imports)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def project(args):
    from promotion.config import Project

    return Project.discover(args.root) if args.root else Project.discover()


def emit_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def append_step_summary(markdown: str) -> None:
    """Append to the GitHub Actions job summary when running there."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip() + "\n\n")
