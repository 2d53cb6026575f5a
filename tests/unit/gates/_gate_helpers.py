"""Gate tests on a real MLflow sqlite registry: log a version, propose it in prod, run the gate.

The registry is the embedded one of the ``repo`` fixture (under ``$PROMOTION_STATE``), which
is the one ``promotion gate`` opens.
"""

from __future__ import annotations

import importlib
import json
import re
import tempfile
from pathlib import Path

from promotion import cli

NAME = "fraud-detector"  # the model the shipped environment files name


def registry(repo: Path):
    from promotion.registry import Registry

    return Registry(root=repo)


def log_version(reg, model, *, metrics: dict | None = None, reference=None, example=None, flavor: str = "sklearn",
                pip_requirements: list[str] | None = None, name: str = NAME, **log_kwargs) -> tuple[int, str]:
    """Log and register ``model`` with its metrics and reference sample; (version, artifact digest)."""
    import mlflow
    from mlflow.models import infer_signature

    from promotion.registry import EXPERIMENT

    mlflow.set_tracking_uri(reg.uri)
    mlflow.set_registry_uri(reg.uri)
    exp = mlflow.get_experiment_by_name(EXPERIMENT)
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(EXPERIMENT, artifact_location=reg.artifact_root)
    signature = None
    if example is not None:
        out = model.predict(example) if flavor != "pyfunc" else None  # a PythonModel is not called here
        signature = infer_signature(example, out)
    with mlflow.start_run(experiment_id=exp_id):
        if metrics:
            mlflow.log_metrics(metrics)
        if reference is not None:
            with tempfile.TemporaryDirectory() as tmp:
                reference.to_parquet(Path(tmp) / "reference.parquet", index=False)
                mlflow.log_artifact(str(Path(tmp) / "reference.parquet"), artifact_path="reference")
        log = importlib.import_module(f"mlflow.{flavor}").log_model
        args, given = ((), {"python_model": model}) if flavor == "pyfunc" else ((model,), {})
        info = log(*args, **given, name="model", signature=signature, registered_model_name=name,
                   pip_requirements=pip_requirements or ["scikit-learn"], **log_kwargs)
    version = int(info.registered_model_version)
    if reference is not None:
        reg.set_tag(name, version, "reference_sample", "reference/reference.parquet")
    digest = reg.artifact_digest(name, version)
    reg.set_tag(name, version, "artifact_digest", digest)
    return version, digest


def write_policy(repo: Path, gates: str) -> Path:
    """policies/prod.yaml with the given ``gates:`` body (indented YAML) and nothing else to judge."""
    path = repo / "policies" / "prod.yaml"
    path.write_text("apiVersion: promotion/v1\nenvironment: prod\ngates:\n" + gates.rstrip() + "\n"
                    "rollout: {strategy: blue_green}\nslo: {}\n")
    return path


def propose(repo: Path, version: int, digest: str, window: str | None = None) -> None:
    """environments/prod.yaml names ``version`` (and ``window`` as its production window)."""
    path = repo / "environments" / "prod.yaml"
    text = re.sub(r"version: \d+", f"version: {version}", path.read_text(), count=1)
    text = re.sub(r"digest: sha256:[0-9a-f]{64}", f"digest: {digest}", text, count=1)
    if window and "production_window" not in text:
        text += f"\ndrift:\n  production_window: {window}\n"
    path.write_text(text)


def gate(repo: Path, capsys, *only: str) -> tuple[int, dict]:
    """``promotion gate prod --json [--only ...]``: (exit code, the JSON verdict)."""
    args = ["--root", str(repo), "gate", "prod", "--json"]
    for name in only:
        args += ["--only", name]
    code = cli.main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, (json.loads(out) if out.strip() else {"err": err})


def checks(doc: dict) -> dict[str, dict]:
    """check name -> check, over every gate of a verdict."""
    return {c["name"]: c for g in doc["gates"] for c in g["checks"]}
