"""The example regression model: registered with ``promotion.register``, judged on RMSE and
MAE against its champion by its own policy (services/examples/house_prices/)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from promotion import cli
from tests.unit.adoption.conftest import git, set_env

EXAMPLE = Path(__file__).resolve().parents[3] / "services" / "examples" / "house_prices"


@pytest.fixture
def example(tmp_path, monkeypatch, mlflow_template):
    """The example's environments/ and policies/ as a repository of their own, with a registry."""
    from promotion.registry import Registry

    root = tmp_path / "house-prices"
    for part in ("environments", "policies"):
        shutil.copytree(EXAMPLE / part, root / part)
    state = tmp_path / "state"
    state.mkdir()
    shutil.copy(mlflow_template / "mlflow.db", state / "mlflow.db")
    monkeypatch.setenv("PROMOTION_STATE", str(state))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "example")
    return root, Registry(None, root)


def _gate(root: Path, capsys) -> tuple[int, dict]:
    capsys.readouterr()
    rc = cli.main(["--root", str(root), "gate", "prod", "--json"])
    report = json.loads(capsys.readouterr().out)
    return rc, {c["name"]: c for g in report["gates"] for c in g["checks"]}


def test_challenger_is_judged_on_rmse_and_mae_relative_to_the_champion(example, code_repo, capsys):
    from services.examples.house_prices import train

    root, registry = example
    versions = {key: train.register(train.SPECS[key], registry=registry, code_dir=code_repo, latency_reps=20)
                for key in ("v1", "v2", "v3")}
    v1, v2, v3 = versions["v1"], versions["v2"], versions["v3"]
    assert v2.metrics["rmse"] < v1.metrics["rmse"] and v2.metrics["mae"] < v1.metrics["mae"]
    assert v3.metrics["rmse"] > v1.metrics["rmse"] and v3.metrics["r2"] >= 0.5  # worse, yet above the floor
    assert "mae_neighbourhood_centre" in v1.metrics and v1.tags["task"] == "regression"

    registry.set_alias("house-prices", "prod", v1.version)  # v1 is the champion
    set_env(root, "prod", v2.version, v2.digest)
    rc, checks = _gate(root, capsys)
    assert rc == 0, {k: c["message"] for k, c in checks.items() if c["verdict"] != "PASS"}
    assert checks["metrics.rmse vs champion"]["verdict"] == "PASS"
    assert checks["metrics.mae vs champion"]["verdict"] == "PASS"
    assert "recall" not in json.dumps(checks)  # a regression policy checks nothing of classification

    set_env(root, "prod", v3.version, v3.digest)
    rc, checks = _gate(root, capsys)
    assert rc == 1
    for metric in ("rmse", "mae"):
        check = checks[f"metrics.{metric} vs champion"]
        assert check["verdict"] == "BLOCK" and "must be <= " in check["message"] and "x v1)" in check["message"]
    assert checks["metrics.r2"]["verdict"] == "PASS"


def test_the_example_is_not_part_of_the_product():
    package = Path(__file__).resolve().parents[3] / "promotion"
    users = [p for p in package.rglob("*.py") if "services.examples" in p.read_text()]
    assert users == []
