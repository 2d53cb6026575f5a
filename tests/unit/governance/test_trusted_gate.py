"""A pull request's gate judges with the base commit: only the proposed model comes from
the pull request (real git, the embedded MLflow store, real signed records)."""

from __future__ import annotations

import json

from promotion.cli import main
from tests.unit.governance.conftest import git

TOKEN = "s3cret-mlflow-token"


def gate(root, *args: str) -> int:
    return main(["--root", str(root), "gate", *args])


def propose(pull, env: str = "prod", version: int = 2) -> None:
    pull.edit(f"environments/{env}.yaml", "  version: 1\n", f"  version: {version}\n")
    pull.edit(f"environments/{env}.yaml", "  digest: sha256:" + "0" * 64,
              "  digest: sha256:" + f"{version:064x}")


def test_registry_location_in_the_pull_request_is_ignored_and_gets_no_token(pull, attacker, monkeypatch, capsys,
                                                                             tmp_path):
    """Reproduction: the PR's registry.tracking_uri won over $MLFLOW_TRACKING_URI, and the
    workflow's MLFLOW_TRACKING_TOKEN went to the host the PR named."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    propose(pull)
    pull.edit("environments/prod.yaml", "\nserving:", f"\nregistry:\n  tracking_uri: {attacker.url}\n\nserving:")
    pull.commit("promote prod to v2")

    code = gate(pull.root, "prod", "--base", "main", "--only", "promotion_path", "--json")

    out = json.loads(capsys.readouterr().out)
    assert attacker.requests == [], "the pull request's host was contacted"
    assert code == 1
    # the champion comes from the base: the workflow's registry (empty) and then the base file
    assert out["challenger"] == 2 and out["champion"] == 1
    assert out["champion_source"].startswith("environments/prod.yaml on main (")
    governance = next(g for g in out["gates"] if g["gate"] == "governance")
    assert "environments/prod.yaml registry" in governance["checks"][0]["message"]
    assert "split it" in governance["checks"][0]["message"]


def test_a_file_registry_never_receives_the_workflow_token(repo, attacker, monkeypatch, capsys):
    """Without $MLFLOW_TRACKING_URI the file's registry is used, but the token does not go there."""
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    path = repo / "environments" / "prod.yaml"
    path.write_text(path.read_text().replace("\nserving:", f"\nregistry:\n  tracking_uri: {attacker.url}\n\nserving:"))

    code = gate(repo, "prod", "--only", "promotion_path", "--json")

    out = json.loads(capsys.readouterr().out)
    assert attacker.requests == []
    assert code == 1
    assert "refusing to send $MLFLOW_TRACKING_TOKEN there" in out["champion_source"]
    assert "belongs to $MLFLOW_TRACKING_URI, which is unset" in out["champion_source"]


def test_records_and_trust_file_of_the_pull_request_do_not_count(pull, monkeypatch, capsys):
    """Reproduction: a PR that writes its own staging record (signed by a key it adds to
    trust.yaml) satisfied prod's promotion path."""
    from promotion.records import write_record

    for name in ("PROMOTION_SIGNING_KEY", "PROMOTION_SIGNER"):
        monkeypatch.delenv(name, raising=False)
    write_record(pull.root, "staging", action="promote", model="fraud-detector", version=2,
                 digest="sha256:" + f"{2:064x}", from_env="dev", to_env="staging", checks=[], approvers=[],
                 steps=[], rollback_target=None, data_snapshot=None, code_commit=None, policy_digest=None,
                 source_commit=None)
    propose(pull)
    pull.commit("promote prod to v2, with a staging record")
    assert (pull.root / "environments" / "trust.yaml").is_file()

    code = gate(pull.root, "prod", "--base", "main", "--only", "promotion_path", "--json")

    out = json.loads(capsys.readouterr().out)
    assert code == 1
    path = next(g for g in out["gates"] if g["gate"] == "promotion_path")
    assert path["verdict"] == "BLOCK"
    assert "v2 has no verified promotion record in staging" in path["checks"][0]["message"]
    split = next(g for g in out["gates"] if g["gate"] == "governance")["checks"][0]["message"]
    assert "environments/trust.yaml (added)" in split and "environments/records/staging/" in split


