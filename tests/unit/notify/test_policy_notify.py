"""The policy's ``notify:`` block: only PROMOTION_NOTIFY_* variables; errors name file, line
and field and exit 2 before anything runs."""

from __future__ import annotations

import pytest

from promotion.cli import main
from promotion.config import Project

GOOD = """
notify:
  - kind: slack
    url_env: PROMOTION_NOTIFY_SLACK_URL
    events: [rollback, promoted]
  - kind: webhook
    url_env: PROMOTION_NOTIFY_WEBHOOK_URL
    secret_env: PROMOTION_NOTIFY_WEBHOOK_SECRET
"""


def _with(repo, block: str) -> int:
    path = repo / "policies" / "prod.yaml"
    before = path.read_text()
    path.write_text(before + block)
    return len(before.splitlines())  # "notify:" is on this line + 2


def test_a_valid_block_becomes_typed_sink_settings(repo):
    _with(repo, GOOD)
    proj = Project(repo)
    sinks = proj.policy_for(proj.environment("prod")).notify
    assert [(s.kind, s.url_env, s.secret_env) for s in sinks] == [
        ("slack", "PROMOTION_NOTIFY_SLACK_URL", None),
        ("webhook", "PROMOTION_NOTIFY_WEBHOOK_URL", "PROMOTION_NOTIFY_WEBHOOK_SECRET")]
    assert sinks[0].events == {"rollback", "promoted"} and "gate" in sinks[1].events


@pytest.mark.parametrize("block, offset, field, message", [
    # a policy must not be able to send another secret anywhere
    ("  - kind: slack\n    url_env: MLFLOW_TRACKING_TOKEN\n", 4, "notify[0].url_env", "does not match"),
    ("  - kind: slack\n    url_env: PROMOTION_ADMIN_TOKEN\n", 4, "notify[0].url_env", "does not match"),
    # nor use the signing secret as a URL
    ("  - kind: slack\n    url_env: PROMOTION_NOTIFY_WEBHOOK_SECRET\n", 4, "notify[0].url_env", "does not match"),
    ("  - kind: webhook\n    url_env: PROMOTION_NOTIFY_WEBHOOK_URL\n    secret_env: GITHUB_TOKEN\n", 5,
     "notify[0].secret_env", "does not match"),
    ("  - kind: webhook\n    url_env: PROMOTION_NOTIFY_WEBHOOK_URL\n", 3, "notify[0]", "secret_env is required"),
    ("  - kind: slack\n    url: https://hooks.slack.com/services/T/B/X\n", 3, "notify[0]", "url_env is required"),
    ("  - kind: pagerduty\n    url_env: PROMOTION_NOTIFY_PD_URL\n", 3, "notify[0].kind", "must be one of"),
    ("  - kind: slack\n    url_env: PROMOTION_NOTIFY_SLACK_URL\n    events: [rollbacks]\n", 5,
     "notify[0].events[0]", "must be one of"),
    ("  - kind: teams\n    url_env: PROMOTION_NOTIFY_TEAMS_URL\n    secret_env: PROMOTION_NOTIFY_TEAMS_SECRET\n", 5,
     "notify[0].secret_env", "only a webhook is signed"),
])
def test_bad_sinks_are_one_line_naming_file_line_and_field(repo, capsys, block, offset, field, message):
    at = _with(repo, "\nnotify:\n" + block)
    assert main(["--root", str(repo), "validate"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and all(line.startswith("policies/prod.yaml:") for line in err), err
    assert err[0].startswith(f"policies/prod.yaml:{at + offset} {field}: "), err[0]
    assert message in err[0]
    # and a rollout refuses the policy before anything moves
    assert main(["--root", str(repo), "rollout", "prod", "--quiet"]) == 2
    assert "Traceback" not in capsys.readouterr().err
