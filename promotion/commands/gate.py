"""``promotion gate <env>``: run the policy's gates on the version the environment file names.

Exit 0 when every gate passes, 1 when any blocks (or cannot decide), 2 on bad input.
Prints a table (``--json`` for machines). In GitHub Actions it also writes the job
summary, updates one sticky comment on the pull request and annotates the offending
lines of the environment and policy files.
"""

from __future__ import annotations

import os
import sys

from promotion.commands._common import append_step_summary, emit_json, in_github_actions, project

HELP = "run the policy's gates on the proposed version; exit 0 pass, 1 blocked, 2 bad input"


def add_arguments(parser) -> None:
    parser.add_argument("environment", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--only", action="append", metavar="GATE", help="run only this gate (repeatable)")
    parser.add_argument("--base", default=None, metavar="REF",
                        help="git ref of the target branch, to find the champion when no version holds the "
                             "environment's alias (default: origin/$GITHUB_BASE_REF in a pull request)")
    parser.add_argument("--repo", default=None, metavar="OWNER/NAME", help="GitHub repository (default: $GITHUB_REPOSITORY)")
    parser.add_argument("--pr", type=int, default=None, metavar="N",
                        help="pull request number (default: from $GITHUB_EVENT_PATH); implies GitHub approvals")
    parser.add_argument("--local-approvals", action="store_true",
                        help="use approvals recorded by `promotion approve` (never in GitHub Actions; not for production)")
    parser.add_argument("--no-comment", action="store_true", help="in GitHub Actions, do not write the PR comment")


def run(args) -> int:
    from promotion._internal.paths import state_dir
    from promotion.gates import run_gates
    from promotion.github.approvals import source_from_env

    proj = project(args)
    state = state_dir(proj.root)
    source = source_from_env(root=proj.root, state=state, repo=args.repo, pr=args.pr, local=args.local_approvals)
    base = args.base or (f"origin/{os.environ['GITHUB_BASE_REF']}" if os.environ.get("GITHUB_BASE_REF") else None)
    report = run_gates(proj, args.environment, approvals=source, base_ref=base, only=args.only)

    if args.json:
        emit_json(report.to_dict())
    else:
        print_table(report)
    for note in report.notes:
        print(note, file=sys.stderr)
    if in_github_actions():
        _report_to_github(report, args)
    return 0 if report.passed else 1


def print_table(report, file=None) -> None:
    """The verdict for people: rich on a terminal, plain aligned text otherwise."""
    from promotion.github.report import fmt_value

    out = file or sys.stdout
    verdict = "PASS" if report.passed else "BLOCKED"
    champion = f"v{report.champion}" if report.champion is not None else "none"
    head = f"gate {report.environment}: {report.model} v{report.challenger} (champion {champion}, {report.champion_source}): {verdict}"
    rows = [(c.name, fmt_value(c.value), fmt_value(c.threshold), c.verdict.value, c.message) for c in report.checks]
    if out.isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=head, show_lines=False)
            for col in ("check", "value", "threshold", "verdict", "details"):
                table.add_column(col, overflow="fold")
            for r in rows:
                style = "green" if r[3] == "PASS" else "bold red"
                table.add_row(r[0], r[1], r[2], f"[{style}]{r[3]}[/]", r[4])
            Console(file=out).print(table)
            return
        except ImportError:
            pass
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(("check", "value", "threshold", "verdict"))]
    print(head, file=out)
    print("  ".join(h.ljust(w) for h, w in zip(("check", "value", "threshold", "verdict"), widths)) + "  details", file=out)
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:4], widths)) + "  " + r[4], file=out)


def _report_to_github(report, args) -> None:
    from promotion.errors import Error
    from promotion.github import report as gh_report
    from promotion.github.client import GitHubClient
    from promotion.github.context import from_env

    append_step_summary(gh_report.markdown(report))
    for line in gh_report.annotations(report):
        print(line)
    if args.no_comment:
        return
    try:
        pr = from_env(args.repo, args.pr)
        if pr is None or pr.number is None:
            return
        action, comment_id = gh_report.upsert_comment(GitHubClient.from_env(), pr, report.environment,
                                                      gh_report.comment_body(report))
        print(f"PR comment {action} (id {comment_id})", file=sys.stderr)
    except Error as exc:
        # the verdict stands; a missing comment must not turn a block into a crash
        print(f"::warning title=gate comment::could not update the pull request comment: {exc.diagnostics()}")