def test_the_trusted_view_takes_only_the_model_from_the_pull_request(pull):
    from promotion.trusted import trusted_view

    pull.write("data/window.csv", "amount\n1\n")
    pull.edit("environments/prod.yaml", "\nmetrics:", "\ndrift:\n  production_window: data/window.csv\n\nmetrics:")
    pull.commit("a production window on main")
    main_sha = pull.head
    git(pull.root, "branch", "-f", "main", main_sha)
    propose(pull, version=5)
    pull.edit("environments/prod.yaml", "endpoint: http://127.0.0.1:3000", "endpoint: https://collector.example")
    pull.edit("environments/prod.yaml", "admin_token_env: PROMOTION_ADMIN_TOKEN", "admin_token_env: PROMOTION_X_ADMIN")
    pull.edit("environments/prod.yaml", "production_window: data/window.csv", "production_window: data/mine.csv")
    pull.edit("policies/prod.yaml", "required: 2\n    codeowners", "required: 0\n    codeowners")
    pull.write("data/window.csv", "amount\n999\n")
    pull.write("data/mine.csv", "amount\n7\n")
    pull.commit("promote, and bring my own endpoint, window and policy")

    with trusted_view(pull.root, "prod", base="main") as view:
        env, policy = view.env, view.project.policy_for(view.env)
        assert (env.model.version, env.model.digest) == (5, "sha256:" + f"{5:064x}")
        assert env.endpoint == "http://127.0.0.1:3000" and env.admin_token_env == "PROMOTION_ADMIN_TOKEN"
        assert env.production_window == "data/window.csv"
        assert (view.project.root / env.production_window).read_text() == "amount\n1\n"
        assert policy.gates["approvals"]["required"] == 2
        assert view.base == main_sha
        fields = {str(c) for c in view.changes.governance}
        assert {"environments/prod.yaml serving.endpoint", "environments/prod.yaml serving.admin_token_env",
                "environments/prod.yaml drift.production_window", "policies/prod.yaml (modified)",
                "data/window.csv (modified)", "data/mine.csv (added)"} == fields
        assert view.changes.promotions == ("prod",)
        tree = view.project.root
    assert not tree.exists(), "the base checkout is removed afterwards"


def test_a_pull_request_cannot_plant_local_state(pull, monkeypatch, capsys):
    monkeypatch.delenv("PROMOTION_STATE")
    propose(pull)
    pull.write(".promotion/approvals/prod-v2.json", json.dumps({"approvals": [{"by": "mallory"}]}))
    pull.root.joinpath(".gitignore").write_text("")
    pull.commit("promote, with approvals")

    code = gate(pull.root, "prod", "--base", "main", "--only", "approvals")

    err = capsys.readouterr().err
    assert code == 1
    assert "commits files in the local state folder .promotion/" in err


def test_in_a_pull_request_the_base_comes_from_the_event(pull, monkeypatch, capsys, tmp_path):
    propose(pull)
    pull.edit("policies/prod.yaml", "required: 2\n    codeowners", "required: 0\n    codeowners")
    head = pull.commit("promote prod, approvals off")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 7, "base": {"sha": pull.base, "ref": "main"},
                                                  "head": {"sha": head}}}))
    monkeypatch.setenv("GITHUB_EVENT_NAME", "pull_request")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(event))

    code = gate(pull.root, "prod", "--only", "approvals", "--json", "--local-approvals")

    out = json.loads(capsys.readouterr().out)
    assert code == 1
    approvals = next(g for g in out["gates"] if g["gate"] == "approvals")["checks"][0]
    assert approvals["threshold"] == ">= 2", "judged with the base policy"


def test_a_new_environment_is_not_judged_by_its_own_file(pull, capsys):
    env_name = "qa"
    text = (pull.root / "environments" / "dev.yaml").read_text().replace("environment: dev", f"environment: {env_name}")
    pull.write(f"environments/{env_name}.yaml", text)
    pull.commit("a new environment")

    code = gate(pull.root, env_name, "--base", "main")

    assert code == 1
    assert f"environments/{env_name}.yaml does not exist on the base commit" in capsys.readouterr().err
