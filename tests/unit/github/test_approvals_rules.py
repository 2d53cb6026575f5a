"""Every approval rule, against GitHub-shaped payloads from the loopback fake."""

from __future__ import annotations

import pytest

from promotion.errors import GitHubError
from promotion.github.approvals import GitHubApprovals, TeamNotVisible
from promotion.github.client import APP_TOKEN_ENV, GitHubClient
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


def collect(gh, *, teams=(), codeowners=False, timeout=5.0, pr=7, app=True, **options):
    """Approvals as the gate collects them; ``app``: team reads use the App installation token."""
    client = GitHubClient("test-token", gh.url, timeout=timeout)
    members = GitHubClient("app-token", gh.url, timeout=timeout, token_name=APP_TOKEN_ENV) if app else None
    source = GitHubApprovals(client, PullRequestRef("acme", "models", pr, "main"), members)
    return source.collect(env_file=ENV_FILE, env_name="prod", version=2, digest="sha256:" + "1" * 64,
                          teams=list(teams), use_codeowners=codeowners, **options)


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
    assert ("bob", "not a member of @acme/ml-leads") in found.ignored
    assert ("erin", "invitation to @acme/ml-leads still pending") in found.ignored
    member_reads = [r for r in gh.requests if r.path.startswith("/orgs/")]
    assert "/orgs/acme/teams/ml-leads/memberships/carol" in [r.path for r in member_reads]
    # team reads go with the App's token; everything else with the repository token
    assert {r.headers["Authorization"] for r in member_reads} == {"Bearer app-token"}
    assert {r.headers["Authorization"] for r in gh.requests if r.path.startswith("/repos/")} == {"Bearer test-token"}


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


# -- team membership as GitHub really answers it ---------------------------------------

def test_repository_token_cannot_see_the_team_and_says_so(gh):
    # GITHUB_TOKEN gets 404 on team membership; that is not "bob is not a member"
    gh.add_team_member("acme", "ml-leads", "carol")
    gh.add_review(7, "carol", "APPROVED", commit_id=HEAD)
    with pytest.raises(TeamNotVisible, match=r"the token cannot see team @acme/ml-leads .*404.*"
                                             r"set \$PROMOTION_GITHUB_APP_TOKEN .*Members: read"):
        collect(gh, teams=["ml-leads"], app=False)
    assert "/orgs/acme/teams/ml-leads" in gh.paths("GET")


def test_codeowners_team_needs_the_app_token_too(gh):
    gh.add_team_member("acme", "ml-leads", "erin")
    gh.add_review(7, "erin", "APPROVED", commit_id=HEAD)
    with pytest.raises(TeamNotVisible, match="cannot see team @acme/ml-leads"):
        collect(gh, codeowners=True, app=False)
    assert collect(gh, codeowners=True).approvers == ("erin",)


def test_a_team_the_app_cannot_see_blocks_naming_it(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    with pytest.raises(TeamNotVisible, match=r"cannot see team @acme/ml-laeds .*check the team name"):
        collect(gh, teams=["ml-laeds"])


def test_visible_team_without_the_reviewer_is_not_a_member(gh):
    gh.add_team("acme", "ml-leads")
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    found = collect(gh, teams=["ml-leads"])
    assert found.approvers == () and ("bob", "not a member of @acme/ml-leads") in found.ignored


def test_one_of_several_teams_is_enough(gh):
    gh.add_team("acme", "ml-leads")
    gh.add_team_member("acme", "risk", "bob")
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "dave", "APPROVED", commit_id=HEAD)
    found = collect(gh, teams=["ml-leads", "risk"])
    assert found.approvers == ("bob",)
    assert ("dave", "not in a required team (not a member of @acme/ml-leads; not a member of @acme/risk)") in found.ignored


# -- who pushed ------------------------------------------------------------------------

