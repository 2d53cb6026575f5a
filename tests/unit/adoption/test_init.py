"""``promotion init``: a scaffold that validates, never overwrites, and stays in step with
this repository's own files (the templates are copies; these tests say when they drift)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from promotion import cli
from promotion.commands.init import MODEL_NAME, PORTS, scaffold

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "promotion" / "templates"
SYNC = "templates out of date: cp .github/workflows/*.yml promotion/templates/workflows/; cp policies/*.yaml " \
       "promotion/templates/policies/classification/ (and carry the change into policies/regression/)"

EXPECTED = {
    *(f"environments/{e}.yaml" for e in PORTS), *(f"policies/{e}.yaml" for e in PORTS), "environments/trust.yaml",
    ".github/CODEOWNERS", "README.md", "Makefile", "requirements.txt", ".gitignore",
    *(f".github/workflows/{p.name}" for p in (REPO / ".github" / "workflows").glob("*.yml")),
}


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_scaffold_validates(tmp_path, capsys, task):
    root = tmp_path / "team"
    assert cli.main(["init", "--model", "house-prices", "--task", task, "--dir", str(root)]) == 0
    written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert written == EXPECTED
    capsys.readouterr()
    assert cli.main(["--root", str(root), "validate"]) == 0
    assert "3 environment file(s) and their policies are valid" in capsys.readouterr().out
    env = yaml.safe_load((root / "environments" / "prod.yaml").read_text())
    assert env["model"]["name"] == "house-prices" and env["serving"]["endpoint"] == "http://127.0.0.1:3000"


def test_regression_policies_judge_rmse_and_mae_against_the_champion_and_nothing_of_classification(tmp_path):
    from promotion.config import Project

    root = tmp_path / "team"
    assert cli.main(["init", "--model", "house-prices", "--task", "regression", "--dir", str(root)]) == 0
    project = Project(root)
    for env in PORTS:
        policy = project.policy_for(project.environment(env))
        metrics = policy.gates["metrics"]
        assert metrics["relative"] == {"rmse": {"max_ratio": 1.0}, "mae": {"max_ratio": 1.0}}, env
        # the loaded policy, defaults merged: no recall/fpr/f1/auc a regression model never logs
        assert not {"recall", "fpr", "f1", "auc"} & (set(metrics.get("absolute", {})) | set(metrics["relative"]))
        assert "fairness" not in policy.gates


def test_init_refuses_to_overwrite_and_writes_nothing(tmp_path, capsys):
    root = tmp_path / "team"
    (root / "policies").mkdir(parents=True)
    mine = root / "policies" / "staging.yaml"
    mine.write_text("# the team's own policy\n")
    assert cli.main(["init", "--model", "churn", "--dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{mine} already exists" in err and "nothing was written" in err
    assert mine.read_text() == "# the team's own policy\n"
    assert [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()] == ["policies/staging.yaml"]


def test_init_refuses_a_directory_that_leads_outside(tmp_path, capsys):
    root = tmp_path / "team"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root.mkdir()
    (root / ".github").symlink_to(outside)
    assert cli.main(["init", "--model", "churn", "--dir", str(root)]) == 2
    assert "leads outside" in capsys.readouterr().err
    assert not any(outside.iterdir()) and not any(p.is_file() for p in root.rglob("*"))


@pytest.mark.parametrize("argv, message", [
    (["--model", "bad name"], "--model 'bad name'"),
    (["--model", "../etc"], "--model '../etc'"),
    (["--model", "churn", "--repo", "not a repo"], "--repo 'not a repo': must be OWNER/NAME"),
    (["--model", "churn", "--task", "ranking"], "invalid choice: 'ranking'"),
])
def test_bad_arguments_are_exit_2(tmp_path, capsys, argv, message):
    assert cli.main(["init", *argv, "--dir", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_repo_names_the_signing_identities(tmp_path):
    files = scaffold("churn", repo="acme/churn-promotion")
    trust = yaml.safe_load(files["environments/trust.yaml"])
    assert {i["repository"] for i in trust["identities"]} == {"acme/churn-promotion"}


def test_model_name_pattern_is_the_environment_schemas():
    schema = json.loads((REPO / "promotion" / "config" / "schemas" / "environment.schema.json").read_text())
    assert "^" + MODEL_NAME.pattern + "$" == schema["properties"]["model"]["properties"]["name"]["pattern"]


def test_templates_are_this_repositorys_files():
    files = scaffold("fraud-detector")
    for wf in (REPO / ".github" / "workflows").glob("*.yml"):
        assert files[f".github/workflows/{wf.name}"] == wf.read_text(), f"{wf.name}: {SYNC}"
    for env in PORTS:
        assert files[f"environments/{env}.yaml"] == (REPO / "environments" / f"{env}.yaml").read_text(), SYNC
        assert files[f"policies/{env}.yaml"] == (REPO / "policies" / f"{env}.yaml").read_text(), SYNC
    assert files["environments/trust.yaml"] == (REPO / "environments" / "trust.yaml").read_text(), SYNC


def test_regression_templates_differ_from_classification_only_in_what_they_measure():
    for env in PORTS:
        cls = yaml.safe_load((TEMPLATES / "policies" / "classification" / f"{env}.yaml").read_text())
        reg = yaml.safe_load((TEMPLATES / "policies" / "regression" / f"{env}.yaml").read_text())
        for doc in (cls, reg):
            doc["gates"].pop("metrics")
            doc["gates"].pop("fairness", None)
        assert reg == cls, f"policies/regression/{env}.yaml: {SYNC}"
