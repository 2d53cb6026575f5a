"""The REST client, CODEOWNERS matching and the reporting formats, against the fake."""

from __future__ import annotations

import pytest

from promotion.errors import GitHubError, UsageError
from promotion.gates.base import Check, GateReport, GateResult, Verdict
from promotion.github import codeowners, report
from promotion.github.client import Forbidden, GitHubClient, RateLimited
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


# -- rate limits and errors, as GitHub sends them ---------------------------------------

class Sleeps(list):
    """Records the waits instead of sleeping (the waits themselves are what is asserted)."""

    def __call__(self, seconds):
        self.append(seconds)


def test_every_response_carries_rate_limit_headers(gh):
    import requests

    for path, token in (("/repos/acme/models/pulls/7", "test-token"), ("/repos/acme/models/pulls/99", "test-token"),
                        ("/repos/acme/models/pulls/7", "wrong")):
        resp = requests.get(gh.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset",
                "x-ratelimit-resource"} <= {k.lower() for k in resp.headers}, resp.status_code


def test_link_header_has_first_prev_next_last_like_github(gh):
    import requests

    for i in range(5):
        gh.add_comment(7, "bob", f"c{i}")
    resp = requests.get(gh.url + "/repos/acme/models/issues/7/comments", params={"per_page": 2, "page": 2},
                        headers={"Authorization": "Bearer test-token"}, timeout=5)
    assert set(resp.links) == {"first", "prev", "next", "last"}
    assert resp.links["last"]["url"].endswith("per_page=2&page=3")
    assert [c["body"] for c in GitHubClient("test-token", gh.url).paginate("/repos/acme/models/issues/7/comments",
                                                                          {"per_page": 2})] == [f"c{i}" for i in range(5)]


def test_exhausted_rate_limit_is_waited_out_until_the_reset():
    with GitHubFake() as fake:
        fake.add_pull(7)
        fake.exhaust(reset_in=1)
        client = GitHubClient("test-token", fake.url, max_wait=10)
        assert client.get("/repos/acme/models/pulls/7")["number"] == 7
        assert 0 < client.waited <= 3 and len(fake.requests) == 2


def test_rate_limit_past_the_budget_blocks_naming_the_reset_time(gh):
    from datetime import datetime, timezone

    gh.exhaust(reset_in=3600)
    sleeps = Sleeps()
    client = GitHubClient("test-token", gh.url, max_wait=60, sleep=sleeps)
    with pytest.raises(RateLimited) as caught:
        client.get("/repos/acme/models/pulls/7")
    reset = datetime.fromtimestamp(caught.value.reset_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"403 rate limit exhausted (core: 1000 of 1000 used); resets at {reset}" in caught.value.message
    assert "past the 60 s this run waits" in caught.value.message
    assert sleeps == [] and len(gh.requests) == 1


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_honours_retry_after(gh, status):
    gh.secondary_limit(retry_after=7, status=status)
    sleeps = Sleeps()
    client = GitHubClient("test-token", gh.url, max_wait=60, sleep=sleeps)
    assert client.get("/repos/acme/models/pulls/7")["number"] == 7
    assert sleeps == [7.0]


def test_waits_add_up_to_one_budget(gh):
    gh.secondary_limit(retry_after=40, times=2)
    sleeps = Sleeps()
    client = GitHubClient("test-token", gh.url, max_wait=60, sleep=sleeps)
    with pytest.raises(RateLimited, match="retry-after 40 s"):
        client.get("/repos/acme/models/pulls/7")
    assert sleeps == [40.0]


def test_secondary_limit_without_retry_after_waits_a_minute(gh):
    gh.secondary_limit(retry_after=None)
    sleeps = Sleeps()
    assert GitHubClient("test-token", gh.url, sleep=sleeps).get("/repos/acme/models/pulls/7")["number"] == 7
    assert sleeps == [60.0]


def test_forbidden_without_rate_limit_signs_is_a_permission_error(gh):
    gh.fail(r"/pulls/7$", status=403, body='{"message": "Resource not accessible by integration"}')
    sleeps = Sleeps()
    with pytest.raises(Forbidden, match=r"403 Resource not accessible by integration \(check GITHUB_TOKEN"):
        GitHubClient("test-token", gh.url, sleep=sleeps).get("/repos/acme/models/pulls/7")
    assert sleeps == [] and len(gh.requests) == 1


def test_validation_errors_are_shown(gh):
    client = GitHubClient("test-token", gh.url)
    with pytest.raises(GitHubError, match=r"POST /repos/acme/models/issues: 422 Validation Failed: Issue.title missing_field$"):
        client.post("/repos/acme/models/issues", {"body": "no title"})
    gh.fail(r"/rulesets$", status=422, body='{"message": "Validation Failed", "errors": ["Name must be unique", '
                                            '{"resource": "Ruleset", "code": "custom", "message": "bad rule"}]}')
    with pytest.raises(GitHubError, match=r"422 Validation Failed: Name must be unique; Ruleset: bad rule$"):
        client.post("/repos/acme/models/rulesets", {"name": "x"})


def test_bad_wait_budget_is_bad_input(monkeypatch):
    monkeypatch.setenv("PROMOTION_GITHUB_RATE_LIMIT_WAIT", "nan")
    with pytest.raises(UsageError, match=r"\$PROMOTION_GITHUB_RATE_LIMIT_WAIT: must be a number of seconds >= 0"):
        GitHubClient.from_env()
    monkeypatch.setenv("PROMOTION_GITHUB_RATE_LIMIT_WAIT", "5")
    assert GitHubClient.from_env().max_wait == 5


def test_issues_list_includes_pull_requests(gh):
    gh.add_issue("an issue")
    listed = GitHubClient("test-token", gh.url).paginate("/repos/acme/models/issues")
    assert [(i["number"], "pull_request" in i) for i in listed] == [(8, False), (7, True)]
