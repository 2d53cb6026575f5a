"""Every approval rule, against GitHub-shaped payloads from the loopback fake."""

from __future__ import annotations

import pytest

from promotion.errors import GitHubError
from promotion.github.approvals import GitHubApprovals
from promotion.github.client import GitHubClient
from promotion.github.context import PullRequestRef
from tests.support.github_fake import GitHubFake

HEAD = "a" * 40
OLD = "c" * 40
ENV_FILE = "environments/prod.yaml"
CODEOWNERS = "# owners\n* @acme/platform\nenvironments/prod.yaml @carol @dave @acme/ml-leads\n"


@pytest.fixture
def gh():
    with GitHubFake() as fake:
        fake.add_pull(7, author="alice", head_sha=HEAD)
        fake.add_file(".github/CODEOWNERS", CODEOWNERS)
        for login in ("alice", "bob", "carol", "dave", "erin", "renovate[bot]", "ci-bot"):
            fake.add_collaborator(login, "write")
        yield fake


def collect(gh, *, teams=(), codeowners=False, timeout=5.0, pr=7):
    client = GitHubClient("test-token", gh.url, timeout=timeout)
    source = GitHubApprovals(client, PullRequestRef("acme", "models", pr, "main"))
    return source.collect(env_file=ENV_FILE, env_name="prod", version=2, digest="sha256:" + "1" * 64,
                          teams=list(teams), use_codeowners=codeowners)


def test_approval_on_head_commit_counts(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    found = collect(gh)
    assert found.approvers == ("bob",)
    assert found.head_sha == HEAD


def test_approval_on_an_older_commit_does_not_count(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=OLD)
    found = collect(gh)
    assert found.approvers == ()
    assert ("bob", f"approved {OLD[:7]}, not the head {HEAD[:7]}") in found.ignored


def test_author_never_counts(gh):
    gh.add_review(7, "alice", "APPROVED", commit_id=HEAD)
    found = collect(gh)
    assert found.approvers == ()
    assert ("alice", "author of the pull request") in found.ignored


def test_author_match_ignores_case(gh):
    gh.add_review(7, "Alice", "APPROVED", commit_id=HEAD)
    assert collect(gh).approvers == ()


@pytest.mark.parametrize("login,user_type", [("renovate[bot]", None), ("ci-bot", "Bot")])
def test_bots_never_count(gh, login, user_type):
    gh.add_review(7, login, "APPROVED", commit_id=HEAD, user_type=user_type)
    found = collect(gh)
    assert found.approvers == ()
    assert (login, "bot") in found.ignored


def test_later_changes_requested_cancels_approval(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "bob", "CHANGES_REQUESTED", commit_id=HEAD)
    found = collect(gh)
    assert found.approvers == ()
    assert ("bob", "latest review is CHANGES_REQUESTED") in found.ignored


def test_later_dismissed_cancels_approval(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "bob", "DISMISSED", commit_id=HEAD)
    assert collect(gh).approvers == ()


def test_approval_after_changes_requested_counts(gh):
    gh.add_review(7, "bob", "CHANGES_REQUESTED", commit_id=HEAD)
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    assert collect(gh).approvers == ("bob",)


def test_comment_after_approval_keeps_it(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "bob", "COMMENTED", commit_id=HEAD)
    gh.add_review(7, "bob", "PENDING", commit_id=HEAD)
    assert collect(gh).approvers == ("bob",)


def test_duplicate_approvals_count_once(gh):
    for _ in range(3):
        gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "carol", "APPROVED", commit_id=HEAD)
    assert sorted(collect(gh).approvers) == ["bob", "carol"]


def test_reviews_are_followed_across_pages(gh):
    gh.per_page_max = 2  # GitHub caps per_page; the fake caps lower to force pages
    for i in range(5):
        gh.add_review(7, f"rev{i}", "COMMENTED", commit_id=HEAD)
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)  # on page 3
    found = collect(gh)
    assert found.approvers == ("bob",)
    review_pages = [r for r in gh.requests if r.path.endswith("/reviews")]
    assert len(review_pages) == 3
    assert review_pages[-1].query.get("page") == "3"


def test_non_collaborator_never_counts(gh):
    gh.add_review(7, "mallory", "APPROVED", commit_id=HEAD)
    gh.add_collaborator("readonly", "read")
    gh.add_review(7, "readonly", "APPROVED", commit_id=HEAD)
    found = collect(gh)
    assert found.approvers == ()
    assert ("mallory", "permission 'none', write needed") in found.ignored
    assert ("readonly", "permission 'read', write needed") in found.ignored


def test_required_team_members_only(gh):
    gh.add_team_member("acme", "ml-leads", "carol")
    gh.add_team_member("acme", "ml-leads", "erin", state="pending")
    for login in ("bob", "carol", "erin"):
        gh.add_review(7, login, "APPROVED", commit_id=HEAD)
    found = collect(gh, teams=["ml-leads"])
    assert found.approvers == ("carol",)
    assert ("bob", "not in a required team") in found.ignored
    assert ("erin", "not in a required team") in found.ignored  # invitation still pending
    assert "/orgs/acme/teams/ml-leads/memberships/carol" in gh.paths("GET")


def test_codeowners_of_the_environment_file_from_the_base_branch(gh):
    gh.add_team_member("acme", "ml-leads", "erin")
    gh.add_file(".github/CODEOWNERS", "environments/ @bob\n", ref="promote/prod-v2")  # the PR's own edit is ignored
    for login in ("bob", "carol", "erin"):
        gh.add_review(7, login, "APPROVED", commit_id=HEAD)
    found = collect(gh, codeowners=True)
    assert sorted(found.approvers) == ["carol", "erin"]
    assert ("bob", f"not a code owner of {ENV_FILE}") in found.ignored
    contents = [r for r in gh.requests if "/contents/" in r.path]
    assert contents[0].query["ref"] == "main"


def test_missing_codeowners_blocks(gh):
    gh.repo.files.clear()
    gh.add_review(7, "carol", "APPROVED", commit_id=HEAD)
    with pytest.raises(GitHubError, match="no CODEOWNERS file on main"):
        collect(gh, codeowners=True)


def test_forbidden_blocks_with_reason(gh):
    gh.fail(r"/reviews$", status=403)
    with pytest.raises(GitHubError, match=r"403 injected failure \(check GITHUB_TOKEN"):
        collect(gh)


def test_server_error_blocks_with_reason(gh):
    gh.fail(r"/collaborators/", status=502)
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    with pytest.raises(GitHubError, match="502"):
        collect(gh)


def test_slow_api_times_out_and_blocks(gh):
    gh.fail(r"/pulls/7$", delay=1.5)
    with pytest.raises(GitHubError, match="timed out after 0.3 s"):
        collect(gh, timeout=0.3)


def test_bad_payload_blocks(gh):
    gh.fail(r"/pulls/7$", status=200, body='{"head": null}')
    with pytest.raises(GitHubError, match="unexpected payload"):
        collect(gh)


def test_no_pull_request_blocks(gh):
    with pytest.raises(GitHubError, match="not about a pull request"):
        collect(gh, pr=None)


def test_token_is_sent_and_wrong_token_is_refused(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    collect(gh)
    assert all(r.headers.get("Authorization") == "Bearer test-token" for r in gh.requests)
    client = GitHubClient("wrong", gh.url, timeout=5)
    with pytest.raises(GitHubError, match="401 Bad credentials"):
        GitHubApprovals(client, PullRequestRef("acme", "models", 7)).collect(
            env_file=ENV_FILE, env_name="prod", version=2, digest="x", teams=[], use_codeowners=False)
