"""``promotion audit <env>``: replay git history of an environment and verify every record."""

from __future__ import annotations

import sys

from promotion.commands._common import emit_json

HELP = ("replay git history of an environment: timeline, signatures, hash chain, hand edits, governance "
        "changes, registry alias; exit 1 on any violation")


def add_arguments(parser) -> None:
    parser.add_argument("environment", help="environment name (environments/<name>.yaml)")
    parser.add_argument("--at", metavar="TIME", help="also say what ran at TIME (ISO 8601, UTC unless a zone is given)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--online", action="store_true",
                        help="also compare keyless records with the transparency log (Rekor)")
    parser.add_argument("--no-registry", action="store_true",
                        help="do not compare the registry alias with the last record")


def run(args) -> int:
    from promotion.commands._common import append_step_summary, project
    from promotion.errors import UsageError
    from promotion.records.audit import audit
    from promotion.records.statement import parse_time

    at = None
    if args.at:
        try:
            at = parse_time(args.at)
        except ValueError:
            raise UsageError(f"--at {args.at!r}: not an ISO 8601 time (e.g. 2025-03-01T12:00:00Z)") from None
    proj = project(args)
    registry = None if args.no_registry else _registry(proj, args.environment)
    report = audit(proj.root, args.environment, at=at, registry=registry, online=args.online)
    if args.json:
        emit_json(report.to_dict())
    else:
        text = _render(report)
        print(text)
        append_step_summary("```\n" + text + "\n```")
    for v in report.violations:
        if not args.json:
            print(f"violation: {v.text()}", file=sys.stderr)
    return 0 if report.ok else 1


class _NoRegistry:
    """Stands in for a registry that is not there: every read says why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def alias(self, name, alias):
        from promotion.errors import RegistryError

        raise RegistryError(self.why)

    version = alias


def _registry(proj, env_name: str):
    """The registry the environment uses, without creating an embedded store that is not there."""
    from pathlib import Path

    from promotion.errors import Error
    from promotion.registry import Registry

    try:
        tracking_uri = proj.environment(env_name).tracking_uri
    except Error:
        tracking_uri = None  # the audit reports the file itself
    registry = Registry.for_root(proj.root, tracking_uri)
    if registry.uri.startswith("sqlite:///") and not Path(registry.uri[len("sqlite:///"):]).exists():
        return _NoRegistry(f"no registry at {registry.uri} (set MLFLOW_TRACKING_URI)")
    return registry


def _render(report) -> str:
    lines = [f"audit {report.environment}: {report.records} record(s), HEAD {report.head[:12]}", ""]
    header = ("WHEN", "COMMIT", "ACTION", "MODEL", "VER", "APPROVERS", "KEY", "SIGNER", "STATUS")
    rows = [header]
    for e in report.timeline:
        version = e.get("version")
        rows.append((
            e.get("when") or "-", (e.get("commit") or "-")[:12], e["action"], e.get("model") or "-",
            "-" if version is None else str(version), ",".join(a for a in e.get("approvers") or [] if a) or "-",
            ",".join(e.get("keys") or []) or "-", e.get("signer") or "-",
            e["status"] + (f" ({e['note']})" if e.get("note") else ""),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    if report.at is not None:
        lines.append("")
        run_, want = report.at["running"], report.at["desired"]
        if run_:
            lines.append(f"at {report.at['time']}: {run_['model']} v{run_['version']} was running "
                         f"({run_['action']} record {run_['record']} of {run_['since']}, approvers "
                         f"{', '.join(a for a in run_['approvers'] if a) or 'none'}, signed by {run_['signer']})")
        else:
            lines.append(f"at {report.at['time']}: no record says what ran in {report.environment}")
        if want:
            lines.append(f"   git desired state then: {want['model']} v{want['version']} (commit {want['commit'][:12]})")
    lines.append("")
    for g in report.governance:
        lines.append(f"governance change: {', '.join(g['fields'])} in commit {g['commit'][:12]} by {g['author']} "
                     f"({g['subject'][:80]})")
    for p in report.pending:
        lines.append(f"pending: {p['model']} v{p['version']} set in commit {p['commit'][:12]} has no record yet (rollout not run)")
    for name, check in sorted(report.checks.items()):
        lines.append(f"{name.replace('_', ' ')}: {check['status']} ({check['note']})")
    if report.ok:
        lines.append("ok: every record verifies, the chain is intact and every change is explained")
    else:
        lines.append(f"FAIL: {len(report.violations)} violation(s)")
    return "\n".join(lines)