def test_someone_who_pushed_to_the_pull_request_does_not_count(gh):
    # bob pushes a commit onto alice's pull request, then approves the result
    gh.add_commit(7, "d" * 40, author="bob")
    gh.add_review(7, "bob", "APPROVED", commit_id="d" * 40)
    gh.add_review(7, "carol", "APPROVED", commit_id="d" * 40)
    found = collect(gh)
    assert found.approvers == ("carol",)
    assert ("bob", "pushed commits to the pull request (ddddddd)") in found.ignored


def test_a_committer_of_someone_elses_commit_does_not_count(gh):
    gh.add_commit(7, "e" * 40, author="carol", committer="dave")  # dave rebased carol's commit
    for login in ("carol", "dave", "erin"):
        gh.add_review(7, login, "APPROVED", commit_id="e" * 40)
    found = collect(gh)
    assert found.approvers == ("erin",)
    assert {who for who, why in found.ignored if why.startswith("pushed commits")} == {"carol", "dave"}


def test_web_ui_commits_and_unlinked_emails_exclude_nobody_else(gh):
    gh.add_commit(7, "f" * 40, author="alice", committer="web-flow")   # an edit in GitHub's UI
    gh.add_commit(7, "9" * 40, author=None, committer=None)            # an e-mail GitHub cannot map
    gh.add_review(7, "bob", "APPROVED", commit_id="9" * 40)
    assert collect(gh).approvers == ("bob",)
    assert any(r.path == "/repos/acme/models/pulls/7/commits" for r in gh.requests)


def test_commits_are_followed_across_pages(gh):
    gh.per_page_max = 2
    for i, login in enumerate(("carol", "dave", "erin", "bob")):
        gh.add_commit(7, f"{i + 1}" * 40, author=login)
    head = "4" * 40
    gh.add_review(7, "bob", "APPROVED", commit_id=head)  # bob's commit is on the last page
    found = collect(gh)
    assert found.approvers == () and ("bob", "pushed commits to the pull request (4444444)") in found.ignored
    assert len([r for r in gh.requests if r.path.endswith("/commits")]) == 3


def test_more_commits_than_github_lists_blocks(gh):
    gh.repo.pulls[7]["commits"] = 251
    with pytest.raises(GitHubError, match="has 251 commits; GitHub lists only 250"):
        collect(gh)


def test_a_force_push_between_reads_blocks(gh):
    gh.repo.commits[7] = []  # the head commit the pull request names has been pushed away
    gh.add_commit(7, "d" * 40, author="mallory", head=False)
    with pytest.raises(GitHubError, match=f"moved while it was read .its head {HEAD[:7]} is not among its commits"):
        collect(gh)


# -- changes requested -----------------------------------------------------------------

def test_changes_requested_by_an_eligible_reviewer_blocks(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "carol", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=OLD)  # on an older commit: still stands
    found = collect(gh)
    assert sorted(found.approvers) == ["bob", "carol"]
    assert not found.satisfied(2)
    assert found.blocking == (("dave", f"requested changes at {OLD[:7]}; blocks until that review is dismissed "
                                       "or dave approves"),)
    assert "blocked by: dave (requested changes" in found.message(2)


def test_dismissed_change_request_no_longer_blocks(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    review = gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=HEAD)
    gh.dismiss(7, review["id"])
    found = collect(gh)
    assert found.blocking == () and found.satisfied(1)


def test_a_later_approval_by_the_same_reviewer_supersedes_the_change_request(gh):
    gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=OLD)
    gh.add_review(7, "dave", "COMMENTED", commit_id=HEAD)
    assert collect(gh).blocking != ()  # a comment changes nothing
    gh.add_review(7, "dave", "APPROVED", commit_id=HEAD)
    found = collect(gh)
    assert found.blocking == () and found.approvers == ("dave",)


def test_change_requests_block_only_when_the_policy_says_so(gh):
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=HEAD)
    assert collect(gh, changes_requested_blocks=False).satisfied(1)


