"""A pull request that switches prod to another model whose proposed version has the same
number as the version that runs (both are v1): the checks against the champion must still
compare the two models (real git, the embedded MLflow store)."""

from __future__ import annotations

import json

from promotion.cli import main
from tests.unit.governance.test_model_switch import _register

def test_a_switch_to_a_version_of_the_same_number_is_compared_with_the_model_that_runs(pull, capsys):
    """Reproduction: the metrics gate took "champion v1, challenger v1" for "already the
    champion" and passed every relative check, though v1 of another model runs."""
    from promotion.registry import Registry

    assert _register("fraud-detector", f1=0.90, auc=0.97) == 1
    assert _register("weak-model", f1=0.40, auc=0.60) == 1
    Registry.for_root(".").set_alias("fraud-detector", "prod", 1)
    pull.edit("environments/prod.yaml", "  name: fraud-detector\n", "  name: weak-model\n")
    pull.commit("prod: weak-model v1")

    code = main(["--root", str(pull.root), "gate", "prod", "--base", "main", "--only", "metrics", "--json"])

    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert (out["model"], out["challenger"], out["champion"]) == ("weak-model", 1, 1)
    checks = {c["name"]: c for g in out["gates"] for c in g["checks"]}
    f1 = checks["metrics.f1 vs champion"]
    assert f1["verdict"] == "BLOCK" and f1["message"].startswith("f1: v1 0.4 vs v1 0.9"), f1
    assert checks["metrics.auc vs champion"]["verdict"] == "BLOCK"
