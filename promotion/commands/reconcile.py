"""``promotion reconcile [ENV ...]``: does what runs match git? Converge when allowed.

Exit 0: every environment is in sync. Exit 1: drift (the output says whether it was
converged, is a rollout in progress or pending, has no record to converge to, or was
left alone). Exit 2: bad input. Converging only ever restores what a verified record put
in the environment (see :mod:`promotion.reconcile`).

``--list`` prints the environments as JSON (and, in a workflow, sets the step output
``environments``), so the reconcile workflow runs one job per environment, inside the
GitHub Environment of that name.

``--converge`` defaults to ``$PROMOTION_RECONCILE_CONVERGE``: ``true``/``all`` converges
every environment, a comma-separated list (``dev,staging``) only those; the reconcile
workflow sets it from a repository variable, so a team decides where drift is fixed
automatically and where a human looks first.
"""

from __future__ import annotations

import os
import sys

from promotion.commands._common import append_step_summary, emit_json, project

HELP = "compare git's desired state with live routing and registry aliases; exit 1 on drift"


def add_arguments(parser) -> None:
    parser.add_argument("environments", nargs="*", metavar="ENV", help="environments to check (default: all)")
    parser.add_argument("--converge", action="store_true", default=None,
                        help="fix drift: 100%% of traffic to the desired version, move the alias "
                             "(default: $PROMOTION_RECONCILE_CONVERGE)")
    parser.add_argument("--no-converge", dest="converge", action="store_false", help="only report")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--list", action="store_true",
                        help="only list the environments (JSON; the step output `environments` in a workflow)")
    parser.add_argument("--issue", action="store_true",
                        help="keep a GitHub issue open per drifting environment ($GITHUB_REPOSITORY, $GITHUB_TOKEN)")


def converge_allowed(name: str, flag: bool | None, setting: str | None = None) -> bool:
    """Whether to converge ``name``: the flag wins; else the comma-separated setting."""
    if flag is not None:
        return flag
    setting = (setting if setting is not None else os.environ.get("PROMOTION_RECONCILE_CONVERGE", "")).strip().lower()
    if setting in ("true", "all", "1", "yes"):
        return True
    return name.lower() in {s.strip() for s in setting.split(",") if s.strip()}


def run(args) -> int:
    from promotion.errors import UsageError
    from promotion.reconcile import markdown, reconcile

    proj = project(args)
    names = args.environments or proj.environment_names()
    if args.list:
        for name in args.environments:
            proj.environment(name)  # a name that is no environment is bad input, exit 2
        return _list(names)
    api = repo = None
    if args.issue:
        from promotion.github_setup import Api

        repo = os.environ.get("GITHUB_REPOSITORY")
        if not repo:
            raise UsageError("--issue needs $GITHUB_REPOSITORY (owner/name)")
        api = Api.from_env()
    reports = [reconcile(proj, proj.environment(n), converge=converge_allowed(n, args.converge)) for n in names]

    if args.json:
        emit_json({"drift": any(r.state.drifted for r in reports), "environments": [r.as_dict() for r in reports]})
    else:
        for r in reports:
            routes = ", ".join(f"v{v}={w:g}%" for v, w in sorted((r.live_routes or {}).items())) or "unknown"
            print(f"{r.environment}: {r.state.value}  (git: v{r.desired_version}; live: {routes}; alias: {r.alias})")
            for p in r.problems:
                print(f"  - {p}")
            for a in r.actions:
                print(f"  + converged {a}")
    append_step_summary(markdown(reports))
    if api is not None:
        _report_issues(api, repo, reports)
    drifted = [r for r in reports if r.state.drifted]
    _notify_drift(proj, drifted)
    if drifted:
        print(f"drift in {', '.join(r.environment + ' (' + r.state.value + ')' for r in drifted)}", file=sys.stderr)
    return 1 if drifted else 0


def matrix_targets(names: list[str]) -> list[dict[str, str]]:
    """One workflow matrix entry per environment file: ``target`` (the name commands take,
    ``prod/fraud-detector`` for one of several models) and ``environment`` (the GitHub
    environment whose protection rules and secrets apply: ``prod``)."""
    from promotion.config import stage_of

    return [{"target": n, "environment": stage_of(n)} for n in names]


def _list(names: list[str]) -> int:
    import json

    output = os.environ.get("GITHUB_OUTPUT")
    if output:
        with open(output, "a", encoding="utf-8") as fh:
            fh.write(f"environments={json.dumps(names)}\n")
            fh.write(f"targets={json.dumps(matrix_targets(names))}\n")
    print(json.dumps(names))
    return 0


def _report_issues(api, repo: str, reports) -> None:
    from promotion.github_setup import close_issue, upsert_issue
    from promotion.reconcile import markdown

    run_url = ""
    if os.environ.get("GITHUB_RUN_ID"):
        run_url = (f"{os.environ.get('GITHUB_SERVER_URL', 'https://github.com')}/{repo}"
                   f"/actions/runs/{os.environ['GITHUB_RUN_ID']}")
    for r in reports:
        if r.state.drifted:
            body = markdown([r]) + ("\n\nSeen by " + run_url if run_url else "") + (
                "\n\nThis issue closes itself when the environment is back in sync.")
            upsert_issue(api, repo, r.environment, body)
        else:
            close_issue(api, repo, r.environment, f"{r.environment} is back in sync with git." +
                        (f" ({run_url})" if run_url else ""))


def _notify_drift(proj, drifted) -> None:
    """Each drifting environment's policy sinks hear of it (bounded, in parallel per sink)."""
    from promotion.errors import Error
    from promotion.notify import Notifier
    from promotion.notify.events import drift_message

    notifiers = []
    for r in drifted:
        try:
            notifier = Notifier.from_policy(proj.policy_for(proj.environment(r.environment)))
        except Error:
            continue  # the reconcile report already names a policy that cannot be read
        if notifier:
            notifier.send(drift_message(r, proj.root))
            notifiers.append(notifier)
    for notifier in notifiers:
        notifier.close()
