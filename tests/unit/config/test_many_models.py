"""Several models in one environment: environments/<env>/<model>.yaml, each with its own
policy, records, rollout state and registry alias; commands take ``--model`` where the
environment alone is ambiguous; a pull request or a push that changes several models
lists one target per model (real git, real CLI)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from promotion.cli import main
from promotion.config import Project, file_key
from promotion.errors import ConfigError, UsageError

MODELS = ("fraud-detector", "fraud-eu")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def nest(repo: Path, stage: str = "prod", models=MODELS) -> None:
    """Move environments/<stage>.yaml to one file per model in environments/<stage>/."""
    src = repo / "environments" / f"{stage}.yaml"
    text = src.read_text()
    (repo / "environments" / stage).mkdir()
    for m in models:
        (repo / "environments" / stage / f"{m}.yaml").write_text(text.replace("name: fraud-detector", f"name: {m}"))
    src.unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"{stage}: one file per model")


@pytest.fixture
def many(repo) -> Path:
    nest(repo)
    return repo


def test_each_model_file_is_an_environment_of_its_own(many):
    proj = Project(many)
    assert proj.environment_names() == ["dev", "prod/fraud-detector", "prod/fraud-eu", "staging"]
    env = proj.environment("prod/fraud-eu")
    assert (env.name, env.stage, env.model.name, env.nested) == ("prod/fraud-eu", "prod", "fraud-eu", True)
    assert proj.policy_for(env).environment == "prod"      # the shared policies/prod.yaml
    assert proj.records_dir(env.name) == many / "environments" / "records" / "prod" / "fraud-eu"
    assert proj.validate_all() == []
    assert file_key(env.name) == "prod+fraud-eu"           # one flat state file per model


def test_an_environment_with_several_models_needs_the_model(many, capsys):
    proj = Project(many)
    with pytest.raises(UsageError, match=r"promotes 2 models \(fraud-detector, fraud-eu\): pass --model"):
        proj.resolve("prod")
    assert proj.resolve("prod", "fraud-eu") == "prod/fraud-eu"
    assert proj.resolve("prod/fraud-eu") == "prod/fraud-eu"
    assert proj.resolve("staging") == "staging"
    assert proj.resolve("staging", "fraud-detector") == "staging"   # the one model of staging.yaml
    with pytest.raises(UsageError, match=r"promotes no model 'churn' \(it has: fraud-detector, fraud-eu\)"):
        proj.resolve("prod", "churn")
    with pytest.raises(UsageError, match="already names its model"):
        proj.resolve("prod/fraud-eu", "fraud-eu")

    # the CLI: one line, exit 2, nothing done
    assert main(["--root", str(many), "audit", "prod"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pass --model NAME, or name it prod/<model>" in err
    assert main(["--root", str(many), "rollback", "prod", "--model", "churn", "--reason", "x"]) == 2
    assert "promotes no model 'churn'" in capsys.readouterr().err


def test_one_model_in_the_folder_needs_no_model(repo):
    nest(repo, models=("fraud-detector",))
    assert Project(repo).resolve("prod") == "prod/fraud-detector"


def test_names_that_could_climb_are_refused(many, capsys):
    for bad in ("prod/../staging", "prod/.hidden", "prod/a/b", "records/x", "keys"):
        assert main(["--root", str(many), "audit", bad]) == 2, bad
        assert "not an environment name" in capsys.readouterr().err


def test_the_file_must_say_its_folder_and_its_model(many):
    path = many / "environments" / "prod" / "fraud-eu.yaml"
    text = path.read_text()
    path.write_text(text.replace("environment: prod", "environment: staging"))
    with pytest.raises(ConfigError) as exc:
        Project(many).environment("prod/fraud-eu")
    assert exc.value.problems[0].startswith("environments/prod/fraud-eu.yaml:")
    assert "environment: must be 'prod' (the folder name)" in exc.value.problems[0]
    path.write_text(text.replace("name: fraud-eu", "name: fraud-detector"))
    with pytest.raises(ConfigError, match=r"model.name: must be 'fraud-eu' \(the file name"):
        Project(many).environment("prod/fraud-eu")


def test_one_model_or_several_never_both(many):
    (many / "environments" / "prod.yaml").write_text((many / "environments" / "staging.yaml").read_text()
                                                     .replace("environment: staging", "environment: prod"))
    problems = Project(many).validate_all()
    assert any("environments/prod.yaml and environments/prod/ both exist" in p for p in problems), problems
    with pytest.raises(ConfigError, match="both exist"):
        Project(many).environment("prod/fraud-eu")
    assert main(["--root", str(many), "validate"]) == 2


def test_a_pull_request_promoting_two_models_lists_both(many, monkeypatch, tmp_path, capsys):
    from promotion.governance import detect

    base = git(many, "rev-parse", "HEAD")
    git(many, "checkout", "-qb", "promote")
    for m in MODELS:
        p = many / "environments" / "prod" / f"{m}.yaml"
        p.write_text(p.read_text().replace("version: 1", "version: 2"))
    git(many, "commit", "-qam", "promote both")
    changes = detect(many, base)
    assert changes.promotions == ("prod/fraud-detector", "prod/fraud-eu") and changes.governance == ()

    # the push after the merge: one matrix entry per model, in the GitHub environment prod
    after = git(many, "rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "before": base, "after": after,
                                 "repository": {"default_branch": "main"}}))
    output = tmp_path / "output"
    for k, v in {"GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event), "GITHUB_OUTPUT": str(output)}.items():
        monkeypatch.setenv(k, v)
    assert main(["--root", str(many), "github", "changed"]) == 0
    lines = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert json.loads(lines["environments"]) == ["prod/fraud-detector", "prod/fraud-eu"]
    assert json.loads(lines["targets"]) == [{"target": f"prod/{m}", "environment": "prod"} for m in MODELS]


def test_a_new_model_file_is_a_governance_change(many):
    from promotion.governance import detect

    base = git(many, "rev-parse", "HEAD")
    git(many, "checkout", "-qb", "add")
    src = many / "environments" / "prod" / "fraud-eu.yaml"
    (many / "environments" / "prod" / "churn.yaml").write_text(src.read_text().replace("name: fraud-eu", "name: churn"))
    git(many, "add", "-A")
    git(many, "commit", "-qm", "add churn")
    changes = detect(many, base)
    assert changes.promotions == ()
    assert [(c.path, c.note) for c in changes.governance] == [("environments/prod/churn.yaml", "new environment")]


def test_reconcile_of_an_environment_takes_each_of_its_models(many, monkeypatch, capsys, tmp_path):
    output = tmp_path / "output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["--root", str(many), "reconcile", "--list"]) == 0
    names = json.loads(capsys.readouterr().out)
    assert names == ["dev", "prod/fraud-detector", "prod/fraud-eu", "staging"]
    targets = json.loads(output.read_text().splitlines()[1].split("=", 1)[1])
    assert {"target": "prod/fraud-eu", "environment": "prod"} in targets


def test_each_model_keeps_its_own_rollout_state(many):
    from promotion.rollout import StateStore

    a, b = StateStore(many, "prod/fraud-detector"), StateStore(many, "prod/fraud-eu")
    assert a.path != b.path and a.path.parent == b.path.parent
    assert a.path.name == "prod+fraud-detector.json"


def test_the_registry_alias_is_the_environments(tmp_path):
    from promotion.registry import alias_of

    assert alias_of("prod/fraud-eu") == "prod" and alias_of("prod") == "prod"


def test_the_promotion_path_source_is_the_models_own_file(many):
    proj = Project(many)
    env = proj.environment("prod/fraud-eu")
    assert proj.counterpart(env, "staging") == "staging"          # staging holds one model
    nest(many, "staging")
    assert proj.counterpart(env, "staging") == "staging/fraud-eu"
