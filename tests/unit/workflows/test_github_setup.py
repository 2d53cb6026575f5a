"""``promotion github setup`` against the GitHub fake, and ``push`` against local git remotes."""

from __future__ import annotations

import json

import pytest

from promotion.cli import main
from promotion.github_setup import GITHUB_ACTIONS_APP_ID
from tests.support.github_fake import GitHubFake
from tests.unit.workflows.conftest import edit, git, make_repo


@pytest.fixture
def gh(monkeypatch):
    with GitHubFake() as fake:
        monkeypatch.setenv("GITHUB_API_URL", fake.url)
        monkeypatch.setenv("GITHUB_TOKEN", fake.token)
        yield fake


def writes(gh):
    return [(r.method, r.path, r.body) for r in gh.requests if r.method != "GET"]


@pytest.fixture
def root(tmp_path):
    return make_repo(tmp_path / "repo")


def setup(root, *args):
    return main(["--root", str(root), "github", "setup", "--repo", "acme/models", *args])


def test_dry_run_prints_the_difference_and_changes_nothing(gh, root, capsys):
    assert setup(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "ruleset 'promotion' does not exist; would create:" in out
    # prod's policy asks for 2 approvals and code owners: the strictest wins
    assert "rules.pull_request.required_approving_review_count: (none) -> 2" in out
    assert "rules.pull_request.require_code_owner_review: (none) -> true" in out
    assert "rules.required_status_checks.required_status_checks: (none) -> [gates@15368, test@15368, workflows@15368]" in out
    assert "dry run: nothing changed" in out
    assert writes(gh) == []


def test_apply_creates_the_ruleset_then_is_idempotent(gh, root, capsys):
    assert setup(root, "--bypass-app-id", "99") == 0
    assert "applied" in capsys.readouterr().out
    (ruleset,) = gh.repo.rulesets.values()
    rules = {r["type"]: r.get("parameters") for r in ruleset["rules"]}
    assert rules["pull_request"]["required_approving_review_count"] == 2
    assert rules["pull_request"]["dismiss_stale_reviews_on_push"] is True
    assert rules["pull_request"]["require_code_owner_review"] is True
    assert rules["required_status_checks"]["required_status_checks"] == [
        {"context": c, "integration_id": GITHUB_ACTIONS_APP_ID} for c in ("gates", "test", "workflows")]
    assert ruleset["conditions"]["ref_name"]["include"] == ["refs/heads/main"]
    assert ruleset["bypass_actors"] == [{"actor_id": 99, "actor_type": "Integration", "bypass_mode": "always"}]
    n = len(writes(gh))
    assert setup(root, "--bypass-app-id", "99") == 0
    assert "is up to date" in capsys.readouterr().out and len(writes(gh)) == n


def test_a_policy_change_shows_up_as_a_ruleset_update(gh, root, capsys):
    setup(root)
    capsys.readouterr()
    edit(root, "policies/prod.yaml", "required: 2", "required: 3", "stricter")
    assert setup(root, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "has drifted; would change:" in out and "rules.pull_request.required_approving_review_count: 2 -> 3" in out
    assert out.count(" -> ") == 1
    setup(root)
    assert writes(gh)[-1][0] == "PUT"


def test_classic_branch_protection(gh, root, capsys):
    assert setup(root, "--mode", "branch-protection", "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["applied"] is True and not result["exists"]
    body = writes(gh)[0][2]
    assert body["required_pull_request_reviews"]["required_approving_review_count"] == 2
    assert body["required_pull_request_reviews"]["dismiss_stale_reviews"] is True
    assert body["required_status_checks"]["checks"][0] == {"context": "gates", "app_id": GITHUB_ACTIONS_APP_ID}
    assert setup(root, "--mode", "branch-protection", "--dry-run") == 0
    assert "is up to date" in capsys.readouterr().out


def test_bad_token_is_one_line_exit_1(gh, root, capsys, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "wrong")
    assert setup(root) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: GitHub API GET /repos/acme/models: 401 Bad credentials") and err.count("\n") == 1


# -- drift: what "up to date" has to mean -------------------------------------------------

def _created(gh, root):
    """Apply once (the ruleset as setup makes it); returns the stored ruleset."""
    assert setup(root, "--bypass-app-id", "99") == 0
    (ruleset,) = [r for r in gh.repo.rulesets.values() if r["name"] == "promotion"]
    return ruleset


def _rule(ruleset, kind):
    return next(r for r in ruleset["rules"] if r["type"] == kind)


@pytest.mark.parametrize("tamper,line", [
    (lambda r: r.update(enforcement="disabled"), "enforcement: disabled -> active"),
    (lambda r: r.update(enforcement="evaluate"), "enforcement: evaluate -> active"),
    (lambda r: r.update(target="tag"), "target: tag -> branch"),
    (lambda r: r["conditions"]["ref_name"].update(include=["refs/heads/dev"]),
     "conditions.ref_name.include: [refs/heads/dev] -> [refs/heads/main]"),
    (lambda r: r["conditions"]["ref_name"].update(exclude=["refs/heads/main"]),
     "conditions.ref_name.exclude: [refs/heads/main] -> []"),
    (lambda r: _rule(r, "required_status_checks")["parameters"].update(
        required_status_checks=[{"context": "gates"}, {"context": "test", "integration_id": GITHUB_ACTIONS_APP_ID},
                                {"context": "workflows", "integration_id": GITHUB_ACTIONS_APP_ID}]),
     "rules.required_status_checks.required_status_checks: [gates@any, test@15368, workflows@15368] -> "
     "[gates@15368, test@15368, workflows@15368]"),
    (lambda r: _rule(r, "pull_request")["parameters"].update(require_last_push_approval=False),
     "rules.pull_request.require_last_push_approval: false -> true"),
    (lambda r: _rule(r, "pull_request")["parameters"].update(allowed_merge_methods=["squash"]),
     "rules.pull_request.allowed_merge_methods: [squash] -> (none)"),
    (lambda r: r["rules"].remove(_rule(r, "non_fast_forward")), "rules.non_fast_forward: (none) -> present"),
    (lambda r: r["rules"].append({"type": "required_linear_history"}), "rules.required_linear_history: present -> (none)"),
    (lambda r: r["bypass_actors"].append({"actor_id": 5, "actor_type": "RepositoryRole", "bypass_mode": "always"}),
     "bypass_actors: [Integration:99:always, RepositoryRole:5:always] -> [Integration:99:always]"),
], ids=["disabled", "evaluate", "target", "include", "exclude", "unbound-check", "last-push", "merge-methods",
        "missing-rule", "extra-rule", "bypass"])
def test_a_drifted_ruleset_is_reported_then_fixed(gh, root, capsys, tamper, line):
    ruleset = _created(gh, root)
    tamper(ruleset)  # someone edited it in GitHub's settings
    capsys.readouterr()
    assert setup(root, "--bypass-app-id", "99", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "ruleset 'promotion' has drifted; would change:" in out and f"  {line}\n" in out, out
    assert out.count(" -> ") == 1
    n = len(writes(gh))
    assert setup(root, "--bypass-app-id", "99") == 0
    assert writes(gh)[n][:2] == ("PUT", f"/repos/acme/models/rulesets/{ruleset['id']}")
    assert setup(root, "--bypass-app-id", "99", "--dry-run") == 0
    assert "is up to date" in capsys.readouterr().out.splitlines()[-1]


def test_rulesets_it_does_not_own_are_left_alone(gh, root, capsys):
    # an organisation's ruleset called "promotion", active and otherwise perfect, is not this repository's
    from promotion.github_setup import Protection, _ruleset_body

    org = gh.add_ruleset(_ruleset_body(Protection("main", approvals=2)), organization=True)
    other = gh.add_ruleset({"name": "release tags", "target": "tag", "enforcement": "disabled", "rules": []})
    assert setup(root) == 0
    assert "ruleset 'promotion' does not exist; would create:" in capsys.readouterr().out
    listed = [r for r in gh.requests if r.path == "/repos/acme/models/rulesets" and r.method == "GET"]
    assert listed and all(r.query.get("includes_parents") == "false" for r in listed)
    assert [w[:2] for w in writes(gh)] == [("POST", "/repos/acme/models/rulesets")]
    assert gh.repo.rulesets[org["id"]]["source_type"] == "Organization"
    assert gh.repo.rulesets[other["id"]]["enforcement"] == "disabled"


def test_checks_can_name_another_app_or_any(gh, root, capsys):
    assert setup(root, "--check", "gates", "--check", "codecov/project@254", "--check", "legacy@any") == 0
    (ruleset,) = gh.repo.rulesets.values()
    assert _rule(ruleset, "required_status_checks")["parameters"]["required_status_checks"] == [
        {"context": "codecov/project", "integration_id": 254}, {"context": "gates", "integration_id": 15368},
        {"context": "legacy"}]


def test_a_bad_check_is_exit_2_before_any_call(gh, root, capsys):
    assert setup(root, "--check", "gates@github") == 2
    assert "--check 'gates@github': use NAME, NAME@APP_ID or NAME@any" in capsys.readouterr().err
    assert gh.requests == []


def test_github_validation_errors_are_shown(gh, root, capsys):
    gh.fail(r"/rulesets$", status=422, times=None, body=json.dumps(
        {"message": "Validation Failed", "errors": ["Invalid rule 'required_status_checks': integration 99999 not found"],
         "documentation_url": "https://docs.github.com/rest"}))
    assert setup(root) == 1
    err = capsys.readouterr().err
    assert "422 Validation Failed: Invalid rule 'required_status_checks': integration 99999 not found" in err
    assert err.count("\n") == 1


def test_branch_protection_with_unbound_checks_has_drifted(gh, root, capsys):
    assert setup(root, "--mode", "branch-protection") == 0
    for check in gh.repo.protection["main"]["required_status_checks"]["checks"]:
        check["app_id"] = None
    capsys.readouterr()
    assert setup(root, "--mode", "branch-protection", "--dry-run") == 0
    assert "required_checks: [gates@any, test@any, workflows@any] -> [gates@15368, test@15368, workflows@15368]" \
        in capsys.readouterr().out


# -- the drift issue: GitHub lists pull requests among issues -------------------------------

def test_drift_issue_is_never_a_pull_request_or_a_persons_issue(gh):
    from promotion.github_setup import DRIFT_LABEL, Api, drift_title, upsert_issue

    gh.add_pull(author="mallory", labels=[DRIFT_LABEL])["title"] = drift_title("prod")
    gh.add_issue(drift_title("prod"), "my notes", labels=[DRIFT_LABEL], author="mallory")
    api = Api(gh.url, gh.token)
    created = upsert_issue(api, "acme/models", "prod", "drift: router serves v1")
    assert created["user"]["login"] == "github-actions[bot]"
    listed = [i["number"] for i in api.paginate("/repos/acme/models/issues", {"labels": DRIFT_LABEL})]
    assert listed == [3, 2, 1]  # the pull request is in the list: the filter is what skips it
    assert [p for p in gh.paths("PATCH")] == []
    updated = upsert_issue(api, "acme/models", "prod", "drift: still v1")
    assert updated["number"] == created["number"] and gh.paths("PATCH") == [f"/repos/acme/models/issues/{created['number']}"]
    assert gh.repo.issues[2]["body"] == "my notes"


# -- push ------------------------------------------------------------------------------

@pytest.fixture
def clones(tmp_path):
    origin = make_repo(tmp_path / "src")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    return bare, work


def push(work, bare, monkeypatch):
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    for k, v in {"GIT_AUTHOR_NAME": "bot", "GIT_AUTHOR_EMAIL": "bot@x", "GIT_COMMITTER_NAME": "bot",
                 "GIT_COMMITTER_EMAIL": "bot@x"}.items():
        monkeypatch.setenv(k, v)
    return main(["--root", str(work), "github", "push", "--remote", bare.as_uri()])


def test_push_sends_the_record_commit(clones, monkeypatch, capsys):
    bare, work = clones
    (work / "environments" / "records").mkdir(parents=True, exist_ok=True)
    (work / "environments" / "records" / "r1.json").write_text("{}")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "record")
    assert push(work, bare, monkeypatch) == 0
    assert "pushed 1 commit(s) to main" in capsys.readouterr().out
    assert git(bare, "log", "-1", "--format=%s", "main") == "record"


def test_push_rebases_over_a_concurrent_merge(clones, tmp_path, monkeypatch, capsys):
    bare, work = clones
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    edit(other, "environments/dev.yaml", "version: 1", "version: 2", "promote dev")
    git(other, "push", "-q", "origin", "main")
    edit(work, "environments/prod.yaml", "version: 1", "version: 1  # reverted", "revert prod")
    assert push(work, bare, monkeypatch) == 0
    assert git(bare, "log", "--format=%s", "-2", "main").splitlines() == ["revert prod", "promote dev"]


def test_push_with_nothing_new(clones, monkeypatch, capsys):
    bare, work = clones
    assert push(work, bare, monkeypatch) == 0
    assert "nothing to push" in capsys.readouterr().out


def test_push_over_https_needs_the_bot_token(clones, monkeypatch, capsys):
    _, work = clones
    monkeypatch.delenv("PROMOTION_BOT_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REF", "refs/heads/main")
    code = main(["--root", str(work), "github", "push", "--remote", "https://github.invalid/acme/models.git"])
    assert code == 2 and "PROMOTION_BOT_TOKEN" in capsys.readouterr().err
