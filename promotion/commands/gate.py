"""``promotion gate <env>``: run the policy's gates on the version the environment file names.

In a pull request (``--base REF``, by default the event's ``pull_request.base.sha``) the
gate judges with the base commit (:mod:`promotion.trusted`): only the proposed model
(name, version, digest) comes from the checkout; policy, trust file, records, registry
location, production window, endpoints and token variables come from the base. A pull
request that also changes governance is blocked (split it).

``promotion gate --governance`` judges the pull request's governance changes
(:mod:`promotion.governance`): anything besides the proposed models passes only with the
approval of the governance owners of every base policy.

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
    parser.add_argument("environment", nargs="?", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--governance", action="store_true",
                        help="judge the pull request's governance changes instead of an environment's proposal")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument("--only", action="append", metavar="GATE", help="run only this gate (repeatable)")
    parser.add_argument("--base", default=None, metavar="REF",
                        help="the base commit that judges: its policy, trust file, records, registry and endpoints "
                             "are used, only the model comes from the checkout (default in a pull request: the "
                             "event's pull_request.base.sha, else origin/$GITHUB_BASE_REF)")
    parser.add_argument("--head", default=None, metavar="REF",
                        help="the pull request's head commit, for the governance changes (default: the event's "
                             "pull_request.head.sha, else HEAD)")
    parser.add_argument("--repo", default=None, metavar="OWNER/NAME", help="GitHub repository (default: $GITHUB_REPOSITORY)")
    parser.add_argument("--pr", type=int, default=None, metavar="N",
                        help="pull request number (default: from $GITHUB_EVENT_PATH); implies GitHub approvals")
    parser.add_argument("--local-approvals", action="store_true",
                        help="use approvals recorded by `promotion approve` (never in GitHub Actions; not for production)")
    parser.add_argument("--no-comment", action="store_true", help="in GitHub Actions, do not write the PR comment")


def run(args) -> int:
    from promotion._internal.paths import state_dir
    from promotion.errors import UsageError
    from promotion.gates import run_gates
    from promotion.github.approvals import source_from_env
    from promotion.trusted import default_refs, event_shas, require_base, trusted_view

    if args.governance and args.environment:
        raise UsageError("gate: give an environment or --governance, not both")
    if not args.governance and not args.environment:
        raise UsageError("gate: name the environment (promotion gate prod) or pass --governance")
    proj = project(args)
    base, head = default_refs(args.base, args.head)
    in_pull_request = os.environ.get("GITHUB_EVENT_NAME", "").startswith("pull_request") or event_shas()[0]
    source = source_from_env(root=proj.root, state=state_dir(proj.root), repo=args.repo, pr=args.pr,
                             local=args.local_approvals)
    if args.governance:
        return _governance(proj, require_base(base), head, source, args)
    if in_pull_request:
        require_base(base)  # a pull request is never judged by its own files
    if base:
        with trusted_view(proj.root, args.environment, base, head) as view:
            report = run_gates(view.project, args.environment, approvals=source, only=args.only, view=view)
            notifier = _notifier(view.project, args.environment)  # the base's policy names the sinks
    else:
        report = run_gates(proj, args.environment, approvals=source, only=args.only)
        notifier = _notifier(proj, args.environment)
    try:
        return _finish(report, args, print_table)
    finally:
        _notify(notifier, report, proj.root, args)


def _notifier(proj, env_name: str):
    from promotion.notify import Notifier

    return Notifier.from_policy(proj.policy_for(proj.environment(env_name)))


def _notify(notifier, report, root, args) -> None:
    """The verdict to the policy's sinks (bounded; failures are one line on stderr and the summary)."""
    from promotion.errors import Error
    from promotion.github.context import from_env
    from promotion.notify.events import gate_message

    if not notifier:
        return
    try:
        ref = from_env(args.repo, args.pr)
    except Error:
        ref = None
    notifier.send(gate_message(report, root, ref.number if ref else None))
    notifier.close()


def _governance(proj, base: str, head: str | None, source, args) -> int:
    from promotion.config import Project
    from promotion.governance import detect, judge
    from promotion.trusted import base_checkout

    changes = detect(proj.root, base, head)
    with base_checkout(proj.root, changes.base) as tree:
        report = judge(Project(tree), changes, source)
    return _finish(report, args, print_governance)


def _finish(report, args, table) -> int:
    if args.json:
        emit_json(report.to_dict())
    else:
        table(report)
    for note in report.notes:
        print(note, file=sys.stderr)
    if in_github_actions():
        _report_to_github(report, args)
    return 0 if report.passed else 1


def print_table(report, file=None, head: str | None = None) -> None:
    """The verdict for people: rich on a terminal, plain aligned text otherwise."""
    from promotion.github.report import fmt_value

    out = file or sys.stdout
    if head is None:
        verdict = "PASS" if report.passed else "BLOCKED"
        champion = f"v{report.champion}" if report.champion is not None else "none"
        head = (f"gate {report.environment}: {report.model} v{report.challenger} "
                f"(champion {champion}, {report.champion_source}): {verdict}")
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


def print_governance(report, file=None) -> None:
    """The governance verdict: every change on its own line, then the checks."""
    out = file or sys.stdout
    print_table(report, out, head=report.headline)
    for change in report.changes.governance:
        print(f"  changed: {change}", file=out)


def _report_to_github(report, args) -> None:
    from promotion.errors import Error
    from promotion.github import report as gh_report
    from promotion.github.client import GitHubClient
    from promotion.github.context import from_env

    if args.governance:
        from promotion.governance import markdown

        body = markdown(report)
    else:
        body = gh_report.markdown(report)
    append_step_summary(body)
    for line in gh_report.annotations(report):
        print(line)
    if args.no_comment:
        return
    if args.governance and not report.changes.governance:
        return  # most pull requests change no governance: no comment to say so
    try:
        pr = from_env(args.repo, args.pr)
        if pr is None or pr.number is None:
            return
        if args.governance:
            text = gh_report.marker(report.environment) + "\n" + body
            if len(text) > gh_report.MAX_COMMENT:
                text = text[:gh_report.MAX_COMMENT] + "\n\n…(truncated; see the job summary)\n"
        else:
            text = gh_report.comment_body(report)
        action, comment_id = gh_report.upsert_comment(GitHubClient.from_env(), pr, report.environment, text)
        print(f"PR comment {action} (id {comment_id})", file=sys.stderr)
    except Error as exc:
        # the verdict stands; a missing comment must not turn a block into a crash
        print(f"::warning title=gate comment::could not update the pull request comment: {exc.diagnostics()}")