def test_change_requests_of_people_who_could_not_approve_do_not_block(gh):
    gh.add_team("acme", "ml-leads")
    gh.add_review(7, "carol", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "bob", "CHANGES_REQUESTED", commit_id=HEAD)      # not a code owner
    gh.add_collaborator("dave", "read")
    gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=HEAD)     # a code owner without write access
    found = collect(gh, codeowners=True)
    assert found.blocking == () and found.satisfied(1)
    assert ("bob", f"requested changes, which does not block: not a code owner of {ENV_FILE}") in found.ignored
    assert ("dave", "requested changes, which does not block: permission 'read', write needed") in found.ignored


# -- what GitHub shows and hides -------------------------------------------------------

def test_others_pending_reviews_are_hidden_and_never_count(gh):
    gh.add_review(7, "bob", "PENDING", commit_id=HEAD)
    client = GitHubClient("test-token", gh.url)
    assert client.paginate("/repos/acme/models/pulls/7/reviews") == []
    assert collect(gh).approvers == ()


def test_maintain_reads_as_write_and_triage_as_read(gh):
    gh.add_collaborator("mia", "maintain")
    gh.add_collaborator("tom", "triage")
    body = GitHubClient("test-token", gh.url).get("/repos/acme/models/collaborators/mia/permission")
    assert (body["permission"], body["role_name"]) == ("write", "maintain")
    gh.add_review(7, "mia", "APPROVED", commit_id=HEAD)
    gh.add_review(7, "tom", "APPROVED", commit_id=HEAD)
    found = collect(gh)
    assert found.approvers == ("mia",) and ("tom", "permission 'read', write needed") in found.ignored


def test_a_rate_limited_review_list_is_waited_out(gh):
    gh.secondary_limit(r"/reviews$", retry_after=1)
    gh.add_review(7, "bob", "APPROVED", commit_id=HEAD)
    assert collect(gh).approvers == ("bob",)
    assert len([r for r in gh.requests if r.path.endswith("/reviews")]) == 2


# -- the gate and the policy option ----------------------------------------------------

def _gate(gh, **settings):
    from types import SimpleNamespace

    from promotion.gates.approvals import ApprovalsGate

    client = GitHubClient("test-token", gh.url)
    ctx = SimpleNamespace(
        approvals=GitHubApprovals(client, PullRequestRef("acme", "models", 7, "main")), notes=[],
        env=SimpleNamespace(display=ENV_FILE, name="prod", model=SimpleNamespace(version=2, digest="sha256:" + "1" * 64)),
        policy=SimpleNamespace(display="policies/prod.yaml"), policy_line=lambda *path: ("policies/prod.yaml", 12))
    (check,) = ApprovalsGate().evaluate(ctx, {"required": 2, "codeowners": False, **settings}).checks
    return check


def test_the_gate_blocks_on_a_change_request_with_enough_approvals(gh):
    for login in ("bob", "carol"):
        gh.add_review(7, login, "APPROVED", commit_id=HEAD)
    gh.add_review(7, "dave", "CHANGES_REQUESTED", commit_id=HEAD)
    check = _gate(gh)
    assert not check.passed and check.value == 2
    assert "2 of 2 approval(s): bob, carol. blocked by: dave (requested changes at aaaaaaa" in check.message
    assert _gate(gh, changes_requested_blocks=False).passed


def test_the_policy_option_is_validated(tmp_path, capsys):
    from promotion.cli import main
    from tests.unit.workflows.conftest import make_repo

    root = make_repo(tmp_path / "repo")
    policy = root / "policies" / "prod.yaml"
    text = policy.read_text()
    policy.write_text(text.replace("    codeowners: true\n", "    codeowners: true\n    changes_requested_blocks: false\n", 1))
    assert main(["--root", str(root), "validate"]) == 0
    policy.write_text(text.replace("    codeowners: true\n", "    codeowners: true\n    changes_requested_blocks: sometimes\n", 1))
    assert main(["--root", str(root), "validate"]) == 2
    assert "gates.approvals.changes_requested_blocks" in capsys.readouterr().err
