"""A pull request that switches an environment to another registered model (a new
``model.name``): a governance change, judged against the model that runs (real git, the
embedded MLflow store)."""

from __future__ import annotations

import json

from promotion.cli import main

METRICS = {"recall": 0.96, "fpr": 0.01, "latency_p95_ms": 20.0}


def _register(name: str, f1: float, auc: float) -> int:
    """One version of ``name`` in the embedded store, with holdout metrics on its run."""
    from promotion.registry import EXPERIMENT, Registry

    client = Registry.for_root(".").client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    run = client.create_run(experiment_id)
    for key, value in {**METRICS, "f1": f1, "auc": auc}.items():
        client.log_metric(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    return int(client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version)


def _switch(pull, name: str, version: int) -> None:
    pull.edit("environments/prod.yaml", "  name: fraud-detector\n", f"  name: {name}\n")
    pull.edit("environments/prod.yaml", "  version: 1\n", f"  version: {version}\n")
    pull.edit("environments/prod.yaml", "  digest: sha256:" + "0" * 64, "  digest: sha256:" + f"{version:064x}")
    pull.commit(f"prod: {name} v{version}")


def test_a_model_switch_is_a_governance_change_not_a_promotion(pull, capsys):
    """Reproduction: model.name counted as a model field, so a PR switching prod to another
    registered model changed "no governance" and needed no governance owner."""
    from promotion.governance import detect

    _switch(pull, "weak-model", 2)

    changes = detect(pull.root, "main")
    assert changes.promotions == ()
    assert [str(c) for c in changes.governance] == [
        "environments/prod.yaml model.name (model switch)",
        "environments/prod.yaml model.version (model switch)",
        "environments/prod.yaml model.digest (model switch)"]
    assert changes.governance[0].line == 8

    assert main(["--root", str(pull.root), "gate", "--governance", "--base", "main"]) == 1
    out = capsys.readouterr().out
    assert "changed: environments/prod.yaml model.name (model switch)" in out
    assert "3 governance change(s): BLOCKED" in out


def test_a_new_version_of_the_same_model_is_still_a_promotion(pull):
    from promotion.governance import detect

    pull.edit("environments/prod.yaml", "  version: 1\n", "  version: 2\n")
    pull.commit("prod v2")

    changes = detect(pull.root, "main")
    assert changes.promotions == ("prod",) and changes.governance == ()


def test_the_champion_of_a_switch_is_the_model_that_runs(pull, capsys):
    """Reproduction: the champion was looked up under the proposal's new name, found none,
    and every check relative to the champion passed as "no champion"."""
    from promotion.registry import Registry

    assert _register("fraud-detector", f1=0.90, auc=0.97) == 1
    _register("weak-model", f1=0.40, auc=0.60)
    weak = _register("weak-model", f1=0.40, auc=0.60)
    reg = Registry.for_root(".")
    reg.set_alias("weak-model", "prod", 1)       # a stale alias of the proposed model: not what runs
    reg.set_alias("fraud-detector", "prod", 1)   # what prod serves
    _switch(pull, "weak-model", weak)

    code = main(["--root", str(pull.root), "gate", "prod", "--base", "main", "--only", "metrics", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert (out["model"], out["challenger"], out["champion"]) == ("weak-model", weak, 1)
    assert out["champion_source"] == ("registry alias 'prod' (of fraud-detector, the model prod serves now; "
                                      "the proposal switches it to weak-model)")
    checks = {c["name"]: c for g in out["gates"] for c in g["checks"]}
    f1 = checks["metrics.f1 vs champion"]
    assert f1["verdict"] == "BLOCK" and f1["message"].startswith(f"f1: v{weak} 0.4 vs v1 0.9")
    assert checks["metrics.auc vs champion"]["verdict"] == "BLOCK"
    assert any("model switch: prod serves fraud-detector v1; the challenger is weak-model" in n for n in out["notes"])
    assert "model.name (model switch)" in checks["governance"]["message"]


def test_without_an_alias_the_champion_is_the_base_files_version_of_its_model(pull, capsys):
    _register("fraud-detector", f1=0.90, auc=0.97)
    _register("weak-model", f1=0.40, auc=0.60)
    _switch(pull, "weak-model", _register("weak-model", f1=0.40, auc=0.60))

    main(["--root", str(pull.root), "gate", "prod", "--base", "main", "--only", "metrics", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert out["champion"] == 1
    assert out["champion_source"].startswith("environments/prod.yaml on main (")
    assert out["champion_source"].endswith("(of fraud-detector, the model prod serves now; the proposal switches it "
                                           "to weak-model)")
