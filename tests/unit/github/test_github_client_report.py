"""The REST client, CODEOWNERS matching and the reporting formats, against the fake."""

from __future__ import annotations

import pytest

from promotion.errors import GitHubError
from promotion.gates.base import Check, GateReport, GateResult, Verdict
from promotion.github import codeowners, report
from promotion.github.client import GitHubClient
from promotion.github.context import PullRequestRef, from_env
from tests.support.github_fake import GitHubFake


@pytest.fixture
def gh():
    with GitHubFake() as fake:
        fake.add_pull(7)
        yield fake


def test_api_url_from_environment_is_honoured(gh, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", gh.url + "/api/v3")  # GitHub Enterprise Server shape
    monkeypatch.setenv("GITHUB_TOKEN", "test-token")
    client = GitHubClient.from_env()
    with pytest.raises(GitHubError, match="404"):
        client.get("/repos/acme/models/pulls/7")
    assert gh.requests[-1].path == "/api/v3/repos/acme/models/pulls/7"


def test_next_links_off_the_api_host_are_refused(gh):
    client = GitHubClient("test-token", gh.url)
    with pytest.raises(GitHubError, match="refusing to follow"):
        client.get("https://evil.example/repos/acme/models/pulls/7")
    assert gh.requests == []


def test_non_json_body_is_an_error(gh):
    gh.fail(r"/pulls/7$", status=200, body="<html>proxy</html>")
    with pytest.raises(GitHubError, match="not JSON"):
        GitHubClient("test-token", gh.url).get("/repos/acme/models/pulls/7")


def test_connection_refused_is_an_error():
    with pytest.raises(GitHubError, match="cannot connect"):
        GitHubClient("t", "http://127.0.0.1:9", timeout=1).get("/x")


def test_pr_number_comes_from_the_event_payload(tmp_path, monkeypatch):
    event = tmp_path / "event.json"
    event.write_text('{"action": "submitted", "pull_request": {"number": 12, "base": {"ref": "main"}}}')
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/models")
    monkeypatch.delenv("GITHUB_BASE_REF", raising=False)
    assert from_env() == PullRequestRef("acme", "models", 12, "main")
    assert from_env(pr=3).number == 3


@pytest.mark.parametrize("rules,path,owners", [
    ("* @all\nenvironments/prod.yaml @a @org/t\n", "environments/prod.yaml", ["a", "org/t"]),
    ("environments/prod.yaml @a\n* @all\n", "environments/prod.yaml", ["all"]),  # last match wins
    ("/environments/ @envs\n", "environments/prod.yaml", ["envs"]),
    ("environments/*.yaml @y\n", "environments/records/x.yaml", []),  # * does not cross /
    ("environments/**/x.yaml @deep\n", "environments/records/x.yaml", ["deep"]),
    ("prod.yaml @any\n", "environments/prod.yaml", ["any"]),  # no slash: any depth
    ("# comment\n\n", "environments/prod.yaml", []),
])
def test_codeowners_matching(rules, path, owners):
    assert codeowners.owners(rules, path) == owners


def _report(*checks, notes=()):
    return GateReport("prod", "fraud-detector", 2, 1, "registry alias 'prod'",
                      (GateResult("metrics", tuple(checks)),), notes)


BLOCK = Check("metrics.fpr", 0.031, "<= 0.02", Verdict.BLOCK, "fpr = 0.031, must be <= 0.02\nsecond line 100%",
              "policies/prod.yaml", 12)
PASS = Check("metrics.recall", 0.97, ">= 0.95", Verdict.PASS, "ok | fine")


def test_markdown_has_one_row_per_check():
    md = report.markdown(_report(PASS, BLOCK, notes=("local approvals: NOT FOR PRODUCTION",)))
    rows = [line for line in md.splitlines() if line.startswith("| metrics.")]
    assert rows == [
        "| metrics.recall | 0.97 | >= 0.95 | ✅ PASS | ok \\| fine |",
        "| metrics.fpr | 0.031 | <= 0.02 | ❌ BLOCK | fpr = 0.031, must be <= 0.02 second line 100% |",
    ]
    assert "❌ BLOCKED" in md and "NOT FOR PRODUCTION" in md


def test_annotations_point_at_file_and_line_and_escape():
    lines = report.annotations(_report(PASS, BLOCK))
    assert lines == ["::error file=policies/prod.yaml,line=12,title=gate metrics.fpr::"
                     "fpr = 0.031, must be <= 0.02%0Asecond line 100%25"]


def test_sticky_comment_is_created_once_then_edited(gh):
    client = GitHubClient("test-token", gh.url)
    pr = PullRequestRef("acme", "models", 7)
    gh.add_comment(7, "mallory", report.marker("prod") + " quoted by a person")  # not ours: left alone
    first = report.upsert_comment(client, pr, "prod", report.comment_body(_report(BLOCK)))
    second = report.upsert_comment(client, pr, "prod", report.comment_body(_report(PASS)))
    assert first[0] == "created" and second == ("updated", first[1])
    ours = [c for c in gh.repo.comments[7] if c["user"]["login"] == "github-actions[bot]"]
    assert len(ours) == 1 and "✅ PASS" in ours[0]["body"] and "metrics.fpr" not in ours[0]["body"]
    assert gh.repo.comments[7][0]["body"].endswith("quoted by a person")
    assert [r.method for r in gh.requests if "comments" in r.path] == ["GET", "POST", "GET", "PATCH"]
