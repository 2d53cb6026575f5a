"""Reporting a gate verdict where reviewers look: job summary, sticky comment, annotations.

- :func:`markdown` renders one table row per check (value, threshold, verdict); it is
  both the job summary (``GITHUB_STEP_SUMMARY``) and the body of the PR comment.
- :func:`upsert_comment` keeps one comment per environment on the pull request, found by
  a hidden HTML marker and edited in place (PATCH) instead of adding one per run.
- :func:`annotations` turns each blocking check into a ``::error file=...,line=...::``
  workflow command on the offending line of the environment or policy file.
"""

from __future__ import annotations

from typing import Any

from promotion.github.client import GitHubClient
from promotion.github.context import PullRequestRef

MARKER = "<!-- promotion-gate:{env} -->"
MAX_COMMENT = 60_000  # GitHub refuses bodies over 65,536 characters


def marker(env: str) -> str:
    return MARKER.format(env=env)


def fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _cell(text: Any) -> str:
    return fmt_value(text).replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def markdown(report, *, title: str | None = None) -> str:
    """The verdict as GitHub-flavoured markdown: a heading and one row per check."""
    verdict = "✅ PASS" if report.passed else "❌ BLOCKED"
    champion = f"v{report.champion}" if report.champion is not None else "none"
    lines = [
        f"### {title or 'Promotion gate'}: {report.model} v{report.challenger} → {report.environment} — {verdict}",
        "",
        f"Champion: {champion} ({report.champion_source}).",
        "",
        "| Check | Value | Threshold | Verdict | Details |",
        "| --- | --- | --- | --- | --- |",
    ]
    for check in report.checks:
        mark = "✅ PASS" if check.passed else "❌ BLOCK"
        lines.append(f"| {_cell(check.name)} | {_cell(check.value)} | {_cell(check.threshold)} | {mark} | {_cell(check.message)} |")
    for note in report.notes:
        lines += ["", f"> **{note}**"]
    return "\n".join(lines) + "\n"


def comment_body(report) -> str:
    body = marker(report.environment) + "\n" + markdown(report)
    if len(body) > MAX_COMMENT:
        body = body[:MAX_COMMENT] + "\n\n…(truncated; see the job summary)\n"
    return body


def upsert_comment(client: GitHubClient, pr: PullRequestRef, env: str, body: str) -> tuple[str, int]:
    """Edit this environment's gate comment on the PR, or create it. Returns (action, id)."""
    base = f"/repos/{pr.owner}/{pr.repo}"
    tag = marker(env)
    mine = None
    for comment in client.paginate(f"{base}/issues/{pr.number}/comments"):
        if not isinstance(comment, dict) or tag not in str(comment.get("body", "")):
            continue
        user = comment.get("user") or {}
        # only our own (bot) comment is edited; a person quoting the marker is left alone
        if user.get("type") == "Bot" or str(user.get("login", "")).endswith("[bot]"):
            mine = comment
    if mine is not None:
        client.patch(f"{base}/issues/comments/{mine['id']}", {"body": body})
        return "updated", int(mine["id"])
    created = client.post(f"{base}/issues/{pr.number}/comments", {"body": body})
    return "created", int(created.get("id", 0)) if isinstance(created, dict) else 0


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(report) -> list[str]:
    """``::error`` workflow commands, one per blocking check, on its file and line."""
    out = []
    for check in report.checks:
        if check.passed:
            continue
        props = []
        if check.file:
            props.append(f"file={_escape_property(check.file)}")
            if check.line:
                props.append(f"line={int(check.line)}")
        props.append(f"title={_escape_property('gate ' + check.name)}")
        out.append(f"::error {','.join(props)}::{_escape_data(check.message)}")
    return out
